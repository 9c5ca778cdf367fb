"""SendMessageFunction: the send-message queue (FIFO, one group per conversation)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.jobs import INDEXING, NOTIFICATION, SEND_MESSAGE
from shared.observability import logger, metrics, tracer
from shared.runtime import JobConsumer, run
from shared.services.messages import EFFECT_KINDS, record_dead_letter, send_message

consumer = JobConsumer(
    SEND_MESSAGE,
    send_message,
    effects=EFFECT_KINDS,
    on_dead_letter=record_dead_letter,
    settings=("WEBSOCKET_ENDPOINT", INDEXING.queue_url_variable, NOTIFICATION.queue_url_variable),
)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(event, context, consumer)
