"""WebSocketDefaultFunction: the ``$default`` route, every client frame (``ack``, ``ping``; see
shared/services/client_frames.py). Always answers 200 so API Gateway keeps the connection open; a client
mistake gets an error frame instead. ``requestContext.authorizer`` is not present on message routes: the
user comes from the connection's row."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.bootstrap import dependencies
from shared.jobs import DELIVERY_CONFIRMATION
from shared.observability import logger, metrics, tracer
from shared.services.connections.client_frames import frame_bytes, handle_client_frame


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = event["requestContext"]
    deps = dependencies()
    deps.settings.require("WEBSOCKET_ENDPOINT", DELIVERY_CONFIRMATION.queue_url_variable)
    outcome = handle_client_frame(
        deps, request["connectionId"], frame_bytes(event), correlation_id=request.get("requestId")
    )
    if outcome.error:
        logger.info("client frame refused", extra={"action": outcome.action, "code": outcome.error})
    metric = "ClientFramesRefused" if outcome.error else f"ClientFrames{(outcome.action or '').title()}"
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    return {"statusCode": 200}
