"""Live WebSocket connections (``ws_connections``, DESIGN §5 and §7): registered on ``$connect``, removed on
``$disconnect``, touched by every client frame, swept when API Gateway has certainly closed them.

Each operation is one statement. The session functions take the caller's transaction; the ``*_connection``
use cases below them run in their own unit of work and commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import DateTime, String, delete, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.aws import client
from shared.config import get_settings
from shared.db.models import User, WsConnection
from shared.db.uow import UnitOfWork
from shared.errors import UnknownConnection, UnknownEntity
from shared.observability import logger

# Rows deleted per sweep statement: small enough to keep each transaction short.
SWEEP_BATCH = 500


# --- statements in the caller's transaction ----------------------------------------------------------


def store_connection(session: Session, connection_id: str, user_id: uuid.UUID, *, now: datetime) -> None:
    """Register ``connection_id`` for ``user_id`` (connected and last seen ``now``).

    Raises :class:`UnknownEntity` if the user does not exist or is deleted. Registering the same connection
    for the same user again only refreshes ``last_seen_at``; for another user it is refused the same way."""
    user = select(
        literal(connection_id, String()),
        User.id,
        literal(now, DateTime(timezone=True)),
        literal(now, DateTime(timezone=True)),
    ).where(User.id == user_id, User.deleted_at.is_(None))
    upsert = insert(WsConnection).from_select(
        ["connection_id", "user_id", "connected_at", "last_seen_at"], user
    )
    statement = upsert.on_conflict_do_update(
        index_elements=[WsConnection.connection_id],
        set_={"last_seen_at": upsert.excluded.last_seen_at},
        where=WsConnection.user_id == upsert.excluded.user_id,
    ).returning(WsConnection.connection_id)
    if session.execute(statement).first() is None:
        raise UnknownEntity(f"user {user_id} does not exist or is deleted (or the connection is another's)")


def remove_connection(session: Session, connection_id: str) -> bool:
    """Forget ``connection_id``; True if it was registered. Removing it twice is harmless."""
    removed = session.execute(
        delete(WsConnection)
        .where(WsConnection.connection_id == connection_id)
        .returning(WsConnection.connection_id)
    ).first()
    return removed is not None


def touch_connection(session: Session, connection_id: str, *, now: datetime) -> uuid.UUID:
    """Mark ``connection_id`` seen ``now`` and return its user, in one ``UPDATE ... RETURNING``.

    Raises :class:`UnknownConnection` if it is not registered."""
    user_id = session.execute(
        update(WsConnection)
        .where(WsConnection.connection_id == connection_id)
        .values(last_seen_at=now)
        .returning(WsConnection.user_id)
    ).scalar_one_or_none()
    if user_id is None:
        raise UnknownConnection(f"connection {connection_id} is not registered")
    return user_id


@dataclass(frozen=True)
class SweptConnection:
    connection_id: str
    expired: bool  # past the maximum connection duration (else: idle)


def sweep_batch(
    session: Session, *, connected_before: datetime, idle_before: datetime | None, limit: int = SWEEP_BATCH
) -> list[SweptConnection]:
    """Delete up to ``limit`` connections opened before ``connected_before`` or (when given) last seen before
    ``idle_before``, in one ``DELETE ... RETURNING``; rows locked by a concurrent sweep are skipped."""
    stale = WsConnection.connected_at < connected_before
    if idle_before is not None:
        stale = or_(stale, WsConnection.last_seen_at < idle_before)
    victims = select(WsConnection.connection_id).where(stale).limit(limit).with_for_update(skip_locked=True)
    expired = (WsConnection.connected_at < connected_before).label("expired")
    rows = session.execute(
        delete(WsConnection)
        .where(WsConnection.connection_id.in_(victims))
        .returning(WsConnection.connection_id, expired)
    ).all()
    return [SweptConnection(row.connection_id, bool(row.expired)) for row in rows]


# --- use cases: one unit of work each ------------------------------------------------------------------


def open_connection(connection_id: str, user_id: uuid.UUID) -> None:
    """Register a new connection of ``user_id``; :class:`UnknownEntity` for an unknown or deleted user."""
    with UnitOfWork() as uow:
        store_connection(uow.session, connection_id, user_id, now=datetime.now(UTC))
        uow.commit()


def close_connection(connection_id: str) -> bool:
    """Forget a closed connection; True if it was registered (idempotent)."""
    with UnitOfWork() as uow:
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
    *, now: datetime | None = None, time_left_ms: Callable[[], int] | None = None
) -> SweepResult:
    """Delete the rows of connections API Gateway has closed (older than ``CONNECTION_MAX_AGE_SECONDS``)
    and, if ``CONNECTION_IDLE_SECONDS`` is set, of connections idle that long, in bounded batches.

    Each batch commits on its own; the sweep stops early (``complete=False``) when ``time_left_ms()`` drops
    under the deadline margin, and the next run continues. Idle connections are also closed at API Gateway
    (their row is gone, so they would receive nothing): the client reconnects and registers again."""
    settings = get_settings()
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
        with UnitOfWork() as uow:
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
        result.closed, result.close_failed = _close_at_gateway(idle_ids)
    return result


def is_gone(exc: ClientError) -> bool:
    """True if a management API call failed because the connection is closed (410 ``GoneException``)."""
    error: dict[str, Any] = exc.response.get("Error", {})
    metadata: dict[str, Any] = exc.response.get("ResponseMetadata", {})
    return error.get("Code") == "GoneException" or metadata.get("HTTPStatusCode") == 410


def _close_at_gateway(connection_ids: list[str]) -> tuple[int, int]:
    """DELETE @connections/{id} for each; an already closed one (410 Gone) counts as closed."""
    api = client("apigatewaymanagementapi", get_settings().require_websocket_endpoint())
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
