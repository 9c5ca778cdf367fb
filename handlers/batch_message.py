"""BatchMessageFunction: the batch-message queue (one chunk of a fan-out per job)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.jobs import BATCH_MESSAGE, SEND_MESSAGE
from shared.observability import logger, metrics, tracer
from shared.runtime import JobConsumer, run
from shared.services.batches import EFFECT_KINDS, batch_message

consumer = JobConsumer(
    BATCH_MESSAGE,
    batch_message,
    effects=EFFECT_KINDS,
    # ENCRYPTION_KEY_ARN: the batch's content is sealed at rest for retries of its failed recipients
    settings=(
        "WEBSOCKET_ENDPOINT",
        SEND_MESSAGE.queue_url_variable,
        BATCH_MESSAGE.queue_url_variable,
        "ENCRYPTION_KEY_ARN",
    ),
)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(event, context, consumer)
