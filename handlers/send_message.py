"""SendMessageFunction: the send-message queue (FIFO, one group per conversation).

Messages of encrypted conversations are sealed inline: the handle builds a :class:`KeyRing` from the
invocation's dependencies the runner hands it (cheap; no KMS client until a conversation needs one)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from sqlalchemy.orm import Session

from shared.bootstrap import Dependencies
from shared.jobs import INDEXING, NOTIFICATION, SEND_MESSAGE, Job, SendMessageData
from shared.observability import logger, metrics, tracer
from shared.runtime import JobConsumer, run
from shared.runtime.effects import Effect
from shared.services.crypto.keys import KeyRing
from shared.services.messages import EFFECT_KINDS, record_dead_letter, send_message


def handle(job: Job[SendMessageData], session: Session, deps: Dependencies) -> list[Effect]:
    return send_message(job, session, KeyRing.of(deps))


consumer = JobConsumer(
    SEND_MESSAGE,
    handle,
    effects=EFFECT_KINDS,
    on_dead_letter=record_dead_letter,
    settings=("WEBSOCKET_ENDPOINT", INDEXING.queue_url_variable, NOTIFICATION.queue_url_variable),
)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(event, context, consumer)
