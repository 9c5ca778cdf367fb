"""send-message (DESIGN §6): persist a message with the next per-conversation ``seq`` and one pending
delivery per recipient, in a constant number of statements whatever the number of recipients; then, after
commit, index it, broadcast ``message.new`` and notify the recipients no connection reached."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ARRAY, and_, bindparam, case, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.orm import Session

from shared.db.models import (
    Attachment,
    Conversation,
    ConversationParticipant,
    Message,
    MessageBatch,
    MessageDelivery,
    User,
)
from shared.errors import (
    ConflictingJob,
    EncryptionNotAvailable,
    NotAParticipant,
    UnknownEntity,
)
from shared.jobs import IndexingData, JobType, SendMessageJob, child_job_id, new_job
from shared.services.effects import Broadcast, Effect, EnqueueJobs, OfflineNotification

NOTIFICATION_PREVIEW_CHARS = 140
_UUIDS = ARRAY(UUID(as_uuid=True))


def send_message(job: SendMessageJob, session: Session) -> list[Effect]:
    """Persist the message of ``job`` and return its post-commit effects.

    The same ``message_id`` sent again (under another job id) is one message: nothing is written and nothing
    is broadcast twice. A message pre-inserted by the chat API in status ``sending`` becomes ``sent`` here,
    atomically with its deliveries."""
    data = job.data
    context = _load_conversation(session, data.conversation_id, data.sender_id, data.reply_to_id)
    participants: list[uuid.UUID] = context.participants or []
    if data.sender_id not in participants:
        raise NotAParticipant("the sender is not an active participant of the conversation")
    if context.encryption_enabled:
        raise EncryptionNotAvailable(
            "conversation requires encryption at rest, not available in this release"
        )
    if data.reply_to_id is not None and not context.reply_to_found:
        raise UnknownEntity("reply_to_id is not a message of this conversation")
    recipients = _recipients(participants, data.sender_id, data.recipient_ids)

    stored = _insert_message(session, job)
    if stored is None:
        _check_same_message(session, job)
        return []
    session.execute(
        insert(MessageDelivery)
        .from_select(
            ["message_id", "recipient_id", "status"],
            select(
                literal(data.message_id, UUID(as_uuid=True)),
                func.unnest(bindparam("recipients", recipients, type_=_UUIDS)),
                literal("pending"),
            ),
        )
        .on_conflict_do_nothing()
    )
    if data.attachment_ids:
        _attach(session, data.message_id, data.attachment_ids)
    if data.batch_id is not None:
        advance_batch(session, data.batch_id, sent=1)
    return _effects(job, stored, participants, recipients, context.sender_name)


def _load_conversation(
    session: Session, conversation_id: uuid.UUID, sender_id: uuid.UUID, reply_to_id: uuid.UUID | None
) -> Any:
    active = and_(ConversationParticipant.left_at.is_(None), User.deleted_at.is_(None))
    reply_found = (
        exists().where(Message.id == reply_to_id, Message.conversation_id == conversation_id)
        if reply_to_id is not None
        else literal(True)
    )
    sender_name = select(User.display_name).where(User.id == sender_id).correlate(None).scalar_subquery()
    row = session.execute(
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
    if row is None or row.deleted_at is not None:
        raise UnknownEntity("conversation not found or deleted")
    return row


def _recipients(
    participants: list[uuid.UUID], sender_id: uuid.UUID, requested: list[uuid.UUID] | None
) -> list[uuid.UUID]:
    if requested is None:
        return [user_id for user_id in participants if user_id != sender_id]
    wanted = dict.fromkeys(user_id for user_id in requested if user_id != sender_id)
    outsiders = set(wanted) - set(participants)
    if outsiders:
        raise NotAParticipant(
            f"{len(outsiders)} recipient(s) are not active participants of the conversation"
        )
    return list(wanted)


def _insert_message(session: Session, job: SendMessageJob) -> Any:
    """Insert with the next seq, or turn a pre-inserted ``sending`` row into ``sent``; None if the message
    already exists in any other state (a duplicate or a conflict)."""
    data = job.data
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
        content=data.content,
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


def _check_same_message(session: Session, job: SendMessageJob) -> None:
    existing = session.execute(
        select(Message.conversation_id, Message.sender_id).where(Message.id == job.data.message_id)
    ).one()
    if (existing.conversation_id, existing.sender_id) != (job.data.conversation_id, job.data.sender_id):
        raise ConflictingJob("message_id already belongs to another conversation or sender")


def _attach(session: Session, message_id: uuid.UUID, attachment_ids: list[uuid.UUID]) -> None:
    linked = session.execute(
        update(Attachment)
        .where(
            Attachment.id.in_(attachment_ids),
            Attachment.deleted_at.is_(None),
            (Attachment.message_id.is_(None)) | (Attachment.message_id == message_id),
        )
        .values(message_id=message_id)
        .returning(Attachment.id)
    ).all()
    if len(linked) != len(set(attachment_ids)):
        raise UnknownEntity(f"{len(set(attachment_ids)) - len(linked)} attachment(s) unknown or already used")


def advance_batch(session: Session, batch_id: uuid.UUID, *, sent: int = 0, failed: int = 0) -> None:
    """Count sent/failed messages of a batch; the batch completes when every recipient is accounted for."""
    done = MessageBatch.sent + sent + MessageBatch.failed + failed >= MessageBatch.total
    session.execute(
        update(MessageBatch)
        .where(MessageBatch.id == batch_id)
        .values(
            sent=MessageBatch.sent + sent,
            failed=MessageBatch.failed + failed,
            updated_at=func.now(),
            status=case((done, "completed"), else_=MessageBatch.status),
            completed_at=func.coalesce(MessageBatch.completed_at, case((done, func.now()), else_=None)),
        )
    )


def record_dead_letter(job: SendMessageJob, session: Session) -> None:
    """A send-message job that can never succeed still counts towards its batch (as failed)."""
    if job.data.batch_id is not None:
        advance_batch(session, job.data.batch_id, failed=1)


def _effects(
    job: SendMessageJob,
    stored: Any,
    participants: list[uuid.UUID],
    recipients: list[uuid.UUID],
    sender_name: str | None,
) -> list[Effect]:
    data = job.data
    indexing = new_job(
        JobType.INDEXING,
        IndexingData(message_id=data.message_id, operation="index"),
        job_id=child_job_id(job.job_id, "indexing"),
        correlation_id=job.correlation_id or str(job.job_id),
    )
    frame = {
        "type": "message.new",
        "message": {
            "id": str(stored.id),
            "conversation_id": str(data.conversation_id),
            "sender_id": str(data.sender_id),
            "seq": stored.seq,
            "content": stored.content,
            "content_type": stored.content_type,
            "created_at": stored.created_at.isoformat(),
            "reply_to_id": str(data.reply_to_id) if data.reply_to_id else None,
            "attachment_ids": [str(a) for a in data.attachment_ids or []],
        },
    }
    preview = stored.content or ""
    notification = {
        "category": "message",
        "title": (sender_name or "New message")[:200],
        "body": (preview[:NOTIFICATION_PREVIEW_CHARS] + "…")
        if len(preview) > NOTIFICATION_PREVIEW_CHARS
        else (preview or "New message"),
        "conversation_id": str(data.conversation_id),
        "message_id": str(data.message_id),
        "data": {"conversation_id": str(data.conversation_id), "message_id": str(data.message_id)},
    }
    return [
        EnqueueJobs(job_type=JobType.INDEXING, jobs=[indexing.model_dump(mode="json")]),
        Broadcast(
            user_ids=participants,
            frames=[frame],
            notify_offline=OfflineNotification(recipient_ids=recipients, notification=notification)
            if recipients
            else None,
        ),
    ]
