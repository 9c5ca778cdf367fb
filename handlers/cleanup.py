"""CleanupFunction: the cleanup queue (retention, purges, expired attachments, housekeeping; resumable)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.jobs import CLEANUP
from shared.observability import logger, metrics, tracer
from shared.runtime import JobConsumer, run
from shared.services.cleanup import EFFECT_KINDS, cleanup

consumer = JobConsumer(CLEANUP, cleanup, effects=EFFECT_KINDS, settings=(CLEANUP.queue_url_variable,))


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(event, context, consumer)
