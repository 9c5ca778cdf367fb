"""What moto's in-process API Gateway management API received: the one reader of the frames a function
posted, for the in-process demo and the tests."""

from __future__ import annotations

import json
from typing import Any

from infra.template import ACCOUNT_ID


def posted_frames(connection_id: str) -> list[dict[str, Any]]:
    """Frames moto's (in-process) API Gateway management API received for a connection, in order."""
    from urllib.parse import quote

    from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

    connections = apigatewaymanagementapi_backends[ACCOUNT_ID]["us-east-1"].connections
    # moto keeps the id as it appears in the URL: real ids end in "=", which arrives as "%3D"
    key = connection_id if connection_id in connections else quote(connection_id, safe="")
    data = connections[key].data.decode("utf-8")  # moto concatenates the posted frames
    decoder, frames, index = json.JSONDecoder(), [], 0
    while index < len(data):
        frame, index = decoder.raw_decode(data, index)
        frames.append(frame)
    return frames
