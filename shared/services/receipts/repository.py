"""Every query of the receipts domain, on the mapped tables: a constant number of statements for any number of
messages (one array parameter, ``= ANY(:ids)`` / ``unnest(:ids)``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, any_, bindparam, case, exists, func, literal, not_, select, update
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.orm import Session, aliased

from shared.db.models import UUID_ARRAY, ConversationParticipant, Message, MessageDelivery, MessageRead

# A receipt moves a delivery forward only: pending < delivered < read ('failed' may still be confirmed).
_CONFIRMABLE = {"delivered": ("pending", "failed"), "read": ("pending", "failed", "delivered")}


def _ids(ids: list[uuid.UUID]) -> Any:
    return bindparam("ids", ids, type_=UUID_ARRAY)


def count_deliveries(session: Session, recipient: uuid.UUID, message_ids: list[uuid.UUID]) -> int:
    """How many of ``message_ids`` have a delivery row for ``recipient``."""
    return int(
        session.execute(
            select(func.count())
            .select_from(MessageDelivery)
            .where(
                MessageDelivery.recipient_id == recipient,
                MessageDelivery.message_id == any_(_ids(message_ids)),
            )
        ).scalar_one()
    )


def read_up_to_targets(session: Session, recipient: uuid.UUID, anchor: uuid.UUID) -> Any:
    """For the (undeleted) message ``anchor``: ``is_participant`` (the recipient is or was in its
    conversation) and ``ids``, the messages up to it whose delivery to the recipient is not yet ``read``;
    None if there is no such message."""
    anchor_message = aliased(Message)
    earlier = aliased(Message)
    unread = (
        select(func.array_agg(MessageDelivery.message_id))
        .join(earlier, earlier.id == MessageDelivery.message_id)
        .where(
            MessageDelivery.recipient_id == recipient,
            earlier.conversation_id == anchor_message.conversation_id,
            earlier.seq <= anchor_message.seq,
            MessageDelivery.status != "read",
        )
        .scalar_subquery()
    )
    is_participant = exists().where(
        ConversationParticipant.conversation_id == anchor_message.conversation_id,
        ConversationParticipant.user_id == recipient,
    )
    return session.execute(
        select(is_participant.label("is_participant"), unread.label("ids")).where(
            anchor_message.id == anchor, anchor_message.deleted_at.is_(None)
        )
    ).one_or_none()


def advance_deliveries(
    session: Session, recipient: uuid.UUID, message_ids: list[uuid.UUID], status: str, at: datetime
) -> list[uuid.UUID]:
    """Move the recipient's deliveries of ``message_ids`` forward to ``status``; returns those moved."""
    values: dict[str, Any] = {
        "status": status,
        "delivered_at": func.coalesce(MessageDelivery.delivered_at, at),
        "updated_at": func.now(),
    }
    if status == "read":
        values["read_at"] = func.coalesce(MessageDelivery.read_at, at)
    return list(
        session.execute(
            update(MessageDelivery)
            .where(
                MessageDelivery.recipient_id == recipient,
                MessageDelivery.message_id == any_(_ids(message_ids)),
                MessageDelivery.status.in_(_CONFIRMABLE[status]),
            )
            .values(values)
            .returning(MessageDelivery.message_id)
        ).scalars()
    )


def record_reads(session: Session, recipient: uuid.UUID, message_ids: list[uuid.UUID], at: datetime) -> None:
    session.execute(
        insert(MessageRead)
        .from_select(
            ["message_id", "user_id", "read_at"],
            select(func.unnest(_ids(message_ids)), literal(recipient, UUID(as_uuid=True)), literal(at)),
        )
        .on_conflict_do_nothing()
    )


def settle_message_statuses(session: Session, message_ids: list[uuid.UUID]) -> list[Any]:
    """A message becomes ``delivered`` / ``read`` when every recipient's delivery is; returns every one of
    ``message_ids`` with its ``sender_id`` and (new or unchanged) ``message_status``, in one statement."""
    aggregate = (
        select(
            MessageDelivery.message_id,
            case(
                (func.bool_and(MessageDelivery.status == "read"), "read"),
                (func.bool_and(MessageDelivery.status.in_(("delivered", "read"))), "delivered"),
            ).label("status"),
        )
        .where(MessageDelivery.message_id == any_(_ids(message_ids)))
        .group_by(MessageDelivery.message_id)
        .cte("aggregate")
    )
    changed = (
        update(Message)
        .where(
            Message.id == aggregate.c.message_id,
            aggregate.c.status.is_not(None),
            Message.status.in_(("sending", "sent", "delivered")),
            not_(and_(Message.status == "delivered", aggregate.c.status == "delivered")),
        )
        .values(status=aggregate.c.status)
        .returning(Message.id, Message.status)
        .cte("changed")
    )
    return list(
        session.execute(
            select(
                Message.id,
                Message.sender_id,
                func.coalesce(changed.c.status, Message.status).label("message_status"),
            )
            .outerjoin(changed, changed.c.id == Message.id)
            .where(Message.id == any_(_ids(message_ids)))
        ).all()
    )
