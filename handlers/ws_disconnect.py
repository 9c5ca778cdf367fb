"""WebSocketDisconnectFunction: the ``$disconnect`` route. Forgets the connection; a connection already
forgotten (swept, or removed after a 410 Gone) is fine. API Gateway runs this on a best-effort basis only:
the sweeper and the broadcast service's 410 handling remove what it misses."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.bootstrap import dependencies
from shared.observability import logger, metrics, tracer
from shared.services.connections.service import close_connection


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    removed = close_connection(dependencies(), event["requestContext"]["connectionId"])
    metrics.add_metric(name="ConnectionsClosed", unit=MetricUnit.Count, value=1 if removed else 0)
    return {"statusCode": 200}
