"""Test data: users, conversations, connections and jobs, written straight to the real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from infra.seed import add_connections, add_conversation, add_users
from shared.db.models import (
    ConversationParticipant,
    Message,
    MessageDelivery,
    WsConnection,
)
from shared.jobs import SCHEMA_VERSION


def job(
    job_type: str, data: dict[str, Any], *, job_id: uuid.UUID | None = None, **extra: Any
) -> dict[str, Any]:
    """A job body (as a dict) in the docs/contracts.md §2 envelope."""
    return {
        "job_id": str(job_id or uuid.uuid4()),
        "job_type": job_type,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "data": data,
        **extra,
    }


class World:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def user(self, name: str = "user", *, deleted: bool = False, **fields: Any) -> uuid.UUID:
        with self.engine.begin() as conn:
            [user_id] = add_users(conn, [name], deleted_at=datetime.now(UTC) if deleted else None, **fields)
        return user_id

    def conversation(
        self,
        members: list[uuid.UUID],
        *,
        kind: str | None = None,
        encrypted: bool = False,
        title: str | None = None,
    ) -> uuid.UUID:
        with self.engine.begin() as conn:
            return add_conversation(conn, members, kind=kind, encrypted=encrypted, title=title)

    def group(self, size: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
        """A conversation of ``size`` users (inserted in bulk); returns (conversation_id, [sender, ...])."""
        with self.engine.begin() as conn:
            users = add_users(conn, [f"member {i}" for i in range(size)])
            return add_conversation(conn, users), users

    def leave(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        from sqlalchemy import update

        with self.engine.begin() as conn:
            conn.execute(
                update(ConversationParticipant)
                .where(
                    ConversationParticipant.conversation_id == conversation_id,
                    ConversationParticipant.user_id == user_id,
                )
                .values(left_at=datetime.now(UTC))
            )

    def connect(self, user_id: uuid.UUID, connection_id: str | None = None) -> str:
        connection_id = connection_id or f"conn-{uuid.uuid4().hex[:12]}"
        with self.engine.begin() as conn:
            add_connections(conn, {connection_id: user_id})
        return connection_id

    def send_message_data(
        self, conversation_id: uuid.UUID, sender_id: uuid.UUID, content: str = "hello", **extra: Any
    ) -> dict[str, Any]:
        return {
            "message_id": str(uuid.uuid4()),
            "conversation_id": str(conversation_id),
            "sender_id": str(sender_id),
            "content": content,
            **extra,
        }

    # Reading back -------------------------------------------------------------------------------------

    def rows(self, statement: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(statement).all())

    def messages(self, conversation_id: uuid.UUID) -> list[Any]:
        return self.rows(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
        )

    def message(self, message_id: uuid.UUID | str) -> Any:
        rows = self.rows(select(Message).where(Message.id == uuid.UUID(str(message_id))))
        return rows[0] if rows else None

    def deliveries(self, message_id: uuid.UUID | str) -> dict[uuid.UUID, Any]:
        rows = self.rows(
            select(MessageDelivery).where(MessageDelivery.message_id == uuid.UUID(str(message_id)))
        )
        return {row.recipient_id: row for row in rows}

    def connections(self) -> set[str]:
        return {row.connection_id for row in self.rows(select(WsConnection.connection_id))}
