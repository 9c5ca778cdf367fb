"""StaleConnectionSweeperFunction: every 15 minutes (EventBridge schedule), removes the ``ws_connections``
rows API Gateway has certainly closed (older than its 2 h maximum connection duration) and, if
CONNECTION_IDLE_SECONDS is set, idle ones, in bounded batches; returns the counts."""

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.bootstrap import dependencies
from shared.observability import logger, metrics, tracer
from shared.services.connections.service import sweep_stale_connections


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = sweep_stale_connections(dependencies(), time_left_ms=context.get_remaining_time_in_millis)
    metrics.add_metric(name="ConnectionsSwept", unit=MetricUnit.Count, value=result.expired + result.idle)
    logger.info("stale connections swept", extra=asdict(result))
    return asdict(result)
