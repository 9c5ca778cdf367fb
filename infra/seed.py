"""What the chat API writes and Switchboard only reads: users, conversations with their participants, and
WebSocket connections. The one way the demo, the local stack's clients and the tests put them in the database.

Each function takes an open SQLAlchemy connection (in a transaction the caller commits) and writes in bulk."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, insert

from shared.db.models import Conversation, ConversationParticipant, User, WsConnection


def add_users(
    conn: Connection, names: Sequence[str], *, ids: Sequence[uuid.UUID] | None = None, **fields: Any
) -> list[uuid.UUID]:
    """One user per display name (with ``fields`` on every one, e.g. ``deleted_at``); returns their ids."""
    user_ids = list(ids) if ids is not None else [uuid.uuid4() for _ in names]
    conn.execute(
        insert(User), [{"id": u, "display_name": n, **fields} for u, n in zip(user_ids, names, strict=True)]
    )
    return user_ids


def add_conversation(
    conn: Connection,
    members: Sequence[uuid.UUID],
    *,
    conversation_id: uuid.UUID | None = None,
    kind: str | None = None,
    encrypted: bool = False,
    title: str | None = None,
) -> uuid.UUID:
    """A conversation of ``members`` (direct for two, else a group unless ``kind`` says); returns its id."""
    conversation_id = conversation_id or uuid.uuid4()
    conn.execute(
        insert(Conversation).values(
            id=conversation_id,
            kind=kind or ("direct" if len(members) == 2 else "group"),
            title=title,
            encryption_enabled=encrypted,
        )
    )
    conn.execute(
        insert(ConversationParticipant),
        [{"conversation_id": conversation_id, "user_id": member} for member in members],
    )
    return conversation_id


def add_connections(conn: Connection, connections: Mapping[str, uuid.UUID]) -> None:
    """Register WebSocket connections: connection id -> user id."""
    conn.execute(insert(WsConnection), [{"connection_id": c, "user_id": u} for c, u in connections.items()])
