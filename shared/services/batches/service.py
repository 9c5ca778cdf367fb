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
* The first job seals the content into the batch row (sealing.py), so that :func:`retry_failed` can send it
  again to the failed recipients without the producer; it is cleared once no retry can need it (completed
  without failures, cancelled, or by cleanup). A retry is the same chunk machinery run as ``attempt`` n over
  the failed recipients only, with job ids of its own.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from shared.errors import ConflictingJob, EncryptionKeyUnavailable, SealedContentRefused, UnknownEntity
from shared.jobs import BATCH_MESSAGE, SEND_MESSAGE, BatchMessageData, Job, SendMessageData
from shared.observability import logger, metrics
from shared.runtime.effects import Effect
from shared.services.batches import repository
from shared.services.batches.errors import BatchNotRetryable
from shared.services.batches.repository import Counts
from shared.services.batches.sealing import open_content, seal_content
from shared.services.connections.broadcast import Broadcast, broadcast
from shared.services.connections.gateway import connections_api
from shared.services.queues import EnqueueJobs, send_jobs, send_jobs_reporting

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

# Why a recipient failed (batch_jobs.error): codes, never content.
UNKNOWN_RECIPIENT = "unknown-recipient"
SENDER_IS_RECIPIENT = "sender-is-recipient"
ENQUEUE_FAILED = "enqueue-failed"
NO_OUTCOME = "no-outcome"
CONTENT_UNAVAILABLE = "content-unavailable"


def send_job_id(batch_id: uuid.UUID, recipient_id: uuid.UUID, attempt: int = 0) -> uuid.UUID:
    """The send-message job of one recipient of a batch: the same whichever chunk job enqueues it. Each retry
    ``attempt`` has its own, so the send-message inbox does not take a retry for the failed first job."""
    name = f"send-message/{recipient_id}" if attempt == 0 else f"send-message/{recipient_id}/retry/{attempt}"
    return uuid.uuid5(batch_id, name)


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
        _start(data, session, deps)
        before: tuple[int, ...] = (0, 0, 0, 0)
    elif _goes_on(data, batch):
        before = (batch.queued, batch.sent, batch.failed, batch.cancelled)
    else:
        return []

    cursor = data.cursor or 0
    chunk = data.recipient_ids[cursor : cursor + data.chunk_size]
    next_cursor = min(cursor + data.chunk_size, len(data.recipient_ids))
    sends = _enqueue_chunk(job, session, chunk) if chunk else None
    all_enqueued = next_cursor >= len(data.recipient_ids)
    if all_enqueued and data.attempt > 0:
        repository.settle_delivered(session, data.batch_id)
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
        if counts.status != "completed_with_failures":  # only a batch with failures can be retried
            repository.forget_content(session, data.batch_id)
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


def _start(data: BatchMessageData, session: Session, deps: Dependencies) -> None:
    """Create the batch (its content sealed at rest) and its ledger: one ``pending`` row per recipient."""
    if data.cursor is not None:
        raise UnknownEntity("the batch of this continuation does not exist")
    distinct = list(dict.fromkeys(data.recipient_ids))
    assert data.content is not None  # the model requires it of a first job
    sealed = seal_content(deps.aws, deps.settings, data.batch_id, data.content)
    if not repository.create_batch(
        session, data.batch_id, data.sender_id, len(distinct), data.content_type, sealed
    ):
        raise UnknownEntity("the sender does not exist or is deleted")
    repository.insert_ledger(
        session,
        data.batch_id,
        [send_job_id(data.batch_id, r) for r in distinct],
        distinct,
        [message_id(data.batch_id, r) for r in distinct],
    )


def _goes_on(data: BatchMessageData, batch: Any) -> bool:
    """Whether a job for an existing batch does its chunk: a continuation of the attempt now running."""
    if batch.sender_id != data.sender_id:
        raise ConflictingJob("batch_id already belongs to another sender")
    if data.cursor is None:
        logger.info("batch already started: a resent first job changes nothing")
        return False
    if batch.status != "running":
        logger.info("batch is no longer running: its continuation stops", extra={"status": batch.status})
        return False
    if data.attempt != batch.attempts:
        logger.info(
            "a job of another attempt of the batch stops",
            extra={"attempt": data.attempt, "running": batch.attempts},
        )
        return False
    return True


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
    job_ids = {r: send_job_id(data.batch_id, r, data.attempt) for r in distinct}
    queued = set(repository.settle_chunk(session, data.batch_id, list(job_ids.values()), statuses, errors))
    targets = [
        SendTarget(
            recipient_id=r,
            conversation_id=resolved[r].conversation_id or direct_conversation_id(data.sender_id, r),
        )
        for r in distinct
        if job_ids[r] in queued
    ]
    if not targets:
        return None
    return EnqueueBatchSends(
        batch_id=data.batch_id,
        sender_id=data.sender_id,
        content=data.content,
        content_type=data.content_type,
        targets=targets,
        attempt=data.attempt,
    )


class SendTarget(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    recipient_id: uuid.UUID
    conversation_id: uuid.UUID


class EnqueueBatchSends(Effect):
    """Send the chunk's send-message jobs (SendMessageBatch, failed entries retried); an entry SQS keeps
    refusing is counted failed (``enqueue-failed``) in the same transaction that records the effect done.
    The content is stored once here, not once per job; a retry's (``content`` None) is not stored at all: it
    is opened from the batch's sealed content when performed (a batch whose content is gone by then, e.g.
    cancelled meanwhile, counts these recipients failed, ``content-unavailable``). Every retry keeps the
    recipient's ``message_id``, so a recipient gets at most one message of the batch whatever the attempts."""

    kind: Literal["batch.sends"] = "batch.sends"
    batch_id: uuid.UUID
    sender_id: uuid.UUID
    content: str | None
    content_type: str
    targets: list[SendTarget]
    attempt: int = 0

    def jobs(self, parent: Job[Any], content: str | None = None) -> list[Job[SendMessageData]]:
        text = content if content is not None else self.content
        if text is None:
            raise ValueError("a retry's sends need the batch's opened content")
        return [
            SEND_MESSAGE.new(
                SendMessageData(
                    message_id=message_id(self.batch_id, target.recipient_id),
                    conversation_id=target.conversation_id,
                    sender_id=self.sender_id,
                    content=text,
                    content_type=self.content_type,
                    recipient_ids=[target.recipient_id],
                    batch_id=self.batch_id,
                ),
                job_id=send_job_id(self.batch_id, target.recipient_id, self.attempt),
                correlation_id=parent.follow_up_correlation_id,
            )
            for target in self.targets
        ]

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        content = self.content
        if content is None:
            try:
                content = _open_batch_content(session, deps, self.batch_id)
            except (EncryptionKeyUnavailable, SealedContentRefused) as exc:
                ids = [send_job_id(self.batch_id, t.recipient_id, self.attempt) for t in self.targets]
                refused = repository.fail_jobs(session, self.batch_id, ids, CONTENT_UNAVAILABLE)
                logger.warning(
                    "retry sends counted failed: the batch's content does not open",
                    extra={"count": refused, "error_class": type(exc).__name__},
                )
                return []
        outcome = send_jobs_reporting(
            deps.aws.sqs(), deps.settings.queue_url(SEND_MESSAGE), SEND_MESSAGE, self.jobs(job, content)
        )
        metrics.add_metric(name="BatchSqsCalls", unit=MetricUnit.Count, value=outcome.calls)
        if outcome.failed:
            codes = sorted(set(outcome.failed.values()))
            refused = repository.fail_jobs(session, self.batch_id, list(outcome.failed), ENQUEUE_FAILED)
            logger.warning(
                "send-message jobs refused by SQS counted failed", extra={"count": refused, "codes": codes}
            )
        return []


def _open_batch_content(session: Session, deps: Dependencies, batch_id: uuid.UUID) -> str:
    sealed = repository.sealed_content(session, batch_id)
    if sealed is None:
        raise EncryptionKeyUnavailable(f"batch {batch_id} no longer exists")
    return open_content(deps.aws, sealed)


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
            repository.forget_content(uow.session, batch_id)
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


def retry_failed(
    deps: Dependencies,
    batch_id: uuid.UUID,
    *,
    chunk_size: int = 100,
    chunk_delay_seconds: int = 0,
) -> dict[str, Any] | None:
    """Send the batch's content again to its failed recipients only (the management API's
    ``POST /batches/{id}/retry``); returns the batch (§6 object, ``running`` again), or None if there is no
    such batch. Raises :class:`BatchNotRetryable` (nothing changed) if the batch is running, cancelled, has
    no failed recipient, or no longer keeps its content.

    The content comes from the batch itself, sealed at rest when it started, not from the caller: an
    operator can retry without the original producer (which may be gone, or may no longer have the text),
    and a retry can only ever send what the recipients' batch said, never new text under an old batch id.

    Each failed row is superseded (``retried``) by a ``pending`` row of retry ``attempt`` n, with job id
    UUIDv5(batch_id, ``send-message/<recipient>/retry/<n>``) and the same ``message_id``: a redelivered
    retry chunk enqueues nobody twice, the send-message inbox does not take the retry for the failed first
    job, and a recipient still gets at most one message. Then the batch is ``running`` again and one
    ``batch-message`` job (``attempt`` n, no ``content``, ``cursor`` 0, the failed recipients) runs the usual
    chunks, frames and completion over just those; an unknown or deleted recipient fails again. That job is
    sent before the commit, with a random id: if the commit fails it finds the batch at another attempt and
    stops, and calling again is not swallowed by the inbox as a duplicate; if the send fails nothing
    changes."""
    with deps.unit_of_work() as uow:
        session = uow.session
        batch = repository.lock_batch(session, batch_id)
        if batch is None:
            return None
        if batch.status in ("running", "cancelled"):
            raise BatchNotRetryable(batch.status, f"batch {batch_id} is {batch.status}: nothing to retry")
        failed = repository.failed_rows(session, batch_id)
        if not failed:
            raise BatchNotRetryable("no-failed-recipients", f"batch {batch_id} has no failed recipient")
        if batch.content_ciphertext is None:
            raise BatchNotRetryable("content-not-kept", f"batch {batch_id} no longer keeps its content")
        attempt = batch.attempts + 1
        recipients = [row.recipient_id for row in failed]
        head = BATCH_MESSAGE.new(
            BatchMessageData(
                batch_id=batch_id,
                sender_id=batch.sender_id,
                content_type=batch.content_type or "text",
                recipient_ids=recipients,
                chunk_size=chunk_size,
                chunk_delay_seconds=chunk_delay_seconds,
                cursor=0,
                attempt=attempt,
            ),
            job_id=uuid.uuid4(),
        )
        repository.supersede(session, batch_id, [row.job_id for row in failed])
        repository.insert_ledger(
            session,
            batch_id,
            [send_job_id(batch_id, r, attempt) for r in recipients],
            recipients,
            [row.message_id for row in failed],
            attempt,
        )
        repository.start_attempt(session, batch_id, attempt)
        counts = repository.refresh(session, batch_id, all_enqueued=False)
        send_jobs(deps.aws.sqs(), deps.settings.queue_url(BATCH_MESSAGE), BATCH_MESSAGE, [head])
        uow.commit()
    logger.info("batch retry started", extra={"attempt": attempt, "recipients": len(recipients)})
    metrics.add_metric(name="BatchRetries", unit=MetricUnit.Count, value=1)
    return view(counts)


def forget_finished_content(session: Session, batch_ids: list[uuid.UUID]) -> int:
    """Clear the sealed content of the finished batches among ``batch_ids``: cleanup's
    ``housekeeping/batch-content`` picks those finished longer than CLEANUP_BATCH_CONTENT_RETENTION_DAYS
    ago (a batch completed with failures keeps its content only so long, for a retry); returns how many."""
    return repository.forget_content_of(session, batch_ids)


__all__ = [
    "EnqueueBatchSends",
    "batch_message",
    "cancel_batch",
    "forget_finished_content",
    "get_batch",
    "retry_failed",
]
