"""Every query of the messages domain: a constant number of statements per job, whatever the number of
recipients (set-based SQL: ``unnest`` of one array parameter, never a statement per recipient)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import String, and_, bindparam, exists, func, literal, literal_column, select, update
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


def _conversation_statement(with_reply: bool) -> Any:
    active = and_(ConversationParticipant.left_at.is_(None), User.deleted_at.is_(None))
    reply_found = (
        exists().where(
            Message.id == bindparam("lc_reply_to_id", type_=UUID(as_uuid=True)),
            Message.conversation_id == bindparam("lc_conversation_id"),
        )
        if with_reply
        else literal(True)
    )
    sender_name = (
        select(User.display_name)
        .where(User.id == bindparam("lc_sender_id", type_=UUID(as_uuid=True)))
        .correlate(None)
        .scalar_subquery()
    )
    return (
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
        .where(Conversation.id == bindparam("lc_conversation_id"))
        .group_by(Conversation.id)
    )


# The hot path's statements are built once, at import (cheap: no compilation until first use); a call only
# binds values and runs them on the session's Core connection, skipping per-job statement construction, the
# cache-key walk and the ORM execute path (every one of them was a compiled-cache hit anyway).
_LOAD_CONVERSATION = _conversation_statement(with_reply=False)
_LOAD_CONVERSATION_AND_REPLY = _conversation_statement(with_reply=True)


def load_conversation(
    session: Session, conversation_id: uuid.UUID, sender_id: uuid.UUID, reply_to_id: uuid.UUID | None
) -> Any:
    """One row: ``encryption_enabled``, ``deleted_at``, ``participants`` (active ones), ``reply_to_found``,
    ``sender_name``; None if the conversation does not exist."""
    params = {"lc_conversation_id": conversation_id, "lc_sender_id": sender_id}
    if reply_to_id is None:
        return session.connection().execute(_LOAD_CONVERSATION, params).one_or_none()
    return (
        session.connection()
        .execute(_LOAD_CONVERSATION_AND_REPLY, {**params, "lc_reply_to_id": reply_to_id})
        .one_or_none()
    )


def _insert_message_statement(*, sealed: bool) -> Any:
    """The insert of a plaintext message, or (``sealed``) of a sealed one. Constants are inlined and a
    plaintext insert names no sealed column: pg8000 scans every statement's text in Python, so its length is
    paid on every job."""
    next_seq = (
        select(func.coalesce(func.max(Message.seq), literal_column("0")) + literal_column("1"))
        .where(Message.conversation_id == bindparam("im_seq_conversation_id", type_=UUID(as_uuid=True)))
        .scalar_subquery()
    )
    sealed_columns: dict[str, Any] = (
        {
            "content_ciphertext": bindparam("im_content_ciphertext"),
            "content_nonce": bindparam("im_content_nonce"),
            "encryption_key_version": bindparam("im_key_version"),
            "encryption_algorithm": bindparam("im_algorithm"),
        }
        if sealed
        else {}
    )
    stmt = insert(Message).values(
        id=bindparam("im_id"),
        conversation_id=bindparam("im_conversation_id"),
        sender_id=bindparam("im_sender_id"),
        seq=next_seq,
        content=bindparam("im_content"),
        content_type=bindparam("im_content_type"),
        reply_to_id=bindparam("im_reply_to_id"),
        status=literal_column("'sent'"),
        sent_at=func.now(),
        **sealed_columns,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Message.id],
        set_={"status": literal_column("'sent'"), "sent_at": func.now()},
        where=and_(
            Message.status == literal_column("'sending'"),
            Message.conversation_id == stmt.excluded.conversation_id,
            Message.sender_id == stmt.excluded.sender_id,
        ),
    )
    return stmt.returning(Message.id, Message.seq, Message.content, Message.content_type, Message.created_at)


_INSERT_MESSAGE = _insert_message_statement(sealed=False)
_INSERT_SEALED_MESSAGE = _insert_message_statement(sealed=True)


def insert_message(session: Session, data: SendMessageData, sealed: Sealed | None = None) -> Any:
    """Insert with the next seq, or turn a pre-inserted ``sending`` row into ``sent``; returns (id, seq,
    content, content_type, created_at), or None if the message already exists in any other state. With
    ``sealed`` the new row holds the sealed content and no plaintext (a pre-inserted row keeps its own)."""
    params: dict[str, Any] = {
        "im_id": data.message_id,
        "im_conversation_id": data.conversation_id,
        "im_seq_conversation_id": data.conversation_id,
        "im_sender_id": data.sender_id,
        "im_content": None if sealed else data.content,
        "im_content_type": data.content_type,
        "im_reply_to_id": data.reply_to_id,
    }
    if sealed is None:
        return session.connection().execute(_INSERT_MESSAGE, params).one_or_none()
    sealed_params = {
        "im_content_ciphertext": sealed.ciphertext,
        "im_content_nonce": sealed.nonce,
        "im_key_version": sealed.key_version,
        "im_algorithm": sealed.algorithm,
    }
    return session.connection().execute(_INSERT_SEALED_MESSAGE, params | sealed_params).one_or_none()


def message_owner(session: Session, message_id: uuid.UUID) -> Any:
    """(conversation_id, sender_id) of an existing message."""
    return session.execute(
        select(Message.conversation_id, Message.sender_id).where(Message.id == message_id)
    ).one()


_INSERT_PENDING_DELIVERIES = (
    insert(MessageDelivery)
    .from_select(
        ["message_id", "recipient_id", "status"],
        select(
            bindparam("pd_message_id", type_=UUID(as_uuid=True)),
            func.unnest(bindparam("pd_recipients", type_=UUID_ARRAY)),
            literal("pending"),
        ),
    )
    .on_conflict_do_nothing()
)


def insert_pending_deliveries(session: Session, message_id: uuid.UUID, recipients: list[uuid.UUID]) -> None:
    session.connection().execute(
        _INSERT_PENDING_DELIVERIES, {"pd_message_id": message_id, "pd_recipients": recipients}
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
