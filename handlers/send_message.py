"""SendMessageFunction: the send-message queue (FIFO, one group per conversation)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.jobs import JobType
from shared.observability import logger, metrics, tracer
from shared.runtime import run
from shared.services.messages import record_dead_letter, send_message


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(
        event, context, job_type=JobType.SEND_MESSAGE, handle=send_message, on_dead_letter=record_dead_letter
    )
