"""ManagementFunction: the management API behind an HTTP API with IAM auth (docs/contracts.md §8), and the
continuations of selective redrives (the function invokes itself asynchronously; see
shared/services/management/redrive.py). The routes are in shared/services/management/api.py."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.bootstrap import dependencies
from shared.observability import logger, metrics, tracer
from shared.services.management.api import app
from shared.services.management.redrive import CONTINUATION_KEY, continue_redrive


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if CONTINUATION_KEY in event:
        return continue_redrive(dependencies(), event, context)
    return app.resolve(event, context)
