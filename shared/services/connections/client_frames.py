"""Client -> server WebSocket frames (docs/contracts.md §6): what a connected client may send, and its answer.

- ``{"action": "ack", "status": "delivered"|"read", "message_ids": [...]}`` (or ``"read_up_to": id``
  instead of ``message_ids``) becomes a ``delivery-confirmation`` job for the connection's user, validated
  by the job model before it is sent; nothing is posted back on success.
- ``{"action": "ping"}`` is answered with ``{"type": "pong"}``.
- Anything else is answered with ``{"type": "error", "code": ..., "message": ...}`` and the connection stays
  open. Codes: ``unknown-connection`` (not registered: reconnect), ``frame-too-large``, ``invalid-json``,
  ``unknown-action``, ``invalid-ack``, ``unavailable`` (the ack could not be queued: send it again).

Every frame marks its connection as seen (the same statement that finds the connection's user).
Error messages never echo what the client sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from shared.errors import DependencyThrottled, UnknownConnection
from shared.jobs import DELIVERY_CONFIRMATION, DeliveryConfirmationData, describe_validation_error
from shared.observability import logger
from shared.runtime.runner import describe_failure
from shared.services.connections.broadcast import encode_frame
from shared.services.connections.gateway import connections_api, is_gone
from shared.services.connections.repository import remove_connection, touch_connection
from shared.services.queues import send_jobs

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

ACK_FIELDS = frozenset({"action", "status", "message_ids", "read_up_to"})


@dataclass(frozen=True)
class FrameOutcome:
    """What became of one client frame: ``action`` as understood (``ack``, ``ping``, or None) and the error
    code sent back, if any. ``job_id`` is the delivery-confirmation job an ack became."""

    action: str | None
    error: str | None = None
    job_id: uuid.UUID | None = None


@dataclass(frozen=True)
class ReceivedFrame:
    """A client frame that passed the checks every action shares: from a registered connection (its user),
    within the size limit, a JSON object."""

    user_id: uuid.UUID
    frame: dict[str, Any]
    at: datetime


def receive_frame(
    deps: Dependencies, connection_id: str, body: bytes | None, *, action: str | None
) -> ReceivedFrame | FrameOutcome:
    """Mark the connection seen and check the frame; a frame that fails is answered with an error frame
    (``unknown-connection``, ``frame-too-large``, ``invalid-json``) and its outcome returned instead."""
    now = datetime.now(UTC)
    with deps.unit_of_work() as uow:
        try:
            user_id = touch_connection(uow.session, connection_id, now=now)
        except UnknownConnection:
            user_id = None
        uow.commit()
    if user_id is None:
        message = "this connection is not registered: reconnect"
        return refuse(deps, connection_id, action, "unknown-connection", message)
    limit = deps.settings.websocket_max_frame_bytes
    if body is not None and len(body) > limit:
        return refuse(deps, connection_id, action, "frame-too-large", f"frames are limited to {limit} bytes")
    frame = parse_frame(body)
    if frame is None:
        return refuse(deps, connection_id, action, "invalid-json", "a frame must be a JSON object")
    return ReceivedFrame(user_id, frame, now)


def handle_client_frame(
    deps: Dependencies, connection_id: str, body: bytes | None, *, correlation_id: str | None = None
) -> FrameOutcome:
    """Act on one frame from ``connection_id`` (``body`` as received; None when it could not be decoded).

    Raises only for infrastructure failures (database unavailable, the management API failing other than
    410 Gone); every client mistake is answered with an error frame."""
    received = receive_frame(deps, connection_id, body, action=None)
    if isinstance(received, FrameOutcome):
        return received
    frame, user_id, now = received.frame, received.user_id, received.at
    action = frame.get("action")
    if action == "ping":
        reply(deps, connection_id, {"type": "pong"})
        return FrameOutcome("ping")
    if action == "ack":
        return _acknowledge(deps, connection_id, user_id, frame, now, correlation_id)
    return refuse(deps, connection_id, None, "unknown-action", "action must be one of: ack, ping")


def frame_bytes(event: dict[str, Any]) -> bytes | None:
    """The bytes of an API Gateway WebSocket event's frame (binary frames arrive base64-encoded); None if they
    cannot be decoded."""
    raw = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return str(raw).encode("utf-8")
    try:
        return base64.b64decode(raw)
    except binascii.Error:
        return None


def parse_frame(body: bytes | None) -> dict[str, Any] | None:
    """The frame as a JSON object; None if it is not one (or could not be decoded)."""
    if body is None:
        return None
    try:
        frame = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return frame if isinstance(frame, dict) else None


def _acknowledge(
    deps: Dependencies,
    connection_id: str,
    user_id: uuid.UUID,
    frame: dict[str, Any],
    now: datetime,
    correlation_id: str | None,
) -> FrameOutcome:
    unexpected = sorted(str(key) for key in set(frame) - ACK_FIELDS)
    if unexpected:
        message = f"unexpected field(s): {', '.join(unexpected)[:200]}"
        return refuse(deps, connection_id, "ack", "invalid-ack", message)
    fields = {key: value for key, value in frame.items() if key != "action"}
    fields |= {"recipient_id": user_id, "confirmed_at": now}  # set by the server, never by the client
    try:
        data = DeliveryConfirmationData.model_validate(fields)
    except ValidationError as exc:
        return refuse(deps, connection_id, "ack", "invalid-ack", describe_validation_error(exc))
    job = DELIVERY_CONFIRMATION.new(data, correlation_id=correlation_id)
    try:
        sqs, queue_url = deps.aws.sqs(), deps.settings.queue_url(DELIVERY_CONFIRMATION)
        send_jobs(sqs, queue_url, DELIVERY_CONFIRMATION, [job])
    except DependencyThrottled as exc:
        logger.error("ack could not be queued", extra={"job_id": str(job.job_id), **describe_failure(exc)})
        return refuse(deps, connection_id, "ack", "unavailable", "the ack could not be queued: send it again")
    return FrameOutcome("ack", job_id=job.job_id)


def refuse(
    deps: Dependencies,
    connection_id: str,
    action: str | None,
    code: str,
    message: str,
    *,
    request_id: str | None = None,
) -> FrameOutcome:
    """Answer a frame with an ``error`` frame (carrying ``request_id`` when the request had one)."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame["request_id"] = request_id
    reply(deps, connection_id, frame)
    return FrameOutcome(action, error=code)


def reply(deps: Dependencies, connection_id: str, frame: dict[str, Any]) -> bool:
    """Post ``frame`` to ``connection_id``; False (and the connection forgotten) if it answered 410 Gone."""
    try:
        connections_api(deps).post_to_connection(ConnectionId=connection_id, Data=encode_frame(frame))
    except ClientError as exc:
        if not is_gone(exc):
            raise
        with deps.unit_of_work() as uow:
            remove_connection(uow.session, connection_id)
            uow.commit()
        logger.info("reply to a gone connection: removed it", extra={"frame_type": frame.get("type")})
        return False
    return True
