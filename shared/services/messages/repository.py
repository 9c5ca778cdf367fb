"""Every query of the messages domain: a constant number of statements per job, whatever the number of
recipients (set-based SQL: ``unnest`` of one array parameter, never a statement per recipient)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import String, and_, bindparam, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.orm import Session

from shared.db.models import (
    UUID_ARRAY,
    Attachment,
    BatchJob,
    Conversation,
    ConversationParticipant,
    Message,
    MessageBatch,
    MessageDelivery,
    User,
)
from shared.jobs import SendMessageData
from shared.services.crypto.keys import Sealed


def load_conversation(
    session: Session, conversation_id: uuid.UUID, sender_id: uuid.UUID, reply_to_id: uuid.UUID | None
) -> Any:
    """One row: ``encryption_enabled``, ``deleted_at``, ``participants`` (active ones), ``reply_to_found``,
    ``sender_name``; None if the conversation does not exist."""
    active = and_(ConversationParticipant.left_at.is_(None), User.deleted_at.is_(None))
    reply_found = (
        exists().where(Message.id == reply_to_id, Message.conversation_id == conversation_id)
        if reply_to_id is not None
        else literal(True)
    )
    sender_name = select(User.display_name).where(User.id == sender_id).correlate(None).scalar_subquery()
    return session.execute(
        select(
            Conversation.encryption_enabled,
            Conversation.deleted_at,
            func.array_agg(ConversationParticipant.user_id).filter(active).label("participants"),
            reply_found.label("reply_to_found"),
            sender_name.label("sender_name"),
        )
        .select_from(Conversation)
        .outerjoin(ConversationParticipant, ConversationParticipant.conversation_id == Conversation.id)
        .outerjoin(User, User.id == ConversationParticipant.user_id)
        .where(Conversation.id == conversation_id)
        .group_by(Conversation.id)
    ).one_or_none()


def insert_message(session: Session, data: SendMessageData, sealed: Sealed | None = None) -> Any:
    """Insert with the next seq, or turn a pre-inserted ``sending`` row into ``sent``; returns (id, seq,
    content, content_type, created_at), or None if the message already exists in any other state. With
    ``sealed`` the new row holds the sealed content and no plaintext (a pre-inserted row keeps its own)."""
    next_seq = (
        select(func.coalesce(func.max(Message.seq), 0) + 1)
        .where(Message.conversation_id == data.conversation_id)
        .scalar_subquery()
    )
    stmt = insert(Message).values(
        id=data.message_id,
        conversation_id=data.conversation_id,
        sender_id=data.sender_id,
        seq=next_seq,
        content=None if sealed else data.content,
        content_ciphertext=sealed.ciphertext if sealed else None,
        content_nonce=sealed.nonce if sealed else None,
        encryption_key_version=sealed.key_version if sealed else None,
        encryption_algorithm=sealed.algorithm if sealed else None,
        content_type=data.content_type,
        reply_to_id=data.reply_to_id,
        status="sent",
        sent_at=func.now(),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Message.id],
        set_={"status": "sent", "sent_at": func.now()},
        where=and_(
            Message.status == "sending",
            Message.conversation_id == stmt.excluded.conversation_id,
            Message.sender_id == stmt.excluded.sender_id,
        ),
    )
    return session.execute(
        stmt.returning(Message.id, Message.seq, Message.content, Message.content_type, Message.created_at)
    ).one_or_none()


def message_owner(session: Session, message_id: uuid.UUID) -> Any:
    """(conversation_id, sender_id) of an existing message."""
    return session.execute(
        select(Message.conversation_id, Message.sender_id).where(Message.id == message_id)
    ).one()


def insert_pending_deliveries(session: Session, message_id: uuid.UUID, recipients: list[uuid.UUID]) -> None:
    session.execute(
        insert(MessageDelivery)
        .from_select(
            ["message_id", "recipient_id", "status"],
            select(
                literal(message_id, UUID(as_uuid=True)),
                func.unnest(bindparam("recipients", recipients, type_=UUID_ARRAY)),
                literal("pending"),
            ),
        )
        .on_conflict_do_nothing()
    )


def link_attachments(
    session: Session, message_id: uuid.UUID, sender_id: uuid.UUID, attachment_ids: list[uuid.UUID]
) -> int:
    """Link to the message the attachments the sender uploaded that are undeleted and not attached to another
    message (one already linked to this very message, e.g. by the chat API before completing a ``sending``
    message, counts too); returns how many of ``attachment_ids`` qualify. An attachment without an uploader
    (written before ``uploaded_by`` existed) never qualifies."""
    linked = session.execute(
        update(Attachment)
        .where(
            Attachment.id.in_(attachment_ids),
            Attachment.deleted_at.is_(None),
            Attachment.uploaded_by == sender_id,
            (Attachment.message_id.is_(None)) | (Attachment.message_id == message_id),
        )
        .values(message_id=message_id)
        .returning(Attachment.id)
    ).all()
    return len(linked)


BatchOutcome = Literal["sent", "failed"]
# Why a batch recipient's send-message job failed (batch_jobs.error); the reason itself is in job_failures.
SEND_FAILED = "send-message-failed"


def count_in_batch(
    session: Session,
    *,
    batch_id: uuid.UUID,
    job_id: uuid.UUID,
    sender_id: uuid.UUID,
    message_id: uuid.UUID,
    recipient_id: uuid.UUID | None,
    outcome: BatchOutcome,
) -> bool:
    """Settle one send-message job in its batch's ledger (``batch_jobs``), once: returns whether it moved.

    One statement, on the job's own row only: the batch row is never locked here (batch fan-out refreshes its
    counts from the rows, docs/contracts.md §5). The row is inserted if the fan-out did not pre-insert it,
    selected from the batch itself so that nothing happens unless the batch exists and its ``sender_id`` is
    the job's. A ``pending`` or ``queued`` row becomes the outcome; a job counted ``failed`` (dead-lettered)
    that is later ``sent`` (redriven after its cause was fixed) becomes ``sent``; a ``sent`` row never
    becomes ``failed``, and nothing is counted twice."""
    ids = UUID(as_uuid=True)
    error = None if outcome == "sent" else SEND_FAILED
    insert_row = insert(BatchJob).from_select(
        ["batch_id", "job_id", "recipient_id", "message_id", "status", "error"],
        select(
            MessageBatch.id,
            literal(job_id, ids),
            literal(recipient_id, ids),
            literal(message_id, ids),
            literal(outcome),
            literal(error, String),
        ).where(MessageBatch.id == batch_id, MessageBatch.sender_id == sender_id),
    )
    movable = ("pending", "queued", "failed") if outcome == "sent" else ("pending", "queued")
    settle = insert_row.on_conflict_do_update(
        index_elements=[BatchJob.batch_id, BatchJob.job_id],
        set_={
            "status": outcome,
            "error": insert_row.excluded.error,
            "recipient_id": func.coalesce(insert_row.excluded.recipient_id, BatchJob.recipient_id),
            "updated_at": func.now(),
        },
        where=BatchJob.status.in_(movable),
    )
    return session.execute(settle.returning(BatchJob.job_id)).one_or_none() is not None
