"""WebSocketConnectFunction: the ``$connect`` route. Registers the connection for the user the authorizer
verified (``requestContext.authorizer.user_id``); an unknown or deleted user, or a missing user id, is
refused with 403 and API Gateway does not open the connection. The event holds the token in its query
string: it is never logged."""

import uuid
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.bootstrap import dependencies
from shared.errors import UnknownEntity
from shared.observability import logger, metrics, tracer
from shared.services.connections.service import open_connection


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = event["requestContext"]
    user_id = _user_id(request.get("authorizer"))
    if user_id is None:
        return _refused("no-user-from-authorizer")
    try:
        open_connection(dependencies(), request["connectionId"], user_id)
    except UnknownEntity:
        return _refused("unknown-or-deleted-user")
    metrics.add_metric(name="ConnectionsOpened", unit=MetricUnit.Count, value=1)
    return {"statusCode": 200}


def _refused(reason: str) -> dict[str, Any]:
    logger.info("connection refused", extra={"reason": reason})
    metrics.add_metric(name="ConnectionsRefused", unit=MetricUnit.Count, value=1)
    return {"statusCode": 403}


def _user_id(authorizer: Any) -> uuid.UUID | None:
    """The ``user_id`` the authorizer put in its context, if it is a UUID."""
    value = authorizer.get("user_id") if isinstance(authorizer, dict) else None
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None
