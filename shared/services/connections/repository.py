"""Every query of the connections domain (``ws_connections``): one statement per use."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String, any_, bindparam, delete, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import UUID_ARRAY, User, WsConnection
from shared.errors import UnknownConnection, UnknownEntity

# Rows deleted per sweep statement: small enough to keep each transaction short.
SWEEP_BATCH = 500


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


def live_connections(session: Session, user_ids: Collection[uuid.UUID]) -> list[Any]:
    """(connection_id, user_id) of every registered connection of ``user_ids``."""
    return list(
        session.execute(
            # One array parameter, not an IN list of N (50 KB of SQL text at 5,000 participants)
            select(WsConnection.connection_id, WsConnection.user_id).where(
                WsConnection.user_id == any_(bindparam("user_ids", list(set(user_ids)), type_=UUID_ARRAY))
            )
        ).all()
    )


def remove_connections(session: Session, connection_ids: list[str]) -> None:
    session.execute(delete(WsConnection).where(WsConnection.connection_id.in_(connection_ids)))
