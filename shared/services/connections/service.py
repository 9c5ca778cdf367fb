"""The connection use cases of the WebSocket API's ``$connect``, ``$disconnect`` and the sweeper: one unit of
work each, on the dependencies the handler passes in."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from shared.observability import logger
from shared.services.connections.gateway import connections_api, is_gone
from shared.services.connections.repository import (
    SWEEP_BATCH,
    remove_connection,
    store_connection,
    sweep_batch,
)

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies


def open_connection(deps: Dependencies, connection_id: str, user_id: uuid.UUID) -> None:
    """Register a new connection of ``user_id``; :class:`UnknownEntity` for an unknown or deleted user."""
    with deps.unit_of_work() as uow:
        store_connection(uow.session, connection_id, user_id, now=datetime.now(UTC))
        uow.commit()


def close_connection(deps: Dependencies, connection_id: str) -> bool:
    """Forget a closed connection; True if it was registered (idempotent)."""
    with deps.unit_of_work() as uow:
        removed = remove_connection(uow.session, connection_id)
        uow.commit()
    return removed


@dataclass
class SweepResult:
    expired: int = 0
    idle: int = 0
    closed: int = 0
    close_failed: int = 0
    batches: int = 0
    complete: bool = True


def sweep_stale_connections(
    deps: Dependencies, *, now: datetime | None = None, time_left_ms: Callable[[], int] | None = None
) -> SweepResult:
    """Delete the rows of connections API Gateway has closed (older than ``CONNECTION_MAX_AGE_SECONDS``)
    and, if ``CONNECTION_IDLE_SECONDS`` is set, of connections idle that long, in bounded batches.

    Each batch commits on its own; the sweep stops early (``complete=False``) when ``time_left_ms()`` drops
    under the deadline margin, and the next run continues. Idle connections are also closed at API Gateway
    (their row is gone, so they would receive nothing): the client reconnects and registers again."""
    settings = deps.settings
    now = now or datetime.now(UTC)
    connected_before = now - timedelta(seconds=settings.connection_max_age_seconds)
    idle_before = (
        now - timedelta(seconds=settings.connection_idle_seconds)
        if settings.connection_idle_seconds is not None
        else None
    )
    result = SweepResult()
    idle_ids: list[str] = []
    while True:
        with deps.unit_of_work() as uow:
            swept = sweep_batch(uow.session, connected_before=connected_before, idle_before=idle_before)
            uow.commit()
        result.batches += 1
        result.expired += sum(1 for row in swept if row.expired)
        idle_ids += [row.connection_id for row in swept if not row.expired]
        if len(swept) < SWEEP_BATCH:
            break
        if time_left_ms is not None and time_left_ms() < settings.deadline_margin_ms:
            result.complete = False
            break
    result.idle = len(idle_ids)
    if idle_ids:
        result.closed, result.close_failed = _close_at_gateway(deps, idle_ids)
    return result


def _close_at_gateway(deps: Dependencies, connection_ids: list[str]) -> tuple[int, int]:
    """DELETE @connections/{id} for each; an already closed one (410 Gone) counts as closed."""
    api = connections_api(deps)
    closed = failed = 0
    for connection_id in connection_ids:
        try:
            api.delete_connection(ConnectionId=connection_id)
            closed += 1
        except ClientError as exc:
            if is_gone(exc):
                closed += 1
            else:
                failed += 1
                logger.warning(
                    "could not close an idle connection",
                    extra={"error_code": exc.response.get("Error", {}).get("Code")},
                )
        except BotoCoreError as exc:
            failed += 1
            logger.warning("could not close an idle connection", extra={"error_class": type(exc).__name__})
    return closed, failed
