"""NotificationFunction: the notification queue (push, email, SMS and in-app for one user per job)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.jobs import JobType
from shared.observability import logger, metrics, tracer
from shared.runtime import run
from shared.services.notifications import notify


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(event, context, job_type=JobType.NOTIFICATION, handle=notify)
