"""Every query of cleanup (docs/contracts.md §5 cleanup). Set-based and bounded: each round picks at most
``limit`` candidate keys after a stable cursor (``ORDER BY`` the key, ``LIMIT``; locked ``FOR UPDATE SKIP
LOCKED`` unless it only counts), then acts on exactly those keys with a constant number of statements
(``= ANY(:ids)``), so no statement touches more than one batch of rows however large the tables are.

A pick returns the keys in order; the caller's cursor is the last one, and a pick shorter than ``limit``
means the task has nothing more after the cursor."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from shared.db.models import UUID_ARRAY

_BIGINT_ARRAY = ARRAY(BigInteger)
_TEXT_ARRAY = ARRAY(Text)


_AFTER = re.compile(r"\(CAST\(:after AS (\w+)\) IS NULL OR (\w+) > CAST\(:after AS \w+\)\)")


def _keyset(sql: str, after: Any) -> str:
    """The cursor condition as an index bound: ``key > :after``, or nothing before the first batch. (Written
    as ``(:after IS NULL OR key > :after)`` the planner cannot bound the index scan with it, and every pick
    would walk the index from its start: quadratic over a long task.)"""
    return _AFTER.sub(
        lambda m: "TRUE" if after is None else f"{m.group(2)} > CAST(:after AS {m.group(1)})", sql
    )


def _pick(session: Session, sql: str, *, lock: bool, **params: Any) -> list[Any]:
    statement = text(_keyset(sql, params.get("after")) + (" FOR UPDATE SKIP LOCKED" if lock else ""))
    return list(session.execute(statement, params).scalars())


def _ids(name: str, ids: list[uuid.UUID]) -> Any:
    return bindparam(name, ids, type_=UUID_ARRAY)


def _count(session: Session, sql: str, *binds: Any, **params: Any) -> int:
    result: Any = session.execute(text(sql).bindparams(*binds), params)
    return int(result.rowcount or 0)


# --- old messages ----------------------------------------------------------------------------------------


def pick_messages_to_soft_delete(
    session: Session, cutoff: datetime, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[uuid.UUID]:
    """Messages created before ``cutoff`` and not deleted yet, by id after ``after``."""
    return _pick(
        session,
        "SELECT id FROM messages WHERE deleted_at IS NULL AND created_at < :cutoff"
        " AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) ORDER BY id LIMIT :limit",
        lock=lock,
        cutoff=cutoff,
        after=after,
        limit=limit,
    )


def soft_delete_messages(session: Session, ids: list[uuid.UUID], now: datetime) -> int:
    """Clear the content (plaintext and sealed) and set ``deleted_at``."""
    return _count(
        session,
        "UPDATE messages SET content = NULL, content_ciphertext = NULL, content_nonce = NULL,"
        " deleted_at = :now WHERE id = ANY(:ids) AND deleted_at IS NULL",
        _ids("ids", ids),
        now=now,
    )


def delete_search_entries(session: Session, ids: list[uuid.UUID]) -> int:
    return _count(session, "DELETE FROM message_search WHERE message_id = ANY(:ids)", _ids("ids", ids))


def pick_messages_to_purge(
    session: Session, deleted_before: datetime, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[uuid.UUID]:
    """Messages soft-deleted before ``deleted_before``, by id after ``after``."""
    return _pick(
        session,
        "SELECT id FROM messages WHERE deleted_at < :deleted_before"
        " AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) ORDER BY id LIMIT :limit",
        lock=lock,
        deleted_before=deleted_before,
        after=after,
        limit=limit,
    )


def purge_messages(session: Session, ids: list[uuid.UUID], now: datetime) -> dict[str, int]:
    """Delete the messages with what hangs off them: search entries, deliveries, reads; their attachments
    are detached and marked deleted (``deleted_at``), so that expired-attachments deletes their S3 objects
    and then the rows. Five statements."""
    return {
        "search_entries_deleted": delete_search_entries(session, ids),
        "deliveries_deleted": _count(
            session, "DELETE FROM message_deliveries WHERE message_id = ANY(:ids)", _ids("ids", ids)
        ),
        "reads_deleted": _count(
            session, "DELETE FROM message_reads WHERE message_id = ANY(:ids)", _ids("ids", ids)
        ),
        "attachments_marked": _count(
            session,
            "UPDATE attachments SET message_id = NULL, deleted_at = coalesce(deleted_at, :now)"
            " WHERE message_id = ANY(:ids)",
            _ids("ids", ids),
            now=now,
        ),
        "messages_purged": _count(session, "DELETE FROM messages WHERE id = ANY(:ids)", _ids("ids", ids)),
    }


# --- deleted conversations -------------------------------------------------------------------------------


def next_deleted_conversation(
    session: Session, deleted_before: datetime, after: uuid.UUID | None
) -> uuid.UUID | None:
    """The first conversation soft-deleted before ``deleted_before`` with an id after ``after``."""
    return session.execute(
        text(
            _keyset(
                "SELECT id FROM conversations WHERE deleted_at < :deleted_before"
                " AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) ORDER BY id LIMIT 1",
                after,
            )
        ),
        {"deleted_before": deleted_before, "after": after},
    ).scalar_one_or_none()


def lock_conversation(session: Session, conversation_id: uuid.UUID) -> bool:
    """Lock the conversation row (a concurrent cleanup of it skips it); False if another holds it."""
    return (
        session.execute(
            text("SELECT id FROM conversations WHERE id = :id FOR UPDATE SKIP LOCKED"),
            {"id": conversation_id},
        ).scalar_one_or_none()
        is not None
    )


def pick_conversation_messages(
    session: Session, conversation_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """Up to ``limit`` messages of the conversation, by id after ``after`` (its row is locked)."""
    return _pick(
        session,
        "SELECT id FROM messages WHERE conversation_id = :conversation_id"
        " AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) ORDER BY id LIMIT :limit",
        lock=False,
        conversation_id=conversation_id,
        after=after,
        limit=limit,
    )


def count_conversation_dependents(session: Session, conversation_id: uuid.UUID) -> dict[str, int]:
    """What a purge of the conversation would delete besides its messages (dry run; one statement)."""
    row = session.execute(
        text(
            "SELECT (SELECT count(*) FROM conversation_participants WHERE conversation_id = :id),"
            " (SELECT count(*) FROM muted_conversations WHERE conversation_id = :id),"
            " (SELECT count(*) FROM in_app_notifications WHERE conversation_id = :id)"
        ),
        {"id": conversation_id},
    ).one()
    return {"participants_deleted": row[0], "mutes_deleted": row[1], "in_app_notifications_deleted": row[2]}


def delete_conversation_notifications(session: Session, conversation_id: uuid.UUID, limit: int) -> int:
    """At most ``limit`` in-app notifications referring to the conversation."""
    return _count(
        session,
        "DELETE FROM in_app_notifications WHERE id IN (SELECT id FROM in_app_notifications"
        " WHERE conversation_id = :id LIMIT :limit FOR UPDATE SKIP LOCKED)",
        id=conversation_id,
        limit=limit,
    )


def delete_conversation(session: Session, conversation_id: uuid.UUID) -> dict[str, int]:
    """Once its messages and notifications are gone: its search rows (none should be left), mutes,
    participants, then the row itself."""
    params = {"id": conversation_id}
    return {
        "search_entries_deleted": _count(
            session, "DELETE FROM message_search WHERE conversation_id = :id", **params
        ),
        "mutes_deleted": _count(
            session, "DELETE FROM muted_conversations WHERE conversation_id = :id", **params
        ),
        "participants_deleted": _count(
            session, "DELETE FROM conversation_participants WHERE conversation_id = :id", **params
        ),
        "conversations_purged": _count(session, "DELETE FROM conversations WHERE id = :id", **params),
    }


# --- attachments -----------------------------------------------------------------------------------------


def pick_expired_attachments(
    session: Session, now: datetime, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[Any]:
    """(id, storage_key) of attachments past ``expires_at`` or marked deleted, by id after ``after``."""
    statement = text(
        _keyset(
            "SELECT id, storage_key FROM attachments WHERE (expires_at < :now OR deleted_at IS NOT NULL)"
            " AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) ORDER BY id LIMIT :limit",
            after,
        )
        + (" FOR UPDATE SKIP LOCKED" if lock else "")
    )
    return list(session.execute(statement, {"now": now, "after": after, "limit": limit}).all())


def delete_attachment_rows(session: Session, ids: list[uuid.UUID]) -> int:
    """The rows whose objects are gone (still expired or deleted: a row renewed meanwhile stays)."""
    return _count(
        session,
        "DELETE FROM attachments WHERE id = ANY(:ids) AND (expires_at < now() OR deleted_at IS NOT NULL)",
        _ids("ids", ids),
    )


def known_storage_keys(session: Session, keys: list[str]) -> set[str]:
    """Those of ``keys`` that an attachments row names (one statement, at most one listed page of keys)."""
    if not keys:
        return set()
    statement = text("SELECT storage_key FROM attachments WHERE storage_key = ANY(:keys)").bindparams(
        bindparam("keys", keys, type_=_TEXT_ARRAY)
    )
    return set(session.execute(statement).scalars())


# --- housekeeping ----------------------------------------------------------------------------------------


def pick_inbox_rows(
    session: Session, completed_before: datetime, after: uuid.UUID | None, limit: int, *, lock: bool
) -> list[uuid.UUID]:
    return _pick(
        session,
        "SELECT job_id FROM job_inbox WHERE completed_at < :completed_before"
        " AND (CAST(:after AS uuid) IS NULL OR job_id > CAST(:after AS uuid)) ORDER BY job_id LIMIT :limit",
        lock=lock,
        completed_before=completed_before,
        after=after,
        limit=limit,
    )


def delete_inbox_rows(session: Session, ids: list[uuid.UUID]) -> int:
    return _count(session, "DELETE FROM job_inbox WHERE job_id = ANY(:ids)", _ids("ids", ids))


def pick_failures(
    session: Session, failed_before: datetime, after: int | None, limit: int, *, lock: bool
) -> list[int]:
    return _pick(
        session,
        "SELECT id FROM job_failures WHERE last_failed_at < :failed_before"
        " AND (CAST(:after AS bigint) IS NULL OR id > CAST(:after AS bigint)) ORDER BY id LIMIT :limit",
        lock=lock,
        failed_before=failed_before,
        after=after,
        limit=limit,
    )


def delete_failures(session: Session, ids: list[int]) -> int:
    return _count(
        session, "DELETE FROM job_failures WHERE id = ANY(:ids)", bindparam("ids", ids, type_=_BIGINT_ARRAY)
    )
