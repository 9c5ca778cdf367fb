"""The API Gateway management API (``@connections``) of the WebSocket API: the one place its client is made
and its errors are read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

_THROTTLED = {"LimitExceededException", "TooManyRequestsException", "ThrottlingException"}


def connections_api(deps: Dependencies) -> Any:
    """The management API client of this deployment's WebSocket stage (WEBSOCKET_ENDPOINT)."""
    return deps.aws.websocket(deps.settings.require_websocket_endpoint())


def is_gone(exc: ClientError) -> bool:
    """True if a management API call failed because the connection is closed (410 ``GoneException``)."""
    error: dict[str, Any] = exc.response.get("Error", {})
    metadata: dict[str, Any] = exc.response.get("ResponseMetadata", {})
    return error.get("Code") == "GoneException" or metadata.get("HTTPStatusCode") == 410


def is_throttled(exc: ClientError) -> bool:
    """True if the call was throttled (429): worth retrying shortly."""
    error: dict[str, Any] = exc.response.get("Error", {})
    metadata: dict[str, Any] = exc.response.get("ResponseMetadata", {})
    return error.get("Code") in _THROTTLED or metadata.get("HTTPStatusCode") == 429
