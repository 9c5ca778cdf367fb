"""batch-message (docs/contracts.md §5): fan one message out to up to 5,000 recipients, one chunk per
invocation, each recipient through its own send-message job in a direct conversation with the sender.

* The first job (no ``cursor``) creates the batch and its ledger: one ``batch_jobs`` row per distinct
  recipient, keyed by the recipient's deterministic send-message job id (UUIDv5 of the batch id), so a
  redelivered or resent chunk enqueues nobody twice (SQS de-duplicates the FIFO send within 5 minutes, the
  send-message inbox after that).
* Each job handles ``recipient_ids[cursor : cursor + chunk_size]`` in a constant number of statements: the
  recipients and their direct conversations in one query, the missing conversations created (two), the rows
  turned ``queued`` or ``failed`` (unknown or deleted recipients, the sender itself) in one, the counts
  refreshed in one. After commit the send-message jobs go out with SendMessageBatch; an entry SQS keeps
  refusing is counted failed (``enqueue-failed``).
* The continuation (cursor moved on) is enqueued with ``DelaySeconds = chunk_delay_seconds``; nothing
  sleeps. Once every chunk is enqueued, continuations keep checking (every BATCH_SETTLE_CHECK_SECONDS) until
  every recipient has an outcome, then the batch completes; recipients still without one
  BATCH_SETTLE_TIMEOUT_SECONDS after the last chunk are counted failed (``no-outcome``): a batch always
  ends.
* The sender's connections get one ``batch.progress`` frame per chunk (and per check in which the counts
  moved), then one ``batch.completed``; the summary is logged and emitted as metrics.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from shared.errors import ConflictingJob, UnknownEntity
from shared.jobs import BATCH_MESSAGE, SEND_MESSAGE, BatchMessageData, Job, SendMessageData
from shared.observability import logger, metrics
from shared.runtime.effects import Effect
from shared.services.batches import repository
from shared.services.batches.repository import Counts
from shared.services.connections.broadcast import Broadcast, broadcast
from shared.services.connections.gateway import connections_api
from shared.services.queues import EnqueueJobs, send_jobs_reporting

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

# Why a recipient failed (batch_jobs.error): codes, never content.
UNKNOWN_RECIPIENT = "unknown-recipient"
SENDER_IS_RECIPIENT = "sender-is-recipient"
ENQUEUE_FAILED = "enqueue-failed"
NO_OUTCOME = "no-outcome"


def send_job_id(batch_id: uuid.UUID, recipient_id: uuid.UUID) -> uuid.UUID:
    """The send-message job of one recipient of a batch: the same whichever chunk job enqueues it."""
    return uuid.uuid5(batch_id, f"send-message/{recipient_id}")


def message_id(batch_id: uuid.UUID, recipient_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(batch_id, f"message/{recipient_id}")


def direct_conversation_id(sender_id: uuid.UUID, recipient_id: uuid.UUID) -> uuid.UUID:
    """The id batch fan-out gives a direct conversation it creates: the same for both orders of the pair, so
    two batches creating the same conversation at once converge on one row."""
    low, high = sorted((sender_id, recipient_id), key=str)
    return uuid.uuid5(low, f"direct/{high}")


def batch_message(job: Job[BatchMessageData], session: Session, deps: Dependencies) -> list[Effect]:
    """Handle one chunk of the batch (or, once every chunk is enqueued, check whether it has settled)."""
    data = job.data
    batch = repository.lock_batch(session, data.batch_id)
    if batch is None:
        if data.cursor is not None:
            raise UnknownEntity("the batch of this continuation does not exist")
        distinct = list(dict.fromkeys(data.recipient_ids))
        if not repository.create_batch(session, data.batch_id, data.sender_id, len(distinct)):
            raise UnknownEntity("the sender does not exist or is deleted")
        repository.insert_ledger(
            session,
            data.batch_id,
            [send_job_id(data.batch_id, r) for r in distinct],
            distinct,
            [message_id(data.batch_id, r) for r in distinct],
        )
        before: tuple[int, ...] = (0, 0, 0, 0)
    else:
        if batch.sender_id != data.sender_id:
            raise ConflictingJob("batch_id already belongs to another sender")
        if data.cursor is None:
            logger.info("batch already started: a resent first job changes nothing")
            return []
        if batch.status != "running":
            logger.info("batch is no longer running: its continuation stops", extra={"status": batch.status})
            return []
        before = (batch.queued, batch.sent, batch.failed, batch.cancelled)

    cursor = data.cursor or 0
    chunk = data.recipient_ids[cursor : cursor + data.chunk_size]
    next_cursor = min(cursor + data.chunk_size, len(data.recipient_ids))
    sends = _enqueue_chunk(job, session, chunk) if chunk else None
    all_enqueued = next_cursor >= len(data.recipient_ids)
    counts = repository.refresh(session, data.batch_id, all_enqueued=all_enqueued)
    settings = deps.settings
    if (
        counts.status == "running"
        and all_enqueued
        and counts.enqueued_at is not None
        and datetime.now(UTC) - counts.enqueued_at > timedelta(seconds=settings.batch_settle_timeout_seconds)
    ):
        stuck = repository.fail_jobs(session, data.batch_id, None, NO_OUTCOME)
        logger.warning("batch recipients without an outcome counted failed", extra={"count": stuck})
        counts = repository.refresh(session, data.batch_id, all_enqueued=True)

    effects: list[Effect] = [sends] if sends is not None else []
    if counts.status != "running":
        _summarise(counts)
        effects.append(Broadcast(user_ids=[data.sender_id], frames=[frame("batch.completed", counts)]))
        return effects
    if chunk or (counts.queued, counts.sent, counts.failed, counts.cancelled) != before:
        effects.append(Broadcast(user_ids=[data.sender_id], frames=[frame("batch.progress", counts)]))
    continuation = BATCH_MESSAGE.new(
        data.model_copy(update={"cursor": next_cursor}),
        job_id=job.child_job_id("continuation"),
        correlation_id=job.follow_up_correlation_id,
    )
    delay = data.chunk_delay_seconds if not all_enqueued else settings.batch_settle_check_seconds
    effects.append(EnqueueJobs.of(BATCH_MESSAGE, [continuation], delay_seconds=delay))
    return effects


def _enqueue_chunk(
    job: Job[BatchMessageData], session: Session, chunk: list[uuid.UUID]
) -> EnqueueBatchSends | None:
    data = job.data
    distinct = list(dict.fromkeys(chunk))
    resolved = {
        row.recipient_id: row for row in repository.resolve_recipients(session, data.sender_id, distinct)
    }
    missing = [
        r
        for r in distinct
        if r != data.sender_id and resolved[r].known and resolved[r].conversation_id is None
    ]
    repository.create_direct_conversations(
        session, data.sender_id, [direct_conversation_id(data.sender_id, r) for r in missing], missing
    )
    statuses: list[str] = []
    errors: list[str | None] = []
    for recipient in distinct:
        if recipient == data.sender_id:
            statuses.append("failed")
            errors.append(SENDER_IS_RECIPIENT)
        elif not resolved[recipient].known:
            statuses.append("failed")
            errors.append(UNKNOWN_RECIPIENT)
        else:
            statuses.append("queued")
            errors.append(None)
    queued = set(
        repository.settle_chunk(
            session, data.batch_id, [send_job_id(data.batch_id, r) for r in distinct], statuses, errors
        )
    )
    targets = [
        SendTarget(
            recipient_id=r,
            conversation_id=resolved[r].conversation_id or direct_conversation_id(data.sender_id, r),
        )
        for r in distinct
        if send_job_id(data.batch_id, r) in queued
    ]
    if not targets:
        return None
    return EnqueueBatchSends(
        batch_id=data.batch_id,
        sender_id=data.sender_id,
        content=data.content,
        content_type=data.content_type,
        targets=targets,
    )


class SendTarget(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    recipient_id: uuid.UUID
    conversation_id: uuid.UUID


class EnqueueBatchSends(Effect):
    """Send the chunk's send-message jobs (SendMessageBatch, failed entries retried); an entry SQS keeps
    refusing is counted failed (``enqueue-failed``) in the same transaction that records the effect done.
    The content is stored once here, not once per job."""

    kind: Literal["batch.sends"] = "batch.sends"
    batch_id: uuid.UUID
    sender_id: uuid.UUID
    content: str
    content_type: str
    targets: list[SendTarget]

    def jobs(self, parent: Job[Any]) -> list[Job[SendMessageData]]:
        return [
            SEND_MESSAGE.new(
                SendMessageData(
                    message_id=message_id(self.batch_id, target.recipient_id),
                    conversation_id=target.conversation_id,
                    sender_id=self.sender_id,
                    content=self.content,
                    content_type=self.content_type,
                    recipient_ids=[target.recipient_id],
                    batch_id=self.batch_id,
                ),
                job_id=send_job_id(self.batch_id, target.recipient_id),
                correlation_id=parent.follow_up_correlation_id,
            )
            for target in self.targets
        ]

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        outcome = send_jobs_reporting(
            deps.aws.sqs(), deps.settings.queue_url(SEND_MESSAGE), SEND_MESSAGE, self.jobs(job)
        )
        metrics.add_metric(name="BatchSqsCalls", unit=MetricUnit.Count, value=outcome.calls)
        if outcome.failed:
            codes = sorted(set(outcome.failed.values()))
            refused = repository.fail_jobs(session, self.batch_id, list(outcome.failed), ENQUEUE_FAILED)
            logger.warning(
                "send-message jobs refused by SQS counted failed", extra={"count": refused, "codes": codes}
            )
        return []


def frame(kind: str, counts: Counts) -> dict[str, Any]:
    """A ``batch.progress`` / ``batch.completed`` frame (docs/contracts.md §6)."""
    return {"type": kind, "batch": view(counts)}


def view(counts: Counts) -> dict[str, Any]:
    """The ``batch`` object of §6 (and of the management API's GET /batches/{id})."""
    done = counts.sent + counts.failed + counts.cancelled
    return {
        "id": str(counts.id),
        "status": counts.status,
        "total": counts.total,
        "pending": counts.pending,
        "queued": counts.queued,
        "sent": counts.sent,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "percent": round(100 * done / counts.total, 1) if counts.total else 100.0,
        "started_at": counts.created_at.isoformat(),
        "finished_at": counts.completed_at.isoformat() if counts.completed_at else None,
    }


def _summarise(counts: Counts) -> None:
    summary = view(counts)
    logger.info("batch finished", extra={"batch": summary})
    metrics.add_metric(name="BatchesFinished", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="BatchRecipientsSent", unit=MetricUnit.Count, value=counts.sent)
    metrics.add_metric(name="BatchRecipientsFailed", unit=MetricUnit.Count, value=counts.failed)
    metrics.add_metric(name="BatchRecipientsCancelled", unit=MetricUnit.Count, value=counts.cancelled)


def get_batch(deps: Dependencies, batch_id: uuid.UUID) -> dict[str, Any] | None:
    """The batch as the management API shows it, counts derived from its rows now; None if unknown."""
    with deps.unit_of_work() as uow:
        counts = repository.counts(uow.session, batch_id)
    return None if counts is None else view(counts)


def cancel_batch(deps: Dependencies, batch_id: uuid.UUID) -> dict[str, Any] | None:
    """Cancel a running batch (the management API's POST /batches/{id}/cancel): its recipients not yet
    enqueued are counted ``cancelled`` and its continuation stops; jobs already enqueued still settle. The
    sender's connections get ``batch.completed`` with status ``cancelled``. A batch that is not running is
    returned unchanged; None if there is no such batch."""
    with deps.unit_of_work() as uow:
        batch = repository.lock_batch(uow.session, batch_id)
        if batch is None:
            return None
        cancelled = repository.mark_cancelled(uow.session, batch_id)
        if cancelled:
            repository.cancel_pending(uow.session, batch_id)
            repository.refresh(uow.session, batch_id, all_enqueued=False)
        counts = repository.counts(uow.session, batch_id)
        uow.commit()
    assert counts is not None
    if cancelled:
        _summarise(counts)
        try:
            with deps.unit_of_work() as uow:
                broadcast(
                    uow.session,
                    connections_api(deps),
                    [counts.sender_id],
                    [frame("batch.completed", counts)],
                    deps.settings,
                )
                uow.commit()
        except Exception as exc:  # noqa: BLE001 - the cancel took effect; only the frame is missing
            logger.warning(
                "batch.completed frame of a cancelled batch not posted",
                extra={"error_class": type(exc).__name__},
            )
    return view(counts)


__all__ = ["EnqueueBatchSends", "batch_message", "cancel_batch", "get_batch"]
