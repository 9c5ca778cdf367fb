"""WebSocketSearchFunction: the ``search`` route, message search for a connected client (see
shared/services/search/client.py). Always answers 200 so API Gateway keeps the connection open; the answer, or
an error frame, is posted to the asking connection only. Encrypted conversations are searched through their
blind index, their keys unwrapped by ``kms:Decrypt`` (cached per container). The query is never logged."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.bootstrap import dependencies
from shared.observability import logger, metrics, tracer
from shared.services.connections.client_frames import frame_bytes
from shared.services.search.client import handle_search_frame


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies()
    deps.settings.require("WEBSOCKET_ENDPOINT")
    outcome = handle_search_frame(deps, event["requestContext"]["connectionId"], frame_bytes(event))
    if outcome.error:
        logger.info("search refused", extra={"code": outcome.error})
    metrics.add_metric(name="SearchRefused" if outcome.error else "Searches", unit=MetricUnit.Count, value=1)
    return {"statusCode": 200}
