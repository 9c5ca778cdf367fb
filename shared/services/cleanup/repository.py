"""Every query of cleanup (docs/contracts.md §5 cleanup), on the mapped tables. Set-based and bounded: each
round picks at most ``limit`` candidate keys after a stable cursor (``ORDER BY`` the key, ``LIMIT``; locked
``FOR UPDATE SKIP LOCKED`` unless it only counts), then acts on exactly those keys with a constant number of
statements (``= ANY(:ids)``): no statement touches more than one batch of rows however large the tables.

A pick returns the keys in order; the caller's cursor is the last one, and a pick shorter than ``limit``
means the task has nothing more after the cursor."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Text, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from shared.db.models import (
    UUID_ARRAY,
    Attachment,
    Conversation,
    ConversationParticipant,
    InAppNotification,
    JobFailure,
    JobInbox,
    Message,
    MessageBatch,
    MessageDelivery,
    MessageRead,
    MessageSearch,
    MutedConversation,
    Redrive,
)

_BIGINT_ARRAY = ARRAY(BigInteger)
_TEXT_ARRAY = ARRAY(Text)
# Bulk statements on keys: nothing in the session to keep in step with them.
_NO_SYNC = {"synchronize_session": False}


def _after(statement: Any, key: Any, after: Any) -> Any:
    """The cursor as an index bound, ``key > :after`` (nothing before the first batch). Written as ``(:after
    IS NULL OR key > :after)`` the planner could not bound the index scan with it, and every pick would walk
    the index from its start: quadratic over a long task."""
    return statement if after is None else statement.where(key > after)


def _pick(
    session: Session, key: Any, *conditions: ColumnElement[bool], after: Any, limit: int, lock: bool
) -> list[Any]:
    statement = _after(select(key).where(*conditions), key, after).order_by(key).limit(limit)
    if lock:
        statement = statement.with_for_update(skip_locked=True)
    return list(session.execute(statement).scalars())


def _ids(ids: list[uuid.UUID]) -> Any:
    return any_(bindparam("ids", ids, type_=UUID_ARRAY))


def _count(session: Session, statement: Any) -> int:
    result: Any = session.execute(statement, execution_options=_NO_SYNC)
    return int(result.rowcount or 0)


# --- old messages ----------------------------------------------------------------------------------------


def pick_messages_to_soft_delete(
    session: Session, now: datetime, default_days: int, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[uuid.UUID]:
    """Messages not deleted yet and older than their conversation's ``retention_days`` (else
    ``default_days``), by id after ``after``."""
    days = func.coalesce(Conversation.retention_days, default_days)
    statement = (
        _after(
            select(Message.id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.deleted_at.is_(None), Message.created_at < now - func.make_interval(0, 0, 0, days)
            ),
            Message.id,
            after,
        )
        .order_by(Message.id)
        .limit(limit)
    )
    if lock:
        statement = statement.with_for_update(of=Message, skip_locked=True)
    return list(session.execute(statement).scalars())


def soft_delete_messages(session: Session, ids: list[uuid.UUID], now: datetime) -> int:
    """Clear the content (plaintext and sealed) and set ``deleted_at``."""
    return _count(
        session,
        update(Message)
        .where(Message.id == _ids(ids), Message.deleted_at.is_(None))
        .values(content=None, content_ciphertext=None, content_nonce=None, deleted_at=now),
    )


def delete_search_entries(session: Session, ids: list[uuid.UUID]) -> int:
    return _count(session, delete(MessageSearch).where(MessageSearch.message_id == _ids(ids)))


def pick_messages_to_purge(
    session: Session, deleted_before: datetime, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[uuid.UUID]:
    """Messages soft-deleted before ``deleted_before``, by id after ``after``."""
    return _pick(
        session, Message.id, Message.deleted_at < deleted_before, after=after, limit=limit, lock=lock
    )


def purge_messages(session: Session, ids: list[uuid.UUID], now: datetime) -> dict[str, int]:
    """Delete the messages with what hangs off them: search entries, deliveries, reads; their attachments
    are detached and marked deleted (``deleted_at``), so that expired-attachments deletes their S3 objects
    and then the rows. Five statements."""
    return {
        "search_entries_deleted": delete_search_entries(session, ids),
        "deliveries_deleted": _count(
            session, delete(MessageDelivery).where(MessageDelivery.message_id == _ids(ids))
        ),
        "reads_deleted": _count(session, delete(MessageRead).where(MessageRead.message_id == _ids(ids))),
        "attachments_marked": _count(
            session,
            update(Attachment)
            .where(Attachment.message_id == _ids(ids))
            .values(message_id=None, deleted_at=func.coalesce(Attachment.deleted_at, now)),
        ),
        "messages_purged": _count(session, delete(Message).where(Message.id == _ids(ids))),
    }


# --- deleted conversations -------------------------------------------------------------------------------


def next_deleted_conversation(
    session: Session, deleted_before: datetime, after: uuid.UUID | None
) -> uuid.UUID | None:
    """The first conversation soft-deleted before ``deleted_before`` with an id after ``after``."""
    picked = _pick(
        session, Conversation.id, Conversation.deleted_at < deleted_before, after=after, limit=1, lock=False
    )
    return picked[0] if picked else None


def lock_conversation(session: Session, conversation_id: uuid.UUID) -> bool:
    """Lock the conversation row (a concurrent cleanup of it skips it); False if another holds it."""
    locked = session.execute(
        select(Conversation.id).where(Conversation.id == conversation_id).with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    return locked is not None


def pick_conversation_messages(
    session: Session, conversation_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """Up to ``limit`` messages of the conversation, by id after ``after`` (its row is locked)."""
    return _pick(
        session, Message.id, Message.conversation_id == conversation_id, after=after, limit=limit, lock=False
    )


def count_conversation_dependents(session: Session, conversation_id: uuid.UUID) -> dict[str, int]:
    """What a purge of the conversation would delete besides its messages (dry run; one statement)."""

    def counted(model: Any) -> Any:
        return (
            select(func.count()).select_from(model).where(model.conversation_id == conversation_id)
        ).scalar_subquery()

    row = session.execute(
        select(counted(ConversationParticipant), counted(MutedConversation), counted(InAppNotification))
    ).one()
    return {"participants_deleted": row[0], "mutes_deleted": row[1], "in_app_notifications_deleted": row[2]}


def delete_conversation_notifications(session: Session, conversation_id: uuid.UUID, limit: int) -> int:
    """At most ``limit`` in-app notifications referring to the conversation."""
    batch = (
        select(InAppNotification.id)
        .where(InAppNotification.conversation_id == conversation_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return _count(session, delete(InAppNotification).where(InAppNotification.id.in_(batch)))


def delete_conversation(session: Session, conversation_id: uuid.UUID) -> dict[str, int]:
    """Once its messages and notifications are gone: its search rows (none should be left), mutes,
    participants, then the row itself."""
    return {
        "search_entries_deleted": _count(
            session, delete(MessageSearch).where(MessageSearch.conversation_id == conversation_id)
        ),
        "mutes_deleted": _count(
            session, delete(MutedConversation).where(MutedConversation.conversation_id == conversation_id)
        ),
        "participants_deleted": _count(
            session,
            delete(ConversationParticipant).where(ConversationParticipant.conversation_id == conversation_id),
        ),
        "conversations_purged": _count(
            session, delete(Conversation).where(Conversation.id == conversation_id)
        ),
    }


# --- attachments -----------------------------------------------------------------------------------------


def pick_expired_attachments(
    session: Session, now: datetime, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[Any]:
    """(id, storage_key) of attachments past ``expires_at`` or marked deleted, by id after ``after``."""
    expired = (Attachment.expires_at < now) | Attachment.deleted_at.is_not(None)
    statement = (
        _after(select(Attachment.id, Attachment.storage_key).where(expired), Attachment.id, after)
        .order_by(Attachment.id)
        .limit(limit)
    )
    if lock:
        statement = statement.with_for_update(skip_locked=True)
    return list(session.execute(statement).all())


def delete_attachment_rows(session: Session, ids: list[uuid.UUID]) -> int:
    """The rows whose objects are gone (still expired or deleted: a row renewed meanwhile stays)."""
    still_expired = (Attachment.expires_at < func.now()) | Attachment.deleted_at.is_not(None)
    return _count(session, delete(Attachment).where(Attachment.id == _ids(ids), still_expired))


def known_storage_keys(session: Session, keys: list[str]) -> set[str]:
    """Those of ``keys`` that an attachments row names (one statement, at most one listed page of keys)."""
    if not keys:
        return set()
    listed = any_(bindparam("keys", keys, type_=_TEXT_ARRAY))
    return set(
        session.execute(select(Attachment.storage_key).where(Attachment.storage_key == listed)).scalars()
    )


# --- housekeeping ----------------------------------------------------------------------------------------


def pick_inbox_rows(
    session: Session, completed_before: datetime, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[uuid.UUID]:
    return _pick(
        session,
        JobInbox.job_id,
        JobInbox.completed_at < completed_before,
        after=after,
        limit=limit,
        lock=lock,
    )


def delete_inbox_rows(session: Session, ids: list[uuid.UUID]) -> int:
    return _count(session, delete(JobInbox).where(JobInbox.job_id == _ids(ids)))


def pick_batches_with_content(
    session: Session, finished_before: datetime, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[uuid.UUID]:
    """Finished batches (not running) completed before ``finished_before`` that still keep their sealed
    content (for a retry of their failed recipients), by id after ``after``."""
    return _pick(
        session,
        MessageBatch.id,
        MessageBatch.status != "running",
        MessageBatch.completed_at < finished_before,
        MessageBatch.content_ciphertext.is_not(None),
        after=after,
        limit=limit,
        lock=lock,
    )


def pick_failures(
    session: Session, failed_before: datetime, after: int | None, limit: int, *, lock: bool
) -> list[int]:
    return _pick(
        session, JobFailure.id, JobFailure.last_failed_at < failed_before, after=after, limit=limit, lock=lock
    )


def delete_failures(session: Session, ids: list[int]) -> int:
    listed = any_(bindparam("ids", ids, type_=_BIGINT_ARRAY))
    return _count(session, delete(JobFailure).where(JobFailure.id == listed))


def pick_redrives(
    session: Session, finished_before: datetime, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[uuid.UUID]:
    """Redrive records finished before ``finished_before`` (a running one is never picked), by id."""
    finished = Redrive.finished_at < finished_before
    return _pick(session, Redrive.id, finished, after=after, limit=limit, lock=lock)


def delete_redrives(session: Session, ids: list[uuid.UUID]) -> int:
    return _count(session, delete(Redrive).where(Redrive.id == _ids(ids)))
