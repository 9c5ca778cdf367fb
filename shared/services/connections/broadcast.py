"""The one broadcast service (docs/contracts.md §6): frames to every live connection of a set of users.

Connections are looked up in one query; posts run concurrently on a bounded pool (each connection receives
its frames in order); a 410 Gone removes that connection without failing the broadcast; throttling is
retried by botocore's standard retry mode, and what still fails is raised as transient so the job's
pending effect is redone. Frames over API Gateway's 128 KB limit are reduced, never dropped."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.errors import DependencyThrottled
from shared.jobs import Job
from shared.observability import logger
from shared.runtime.effects import Effect
from shared.services.connections import repository
from shared.services.connections.gateway import connections_api, is_gone, is_throttled

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

MAX_FRAME_BYTES = 128 * 1024
THROTTLE_ATTEMPTS = 3
THROTTLE_BASE_SECONDS = 0.05
_SCALAR_LIMIT = 256
_GONE_MARK = object()


@dataclass
class BroadcastResult:
    reached_user_ids: set[uuid.UUID] = field(default_factory=set)
    posted: int = 0
    gone_connection_ids: list[str] = field(default_factory=list)


def broadcast(
    session: Session,
    api: Any,
    user_ids: Collection[uuid.UUID],
    frames: Sequence[dict[str, Any]],
    settings: Settings,
) -> BroadcastResult:
    """Post ``frames`` through the management ``api`` to every connection of ``user_ids``; delete the
    connections that answered 410 Gone."""
    result = BroadcastResult()
    if not user_ids or not frames:
        return result
    connections = repository.live_connections(session, user_ids)
    if not connections:
        return result
    payloads = [encode_frame(frame) for frame in frames]
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=min(settings.broadcast_concurrency, len(connections))) as pool:
        outcomes = pool.map(lambda c: _post_frames(api, c.connection_id, payloads), connections)
        for connection, outcome in zip(connections, outcomes, strict=True):
            if outcome is _GONE_MARK:
                result.gone_connection_ids.append(connection.connection_id)
            elif isinstance(outcome, BaseException):
                errors.append(outcome)
            else:
                result.reached_user_ids.add(connection.user_id)
                result.posted += len(payloads)
    if result.gone_connection_ids:
        repository.remove_connections(session, result.gone_connection_ids)
        logger.info("removed gone connections", extra={"count": len(result.gone_connection_ids)})
    if errors:
        raise DependencyThrottled(f"{len(errors)} connection(s) could not be posted to") from errors[0]
    return result


def _post_frames(api: Any, connection_id: str, payloads: list[bytes]) -> BaseException | object | None:
    """None when every frame was posted, ``_GONE_MARK`` on 410 Gone, else the error."""
    try:
        for payload in payloads:
            _post_with_retry(api, connection_id, payload)
    except ClientError as exc:
        if is_gone(exc):
            return _GONE_MARK
        failure: BaseException = exc
        return failure
    except BotoCoreError as exc:
        failure = exc
        return failure
    return None


def _post_with_retry(api: Any, connection_id: str, payload: bytes) -> None:
    """Post one frame; a throttled post (429) is retried with jittered backoff before giving up."""
    for attempt in range(THROTTLE_ATTEMPTS):
        try:
            api.post_to_connection(ConnectionId=connection_id, Data=payload)
            return
        except ClientError as exc:
            if not is_throttled(exc) or attempt == THROTTLE_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, THROTTLE_BASE_SECONDS * 2**attempt))


class Broadcast(Effect):
    """Post ``frames`` to every live connection of ``user_ids`` (after the job's commit)."""

    kind: Literal["broadcast"] = "broadcast"
    user_ids: list[uuid.UUID] = Field(min_length=1)
    frames: list[dict[str, Any]] = Field(min_length=1)

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        broadcast(session, connections_api(deps), self.user_ids, self.frames, deps.settings)
        return []


def encode_frame(frame: dict[str, Any]) -> bytes:
    """The frame as compact JSON, reduced to fit API Gateway's 128 KB frame limit if needed.

    A ``message`` frame keeps everything but a shortened ``content`` (``content_truncated: true``), so the
    client can fetch the full message by id; any other frame keeps its type and short scalar fields and
    gets ``truncated: true``."""
    payload = _dump(frame)
    if len(payload) <= MAX_FRAME_BYTES:
        return payload
    logger.warning(
        "frame reduced to fit the WebSocket limit", extra={"type": frame.get("type"), "bytes": len(payload)}
    )
    message = frame.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        reduced = _shorten_content(frame, message, len(payload) - MAX_FRAME_BYTES)
        if reduced is not None:
            return reduced
    minimal: dict[str, Any] = {
        k: v
        for k, v in frame.items()
        if isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) <= _SCALAR_LIMIT)
    }
    if isinstance(message, dict):
        minimal["message"] = {
            k: v for k, v in message.items() if k != "content" and len(_dump(v)) <= _SCALAR_LIMIT
        }
    minimal["truncated"] = True
    return _dump(minimal)


def _shorten_content(frame: dict[str, Any], message: dict[str, Any], excess: int) -> bytes | None:
    content: str = message["content"]
    keep = len(content)
    for _ in range(8):
        keep = max(0, keep - excess - 64)
        payload = _dump(
            {**frame, "message": {**message, "content": content[:keep], "content_truncated": True}}
        )
        if len(payload) <= MAX_FRAME_BYTES:
            return payload
        excess = len(payload) - MAX_FRAME_BYTES
    return None


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
