"""The SQS job runner every queue handler uses (DESIGN §4).

``run(event, context, job_type=..., handle=...)`` processes one SQS batch with Powertools' partial-batch
processors and returns ``{"batchItemFailures": [...]}``. Per record:

1. the body is validated into the job model (invalid -> permanent failure);
2. one unit of work holds the inbox row (``job_id``) and every database effect of ``handle``; a redelivered
   job commits nothing twice;
3. the external effects ``handle`` returned (WebSocket posts, jobs to enqueue) are stored with the inbox row,
   performed after commit, and whatever is still pending after a failure is redone on redelivery;
4. permanent failures put the original body in the DLQ with error attributes and a ``job_failures`` row,
   then acknowledge the record; anything else is transient: reported in ``batchItemFailures`` with its
   visibility set for exponential backoff with full jitter.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from sqlalchemy import literal_column, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.aws import client
from shared.config import get_settings
from shared.db.models import JobFailure, JobInbox
from shared.db.uow import UnitOfWork
from shared.errors import DeadlineApproaching, PermanentJobError, TransientJobError
from shared.jobs import JobType, parse_job
from shared.observability import logger, metrics
from shared.services.effects import Effect, dump_effects, load_effects, perform_effects

Handle = Callable[[Any, Session], Sequence[Effect]]
OnDeadLetter = Callable[[Any, Session], None]

_SQS_ATTRIBUTE_LIMIT = 10


@dataclass
class _Invocation:
    job_type: JobType
    handle: Handle
    on_dead_letter: OnDeadLetter | None
    context: Any
    transient: dict[str, int] = field(default_factory=dict)  # receipt handle -> attempt, for backoff


def run(
    event: dict[str, Any],
    context: Any,
    *,
    job_type: JobType,
    handle: Handle,
    on_dead_letter: OnDeadLetter | None = None,
) -> dict[str, Any]:
    """Process one SQS event for ``job_type`` jobs; the return value is the Lambda response.

    ``handle(job, session)`` does the job's database work in ``session`` (never commits) and returns the
    external effects to perform after commit. ``on_dead_letter(job, session)`` runs in the transaction that
    records a permanent failure of a parsed job (e.g. to count it in batch progress)."""
    metrics.add_dimension(name="job_type", value=job_type.value)
    invocation = _Invocation(job_type, handle, on_dead_letter, context)
    records = event.get("Records") or []
    fifo = bool(records) and str(records[0].get("eventSourceARN", "")).endswith(".fifo")
    processor: BatchProcessor | SqsFifoPartialProcessor = (
        SqsFifoPartialProcessor(skip_group_on_error=True)
        if fifo
        else BatchProcessor(event_type=EventType.SQS)
    )
    # A batch whose every record failed is still a partial response: the backoff below must apply to it,
    # and raising would make Lambda retry the batch without it.
    processor.raise_on_entire_batch_failure = False
    response = process_partial_response(
        event=event,
        record_handler=lambda record: _process_record(record, invocation),
        processor=processor,
        context=context,
    )
    _back_off(records, invocation.transient)
    return dict(response)


def _process_record(record: SQSRecord, invocation: _Invocation) -> None:
    attempt = int(record.attributes.approximate_receive_count or 1)
    job: Any = None
    try:
        _check_deadline(invocation.context)
        job = parse_job(record.body, invocation.job_type)
        logger.append_keys(
            job_id=str(job.job_id),
            job_type=job.job_type.value,
            correlation_id=job.correlation_id,
            attempt=attempt,
        )
        _execute(job, invocation)
        metrics.add_metric(name="JobAge", unit=MetricUnit.Milliseconds, value=_age_ms(job.created_at))
    except PermanentJobError as exc:
        _dead_letter(record, job, exc, attempt, invocation)
    except Exception as exc:
        _note_transient(record, job, exc, attempt, invocation)
        raise
    finally:
        logger.remove_keys(["job_id", "job_type", "correlation_id", "attempt"])


def _execute(job: Any, invocation: _Invocation) -> None:
    with UnitOfWork() as uow:
        inbox = uow.session.execute(
            insert(JobInbox)
            .values(job_id=job.job_id, job_type=job.job_type.value)
            .on_conflict_do_update(index_elements=[JobInbox.job_id], set_={"job_id": job.job_id})
            # xmax = 0 only on a row this statement inserted (the DO UPDATE also locks a duplicate's row).
            .returning(JobInbox.effects_pending, literal_column("xmax = 0").label("inserted"))
        ).one()
        fresh = bool(inbox.inserted)
        if fresh:
            effects = list(invocation.handle(job, uow.session))
            payload = dump_effects(effects)
            uow.session.execute(
                update(JobInbox)
                .where(JobInbox.job_id == job.job_id)
                .values(effects_pending=payload, completed_at=None if effects else datetime.now(UTC))
            )
            uow.commit()
        else:
            effects = load_effects(inbox.effects_pending)
            uow.commit()
    if not fresh and not effects:
        metrics.add_metric(name="JobsDuplicate", unit=MetricUnit.Count, value=1)
        logger.info("duplicate job acknowledged")
        return
    if effects:
        _perform_after_commit(job, effects)
    metrics.add_metric(name="JobsProcessed", unit=MetricUnit.Count, value=1)
    logger.info("job processed", extra={"effects": len(effects), "redelivered": not fresh})


def _perform_after_commit(job: Any, effects: list[Effect]) -> None:
    with UnitOfWork() as uow:
        remaining, first_error = perform_effects(effects, job, uow.session)
        uow.session.execute(
            update(JobInbox)
            .where(JobInbox.job_id == job.job_id)
            .values(
                effects_pending=dump_effects(remaining),
                completed_at=None if remaining else datetime.now(UTC),
            )
        )
        uow.commit()
    if first_error is not None:
        raise TransientJobError(f"{len(remaining)} post-commit effect(s) failed; retried") from first_error


def _dead_letter(
    record: SQSRecord, job: Any, exc: PermanentJobError, attempt: int, invocation: _Invocation
) -> None:
    """Record the failure, then move the original body to the DLQ; only then is the record acknowledged.

    The failures row is written first so that a database outage retries the record before anything reaches
    the DLQ (the upsert on the SQS message id keeps a retried dead-lettering to one row)."""
    settings = get_settings()
    detail = str(exc)
    with UnitOfWork() as uow:
        _record_failure(uow.session, record, job, invocation.job_type, exc, detail, attempt, permanent=True)
        if job is not None and invocation.on_dead_letter is not None:
            invocation.on_dead_letter(job, uow.session)
        uow.commit()
    attributes = {
        "ErrorClass": type(exc).__name__,
        "ErrorReason": exc.reason,
        "ErrorMessage": detail[:1024] or type(exc).__name__,
        "JobType": invocation.job_type.value,
        "Attempt": str(attempt),
        "FailedAt": datetime.now(UTC).isoformat(),
        "SourceQueueArn": record.event_source_arn,
    }
    message_attributes = {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}
    for name, value in (record.raw_event.get("messageAttributes") or {}).items():
        if len(message_attributes) < _SQS_ATTRIBUTE_LIMIT and name not in message_attributes:
            message_attributes[name] = {
                k: v
                for k, v in {
                    "DataType": value.get("dataType"),
                    "StringValue": value.get("stringValue"),
                }.items()
                if v is not None
            }
    params: dict[str, Any] = {
        "QueueUrl": settings.require_dead_letter_queue_url(),
        "MessageBody": record.body,
        "MessageAttributes": message_attributes,
    }
    if settings.require_dead_letter_queue_url().endswith(".fifo"):
        params["MessageGroupId"] = record.attributes.message_group_id or "dead-letter"
        params["MessageDeduplicationId"] = record.message_id
    client("sqs").send_message(**params)
    metrics.add_metric(name="JobsDeadLettered", unit=MetricUnit.Count, value=1)
    logger.warning(
        "job dead-lettered", extra={"error_class": type(exc).__name__, "reason": exc.reason, "detail": detail}
    )


def _record_failure(
    session: Session,
    record: SQSRecord,
    job: Any,
    job_type: JobType,
    exc: BaseException,
    detail: str,
    attempt: int,
    *,
    permanent: bool,
) -> None:
    reason = getattr(exc, "reason", "retries-exhausted") if permanent else "retries-exhausted"
    values = {
        "sqs_message_id": record.message_id,
        "source_queue_arn": record.event_source_arn,
        "job_id": job.job_id if job is not None else None,
        "job_type": job_type.value,
        "error_class": type(exc).__name__,
        "reason": reason,
        "detail": detail[:4000],
        "attempt": attempt,
        "permanent": permanent,
    }
    session.execute(
        insert(JobFailure)
        .values(**values)
        .on_conflict_do_update(
            index_elements=[JobFailure.sqs_message_id],
            set_={
                **{k: values[k] for k in ("error_class", "reason", "detail", "attempt", "permanent")},
                "last_failed_at": datetime.now(UTC),
            },
        )
    )


def _note_transient(
    record: SQSRecord, job: Any, exc: Exception, attempt: int, invocation: _Invocation
) -> None:
    """Log a transient failure; on the last allowed receive, record it (SQS dead-letters it next)."""
    invocation.transient[record.receipt_handle] = 0 if isinstance(exc, DeadlineApproaching) else attempt
    if isinstance(exc, DeadlineApproaching):
        return
    metrics.add_metric(name="JobsRetried", unit=MetricUnit.Count, value=1)
    logger.warning(
        "job failed, will retry",
        extra={
            "error_class": type(exc).__name__,
            "reason": getattr(exc, "reason", "unexpected"),
            "cause": type(exc.__cause__).__name__ if exc.__cause__ is not None else None,
        },
        exc_info=not isinstance(exc, TransientJobError),
    )
    if attempt < get_settings().max_receive_count:
        return
    try:
        with UnitOfWork() as uow:
            _record_failure(
                uow.session,
                record,
                job,
                invocation.job_type,
                exc,
                f"{type(exc).__name__}: {exc}" if isinstance(exc, TransientJobError) else type(exc).__name__,
                attempt,
                permanent=False,
            )
            uow.commit()
    except Exception:  # noqa: BLE001 - logged; the record still fails and is retried
        # The record still goes to the DLQ through the redrive policy; only the analysis row is missing.
        logger.exception("could not record exhausted retries in job_failures")


def _check_deadline(context: Any) -> None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None and remaining() < get_settings().deadline_margin_ms:
        raise DeadlineApproaching("too little time left before the Lambda deadline")


def backoff_seconds(attempt: int, *, base: int, cap: int, rng: random.Random | None = None) -> int:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))], at least 1 s."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return max(1, int((rng or random).uniform(0, ceiling)))


def _back_off(records: list[dict[str, Any]], transient: dict[str, int]) -> None:
    """Delay redelivery of transiently failed records (ChangeMessageVisibilityBatch, 10 per call)."""
    if not transient:
        return
    settings = get_settings()
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for raw in records:
        attempt = transient.get(raw.get("receiptHandle", ""))
        if attempt is None:
            continue
        timeout = (
            0
            if attempt == 0
            else backoff_seconds(attempt, base=settings.retry_base_seconds, cap=settings.retry_max_seconds)
        )
        entry = {
            "Id": str(len(by_queue.get(raw["eventSourceARN"], []))),
            "ReceiptHandle": raw["receiptHandle"],
            "VisibilityTimeout": timeout,
        }
        by_queue.setdefault(raw["eventSourceARN"], []).append(entry)
    for arn, entries in by_queue.items():
        for start in range(0, len(entries), 10):
            try:
                result = client("sqs").change_message_visibility_batch(
                    QueueUrl=_queue_url(arn), Entries=entries[start : start + 10]
                )
            except Exception:  # noqa: BLE001 - logged; backoff is best effort
                # The records are still reported failed; they come back after the queue's visibility timeout.
                logger.exception("could not set backoff visibility")
                continue
            for failed in result.get("Failed", []):
                logger.warning("backoff not applied to a record", extra={"code": failed.get("Code")})


@lru_cache(maxsize=16)
def _queue_url(arn: str) -> str:
    _, _, _, _, account, name = arn.split(":", 5)
    return str(client("sqs").get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])


def _age_ms(created_at: datetime) -> float:
    return max(0.0, (datetime.now(UTC) - created_at).total_seconds() * 1000)


__all__ = ["backoff_seconds", "run"]
