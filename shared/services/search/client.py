"""The WebSocket ``search`` action (docs/contracts.md §6), served by its own route and function.

``{"action": "search", "request_id", "query", "conversation_id"?, "before"?, "limit"?}`` is answered to the
asking connection only, with ``{"type": "search.results", "request_id", "results": [...], "next_before"}``
or an ``error`` frame carrying the request's ``request_id`` and a stable code: ``invalid-request`` (a field
is missing, unexpected or of the wrong type or range), ``invalid-query`` (empty, over
``MAX_QUERY_CHARS``, not storable text, or stop words only), ``invalid-cursor``, ``forbidden`` (a
``conversation_id`` the user is not an active participant of, or that does not exist: the two are not told
apart), ``unavailable`` (the search failed on our side: send it again), and the edge codes every action shares
(``unknown-connection``, ``frame-too-large``, ``invalid-json``). Messages never echo the request."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from shared.errors import SearchRefused
from shared.observability import logger
from shared.runtime.runner import describe_failure
from shared.services.connections.client_frames import FrameOutcome, receive_frame, refuse, reply
from shared.services.crypto.keys import KeyRing
from shared.services.search.engine import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    Cursor,
    PostgresSearchEngine,
    SearchEngine,
    SearchPage,
    SearchRequest,
)

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

SEARCH_FIELDS = frozenset({"action", "request_id", "query", "conversation_id", "before", "limit"})
MAX_REQUEST_ID_CHARS = 128
MAX_CURSOR_CHARS = 512


def handle_search_frame(
    deps: Dependencies, connection_id: str, body: bytes | None, engine: SearchEngine | None = None
) -> FrameOutcome:
    """Answer one ``search`` frame from ``connection_id``. Every refusal and failure is an error frame."""
    engine = engine or PostgresSearchEngine(KeyRing.of(deps))
    received = receive_frame(deps, connection_id, body, action="search")
    if isinstance(received, FrameOutcome):
        return received
    frame, user_id = received.frame, received.user_id
    request_id = frame.get("request_id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= MAX_REQUEST_ID_CHARS:
        message = f"request_id must be a string of 1 to {MAX_REQUEST_ID_CHARS} characters"
        return refuse(deps, connection_id, "search", "invalid-request", message)
    try:
        request = _request(user_id, frame)
        with deps.unit_of_work() as uow:
            page = engine.search(uow.session, request)
    except SearchRefused as refused:
        return refuse(deps, connection_id, "search", refused.code, refused.message, request_id=request_id)
    except Exception as exc:  # noqa: BLE001 - a client gets an answer, never silence or a 500
        logger.error("search failed", extra=describe_failure(exc))
        message = "the search failed: send it again"
        return refuse(deps, connection_id, "search", "unavailable", message, request_id=request_id)
    reply(deps, connection_id, results_frame(request_id, page))
    return FrameOutcome("search")


def _request(user_id: uuid.UUID, frame: dict[str, Any]) -> SearchRequest:
    if set(frame) - SEARCH_FIELDS:
        allowed = ", ".join(sorted(SEARCH_FIELDS))
        raise SearchRefused("invalid-request", f"unexpected field(s); allowed: {allowed}")
    return SearchRequest(
        user_id,
        _query(frame.get("query")),
        _conversation_id(frame.get("conversation_id")),
        _cursor(frame.get("before")),
        _limit(frame.get("limit")),
    )


def _query(value: Any) -> str:
    if not isinstance(value, str):
        raise SearchRefused("invalid-request", "query must be a string")
    query = value.strip()
    if not query:
        raise SearchRefused("invalid-query", "query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise SearchRefused("invalid-query", f"query is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in query or not _encodable(query):
        raise SearchRefused("invalid-query", "query is not text that can be searched")
    return query


def _conversation_id(value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return uuid.UUID(value)
    except ValueError:
        pass
    raise SearchRefused("invalid-request", "conversation_id must be a UUID")


def _cursor(value: Any) -> Cursor | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CURSOR_CHARS:
        raise SearchRefused("invalid-cursor", "before must be a next_before of a previous answer")
    return Cursor.decode(value)


def _limit(value: Any) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise SearchRefused("invalid-request", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate
        return False
    return True


def results_frame(request_id: str, page: SearchPage) -> dict[str, Any]:
    return {
        "type": "search.results",
        "request_id": request_id,
        "results": [
            {
                "message_id": str(hit.message_id),
                "conversation_id": str(hit.conversation_id),
                "sender_id": str(hit.sender_id),
                "seq": hit.seq,
                "created_at": hit.created_at.isoformat(),
                "snippet": hit.snippet,
            }
            for hit in page.hits
        ],
        "next_before": page.next_before.encode() if page.next_before else None,
    }
