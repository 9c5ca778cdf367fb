"""Every query of batch fan-out (docs/contracts.md §5 batch-message): a constant number of statements per
chunk whatever its size (arrays bound as one parameter and ``unnest``-ed, never a statement per recipient).

The ledger is ``batch_jobs``: one row per recipient, keyed by the recipient's deterministic send-message job
id. Counts derive from it; ``message_batches`` holds a snapshot of them that :func:`refresh` writes, so the
batch row is only ever written by the batch's own (sequential) chunks and by a cancel, never by the
send-message jobs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import LargeBinary, String, and_, any_, bindparam, case, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.orm import Session

from shared.db.models import (
    UUID_ARRAY,
    BatchJob,
    Conversation,
    ConversationParticipant,
    Message,
    MessageBatch,
    User,
)
from shared.services.batches.sealing import SealedContent

_IDS = UUID(as_uuid=True)
OUTSTANDING = ("pending", "queued")


def lock_batch(session: Session, batch_id: uuid.UUID) -> Any:
    """The batch row, locked until commit (a cancel waits for the chunk in progress, and vice versa)."""
    return session.execute(
        select(MessageBatch).where(MessageBatch.id == batch_id).with_for_update()
    ).scalar_one_or_none()


def create_batch(
    session: Session,
    batch_id: uuid.UUID,
    sender_id: uuid.UUID,
    total: int,
    content_type: str,
    sealed: SealedContent,
) -> bool:
    """Insert the batch (with its sealed content) if its sender exists and is not deleted; False if it did
    not (unknown sender)."""
    created = session.execute(
        insert(MessageBatch)
        .from_select(
            [
                "id",
                "sender_id",
                "total",
                "status",
                "content_type",
                "content_ciphertext",
                "content_nonce",
                "content_wrapped_key",
                "content_kms_key_id",
            ],
            select(
                literal(batch_id, _IDS),
                User.id,
                literal(total),
                literal("running"),
                literal(content_type, String),
                literal(sealed.ciphertext, LargeBinary),
                literal(sealed.nonce, LargeBinary),
                literal(sealed.wrapped_key, LargeBinary),
                literal(sealed.kms_key_id, String),
            ).where(User.id == sender_id, User.deleted_at.is_(None)),
        )
        .on_conflict_do_nothing()
        .returning(MessageBatch.id)
    ).one_or_none()
    return created is not None


def insert_ledger(
    session: Session,
    batch_id: uuid.UUID,
    job_ids: list[uuid.UUID],
    recipient_ids: list[uuid.UUID],
    message_ids: list[uuid.UUID],
    attempt: int = 0,
) -> None:
    """One ``pending`` row per recipient (the three lists are parallel), of the batch's ``attempt``."""
    session.execute(
        insert(BatchJob)
        .from_select(
            ["batch_id", "job_id", "recipient_id", "message_id", "status", "attempt"],
            select(
                literal(batch_id, _IDS),
                func.unnest(bindparam("job_ids", job_ids, type_=UUID_ARRAY)),
                func.unnest(bindparam("recipient_ids", recipient_ids, type_=UUID_ARRAY)),
                func.unnest(bindparam("message_ids", message_ids, type_=UUID_ARRAY)),
                literal("pending"),
                literal(attempt),
            ),
        )
        .on_conflict_do_nothing()
    )


def resolve_recipients(session: Session, sender_id: uuid.UUID, recipient_ids: list[uuid.UUID]) -> list[Any]:
    """For each recipient: ``recipient_id``, ``known`` (exists, not deleted) and ``conversation_id``, the
    oldest undeleted direct conversation in which both the sender and the recipient are still participants
    (None if there is none). One statement."""
    wanted = (
        func.unnest(bindparam("recipient_ids", recipient_ids, type_=UUID_ARRAY))
        .table_valued("id")
        .render_derived(name="wanted")
    )
    mine = ConversationParticipant.__table__.alias("mine")
    theirs = ConversationParticipant.__table__.alias("theirs")
    direct = (
        select(Conversation.id)
        .join(theirs, theirs.c.conversation_id == Conversation.id)
        .join(mine, mine.c.conversation_id == Conversation.id)
        .where(
            theirs.c.user_id == wanted.c.id,
            theirs.c.left_at.is_(None),
            mine.c.user_id == sender_id,
            mine.c.left_at.is_(None),
            Conversation.kind == "direct",
            Conversation.deleted_at.is_(None),
        )
        .order_by(Conversation.created_at, Conversation.id)
        .limit(1)
        .correlate(wanted)
        .scalar_subquery()
    )
    return list(
        session.execute(
            select(
                wanted.c.id.label("recipient_id"),
                (User.id.is_not(None)).label("known"),
                direct.label("conversation_id"),
            )
            .select_from(wanted)
            .outerjoin(User, and_(User.id == wanted.c.id, User.deleted_at.is_(None)))
        ).all()
    )


def create_direct_conversations(
    session: Session, sender_id: uuid.UUID, conversation_ids: list[uuid.UUID], recipient_ids: list[uuid.UUID]
) -> None:
    """Direct conversations (ids chosen by the caller, one per recipient) of the sender with each recipient,
    with both participants. Two statements whatever the number; an id that exists already is left as it is."""
    if not conversation_ids:
        return
    session.execute(
        insert(Conversation)
        .from_select(
            ["id", "kind"],
            select(func.unnest(bindparam("ids", conversation_ids, type_=UUID_ARRAY)), literal("direct")),
        )
        .on_conflict_do_nothing()
    )
    session.execute(
        insert(ConversationParticipant)
        .from_select(
            ["conversation_id", "user_id"],
            select(
                func.unnest(bindparam("conversations", conversation_ids * 2, type_=UUID_ARRAY)),
                func.unnest(
                    bindparam("users", [sender_id] * len(recipient_ids) + recipient_ids, type_=UUID_ARRAY)
                ),
            ),
        )
        .on_conflict_do_nothing()
    )


def settle_chunk(
    session: Session,
    batch_id: uuid.UUID,
    job_ids: list[uuid.UUID],
    statuses: list[str],
    errors: list[str | None],
) -> list[uuid.UUID]:
    """Move the chunk's ``pending`` rows to ``queued`` or ``failed`` (with the error); returns the job ids
    turned ``queued`` (a row already past ``pending``, e.g. a duplicate recipient, is left alone)."""
    if not job_ids:
        return []
    values = (
        func.unnest(
            bindparam("job_ids", job_ids, type_=UUID_ARRAY),
            bindparam("statuses", statuses, type_=ARRAY(String)),
            bindparam("errors", errors, type_=ARRAY(String)),
        )
        .table_valued("job_id", "status", "error")
        .render_derived(name="chunk")
    )
    rows = session.execute(
        update(BatchJob)
        .where(
            BatchJob.batch_id == batch_id,
            BatchJob.job_id == values.c.job_id,
            BatchJob.status == "pending",
        )
        .values(status=values.c.status, error=values.c.error, updated_at=func.now())
        .returning(BatchJob.job_id, BatchJob.status),
        execution_options={"synchronize_session": False},
    ).all()
    return [row.job_id for row in rows if row.status == "queued"]


def fail_jobs(session: Session, batch_id: uuid.UUID, job_ids: list[uuid.UUID] | None, error: str) -> int:
    """Count ``failed`` (with ``error``) the batch's rows still outstanding: those of ``job_ids``, or all."""
    condition = [BatchJob.batch_id == batch_id, BatchJob.status.in_(OUTSTANDING)]
    if job_ids is not None:
        condition.append(BatchJob.job_id.in_(job_ids))
    result = session.execute(
        update(BatchJob)
        .where(*condition)
        .values(status="failed", error=error, updated_at=func.now())
        .returning(BatchJob.job_id),
        execution_options={"synchronize_session": False},
    ).all()
    return len(result)


def failed_rows(session: Session, batch_id: uuid.UUID) -> list[Any]:
    """The batch's ``failed`` rows that name their recipient (``recipient_id``, ``job_id``, ``message_id``),
    in recipient order: what a retry sends again. A row without a recipient (a job dead-lettered before it
    was known) cannot be retried and stays failed."""
    return list(
        session.execute(
            select(BatchJob.recipient_id, BatchJob.job_id, BatchJob.message_id)
            .where(
                BatchJob.batch_id == batch_id,
                BatchJob.status == "failed",
                BatchJob.recipient_id.is_not(None),
            )
            .order_by(BatchJob.recipient_id)
        ).all()
    )


def supersede(session: Session, batch_id: uuid.UUID, job_ids: list[uuid.UUID]) -> int:
    """Turn these ``failed`` rows ``retried``: they count nowhere, and a late outcome of their job id (e.g. a
    redriven dead letter) moves nothing, since send-message only settles ``pending``/``queued``/``failed``."""
    return len(
        session.execute(
            update(BatchJob)
            .where(
                BatchJob.batch_id == batch_id,
                BatchJob.job_id == func.any(bindparam("job_ids", job_ids, type_=UUID_ARRAY)),
                BatchJob.status == "failed",
            )
            .values(status="retried", updated_at=func.now())
            .returning(BatchJob.job_id),
            execution_options={"synchronize_session": False},
        ).all()
    )


def start_attempt(session: Session, batch_id: uuid.UUID, attempt: int) -> None:
    """The batch runs again, as retry ``attempt``: not completed, its chunks not yet all enqueued."""
    session.execute(
        update(MessageBatch)
        .where(MessageBatch.id == batch_id)
        .values(
            status="running", attempts=attempt, completed_at=None, enqueued_at=None, updated_at=func.now()
        ),
        execution_options={"synchronize_session": False},
    )


def settle_delivered(session: Session, batch_id: uuid.UUID) -> int:
    """Count ``sent`` the outstanding rows whose message exists: a retried recipient whose earlier job was
    delivered after all (e.g. redriven). Its retry job then stores nothing (same message id), and
    send-message does not count a job whose message already exists, so without this the row would wait for
    the settle timeout. One statement."""
    return len(
        session.execute(
            update(BatchJob)
            .where(
                BatchJob.batch_id == batch_id,
                BatchJob.status.in_(OUTSTANDING),
                exists().where(Message.id == BatchJob.message_id),
            )
            .values(status="sent", error=None, updated_at=func.now())
            .returning(BatchJob.job_id),
            execution_options={"synchronize_session": False},
        ).all()
    )


def sealed_content(session: Session, batch_id: uuid.UUID) -> Any:
    """The batch's sealed content columns (``id``, ``content_*``), or None if there is no such batch."""
    return session.execute(
        select(
            MessageBatch.id,
            MessageBatch.content_ciphertext,
            MessageBatch.content_nonce,
            MessageBatch.content_wrapped_key,
            MessageBatch.content_kms_key_id,
        ).where(MessageBatch.id == batch_id)
    ).one_or_none()


_CONTENT_CLEARED = {
    "content_ciphertext": None,
    "content_nonce": None,
    "content_wrapped_key": None,
    "content_kms_key_id": None,
}


def forget_content(session: Session, batch_id: uuid.UUID) -> None:
    """Clear the batch's sealed content (and its wrapped key): no retry can need it any more."""
    session.execute(
        update(MessageBatch)
        .where(MessageBatch.id == batch_id, MessageBatch.content_ciphertext.is_not(None))
        .values(**_CONTENT_CLEARED),
        execution_options={"synchronize_session": False},
    )


def forget_content_of(session: Session, batch_ids: list[uuid.UUID]) -> int:
    """Clear the sealed content of the finished batches among ``batch_ids`` (cleanup picks them, bounded and
    locked); returns how many were cleared."""
    listed = any_(bindparam("batch_ids", batch_ids, type_=UUID_ARRAY))
    result: Any = session.execute(
        update(MessageBatch)
        .where(MessageBatch.id == listed, MessageBatch.status != "running")
        .values(**_CONTENT_CLEARED),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)


def cancel_pending(session: Session, batch_id: uuid.UUID) -> None:
    session.execute(
        update(BatchJob)
        .where(BatchJob.batch_id == batch_id, BatchJob.status == "pending")
        .values(status="cancelled", updated_at=func.now()),
        execution_options={"synchronize_session": False},
    )


def mark_cancelled(session: Session, batch_id: uuid.UUID) -> bool:
    """A running batch becomes ``cancelled``; False if it is not running (or does not exist)."""
    row = session.execute(
        update(MessageBatch)
        .where(MessageBatch.id == batch_id, MessageBatch.status == "running")
        .values(status="cancelled", cancelled_at=func.now(), completed_at=func.now(), updated_at=func.now())
        .returning(MessageBatch.id),
        execution_options={"synchronize_session": False},
    ).one_or_none()
    return row is not None


@dataclass(frozen=True)
class Counts:
    id: uuid.UUID
    sender_id: uuid.UUID
    status: str
    total: int
    pending: int
    queued: int
    sent: int
    failed: int
    cancelled: int
    created_at: Any
    completed_at: Any
    enqueued_at: Any


def _tally(batch_id: Any) -> Any:
    def count(status: str) -> Any:
        return func.count().filter(BatchJob.status == status)

    return (
        select(
            literal(batch_id, _IDS).label("batch_id"),
            count("pending").label("pending"),
            count("queued").label("queued"),
            count("sent").label("sent"),
            count("failed").label("failed"),
            count("cancelled").label("cancelled"),
        )
        .where(BatchJob.batch_id == batch_id)
        .subquery("tally")
    )


def refresh(session: Session, batch_id: uuid.UUID, *, all_enqueued: bool) -> Counts:
    """Write the batch's counts (derived from its rows) into its row, in one statement. With
    ``all_enqueued`` (every chunk is done): note when, and complete a running batch that has no outstanding
    row, i.e. once ``sent + failed + cancelled`` reaches ``total`` (``completed``, or
    ``completed_with_failures`` if any failed)."""
    tally = _tally(batch_id)
    settled = and_(
        literal(all_enqueued),
        tally.c.sent + tally.c.failed + tally.c.cancelled >= MessageBatch.total,
        MessageBatch.status == "running",
    )
    final = case((tally.c.failed > 0, "completed_with_failures"), else_="completed")
    row = session.execute(
        update(MessageBatch)
        .where(MessageBatch.id == tally.c.batch_id)
        .values(
            queued=tally.c.queued,
            sent=tally.c.sent,
            failed=tally.c.failed,
            cancelled=tally.c.cancelled,
            updated_at=func.now(),
            enqueued_at=func.coalesce(
                MessageBatch.enqueued_at, case((literal(all_enqueued), func.now()), else_=None)
            ),
            status=case((settled, final), else_=MessageBatch.status),
            completed_at=case((settled, func.now()), else_=MessageBatch.completed_at),
        )
        .returning(
            MessageBatch.id,
            MessageBatch.sender_id,
            MessageBatch.status,
            MessageBatch.total,
            tally.c.pending,
            MessageBatch.queued,
            MessageBatch.sent,
            MessageBatch.failed,
            MessageBatch.cancelled,
            MessageBatch.created_at,
            MessageBatch.completed_at,
            MessageBatch.enqueued_at,
        ),
        execution_options={"synchronize_session": False},
    ).one()
    return Counts(**row._asdict())


def counts(session: Session, batch_id: uuid.UUID) -> Counts | None:
    """The batch with counts derived from its rows now (not the snapshot); None if there is no such batch."""
    tally = _tally(batch_id)
    row = session.execute(
        select(
            MessageBatch.id,
            MessageBatch.sender_id,
            MessageBatch.status,
            MessageBatch.total,
            tally.c.pending,
            tally.c.queued,
            tally.c.sent,
            tally.c.failed,
            tally.c.cancelled,
            MessageBatch.created_at,
            MessageBatch.completed_at,
            MessageBatch.enqueued_at,
        )
        .select_from(MessageBatch)
        .join(tally, tally.c.batch_id == MessageBatch.id)
    ).one_or_none()
    return None if row is None else Counts(**row._asdict())


def recipients(session: Session, batch_id: uuid.UUID) -> list[Any]:
    """The batch's ledger, one row per recipient (recipient, job, message, status, error, attempt): rows a
    retry superseded (``retried``) are left out."""
    return list(
        session.execute(
            select(
                BatchJob.recipient_id,
                BatchJob.job_id,
                BatchJob.message_id,
                BatchJob.status,
                BatchJob.error,
                BatchJob.attempt,
            ).where(BatchJob.batch_id == batch_id, BatchJob.status != "retried")
        ).all()
    )
