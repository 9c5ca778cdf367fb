"""ScheduledCleanupFunction: EventBridge Scheduler's daily call; sends the cleanup job (task all)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.bootstrap import dependencies
from shared.observability import logger, tracer
from shared.services.cleanup.service import send_scheduled_job


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scheduled_time = event.get("scheduled_time") if isinstance(event, dict) else None
    job = send_scheduled_job(dependencies(), scheduled_time)
    return {"job_id": str(job.job_id)}
