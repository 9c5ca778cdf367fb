"""The SQS job runner every queue handler uses (docs/contracts.md §3).

``run(event, context, consumer)`` processes one SQS batch with Powertools' partial-batch processors and
returns ``{"batchItemFailures": [...]}``. Per record:

1. the body is validated into the job model (invalid -> permanent failure);
2. one unit of work holds the inbox row (``job_id``) and every database effect of the consumer's ``handle``;
   a redelivered job commits nothing twice (shared/runtime/inbox.py);
3. the external effects ``handle`` returned (WebSocket posts, jobs to enqueue) are stored with the inbox row,
   performed after commit, and whatever is still pending after a failure is redone on redelivery
   (shared/runtime/effects.py);
4. permanent failures put the original body in the DLQ with error attributes and a ``job_failures`` row,
   then acknowledge the record; anything else is transient: reported in ``batchItemFailures`` with its
   visibility set for exponential backoff with full jitter (shared/runtime/sqs.py).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from sqlalchemy.orm import Session

from shared.bootstrap import Dependencies, dependencies
from shared.db.uow import sqlstate
from shared.errors import (
    ConfigurationError,
    DeadlineApproaching,
    PermanentJobError,
    StaleJob,
    TransientJobError,
)
from shared.jobs import DataT, Job, JobKind
from shared.observability import job_span, logger, metrics
from shared.runtime import inbox
from shared.runtime.effects import Effect, EffectKinds, perform_effects
from shared.runtime.retry import backoff_seconds
from shared.runtime.sqs import delay_redelivery, requeue, send_to_dead_letter_queue

Handle = Callable[[Job[DataT], Session, Dependencies], Sequence[Effect]]
OnDeadLetter = Callable[[Job[DataT], Session], None]

_LOG_KEYS = ["message_id", "job_id", "job_type", "correlation_id", "attempt"]
# A message the management API redrives carries this attribute: its job may be older than the age limit.
REDRIVE_ATTRIBUTE = "RedriveId"


@dataclass(frozen=True)
class JobConsumer(Generic[DataT]):
    """How one function consumes one job type: ``handle(job, session, deps)`` does the job's database work in
    ``session`` (never commits), with the invocation's dependencies (clients, settings), and returns the
    effects to perform after commit, of the registered ``effects`` kinds; ``on_dead_letter(job, session)``
    runs in the transaction that records a permanent failure of a parsed job (e.g. to count it in batch
    progress). ``settings`` names the environment variables the function needs besides
    DEAD_LETTER_QUEUE_URL; a missing one fails the invocation before any record is touched."""

    kind: JobKind[DataT]
    handle: Handle[DataT]
    effects: EffectKinds = field(default_factory=EffectKinds)
    on_dead_letter: OnDeadLetter[DataT] | None = None
    settings: tuple[str, ...] = ()


@dataclass
class _Invocation:
    consumer: JobConsumer[Any]
    deps: Dependencies
    context: Any
    deferred: set[str] = field(default_factory=set)  # receipt handles not started: the deadline was near
    retry_after: dict[str, int] = field(default_factory=dict)  # receipt handle -> visibility timeout


def run(
    event: dict[str, Any], context: Any, consumer: JobConsumer[Any], deps: Dependencies | None = None
) -> dict[str, Any]:
    """Process one SQS event for ``consumer``; the return value is the Lambda response."""
    deps = deps or dependencies()
    try:
        deps.settings.require("DEAD_LETTER_QUEUE_URL", *consumer.settings)
    except ConfigurationError as exc:
        # Fail the whole invocation before any record is touched: every record comes back once fixed.
        logger.error("function is not configured", extra={"error": str(exc)})
        raise
    metrics.add_dimension(name="job_type", value=consumer.kind.name)
    invocation = _Invocation(consumer, deps, context)
    processor: BatchProcessor | SqsFifoPartialProcessor = (
        SqsFifoPartialProcessor(skip_group_on_error=True)
        if consumer.kind.fifo
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
    records = event.get("Records") or []
    _back_off_skipped(records, response, invocation)
    result = dict(response)
    if invocation.deferred and not consumer.kind.fifo:
        result = _requeue_deferred(records, result, invocation)
    if invocation.retry_after:
        delay_redelivery(deps.aws.sqs(), records, invocation.retry_after)
    return result


def _requeue_deferred(
    records: list[dict[str, Any]], response: dict[str, Any], invocation: _Invocation
) -> dict[str, Any]:
    """Records not started because the deadline was near go back to their (standard) queue as new messages,
    and the originals are acknowledged: the deferral spends none of their receives. What cannot be sent
    again stays a failure, visible again at once. A FIFO queue cannot do this (a new message would queue
    behind later ones of its group): there a deferral still counts as a receive."""
    deferred = [raw for raw in records if raw.get("receiptHandle") in invocation.deferred]
    sent = requeue(invocation.deps.aws.sqs(), deferred)
    for handle in (raw["receiptHandle"] for raw in deferred if raw["messageId"] in sent):
        invocation.retry_after.pop(handle, None)
    if sent:
        logger.info("records near the deadline sent back to their queue", extra={"count": len(sent)})
    failures = [item for item in response.get("batchItemFailures", []) if item["itemIdentifier"] not in sent]
    return {**response, "batchItemFailures": failures}


def _back_off_skipped(records: list[dict[str, Any]], response: Any, invocation: _Invocation) -> None:
    """Records a FIFO batch skipped after a failure in their group come back with that failure's backoff
    (the whole group returns together, in order) instead of after the full visibility timeout."""
    failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
    by_group: dict[str, int] = {}
    for raw in records:
        timeout = invocation.retry_after.get(raw.get("receiptHandle", ""))
        group = (raw.get("attributes") or {}).get("MessageGroupId")
        if timeout is not None and group is not None:
            by_group.setdefault(group, timeout)
    for raw in records:
        handle = raw.get("receiptHandle", "")
        if raw.get("messageId") in failed and handle not in invocation.retry_after:
            group = (raw.get("attributes") or {}).get("MessageGroupId")
            if group in by_group:
                invocation.retry_after[handle] = by_group[group]


def _process_record(record: SQSRecord, invocation: _Invocation) -> None:
    attempt = int(record.attributes.approximate_receive_count or 1)
    job: Job[Any] | None = None
    logger.append_keys(message_id=record.message_id, job_type=invocation.consumer.kind.name, attempt=attempt)
    try:
        _check_deadline(invocation)
        job = invocation.consumer.kind.parse(record.body)
        logger.append_keys(job_id=str(job.job_id), correlation_id=job.correlation_id)
        _check_age(job, record, invocation)
        with job_span(job.job_type):
            _execute(job, invocation)
        metrics.add_metric(name="JobAge", unit=MetricUnit.Milliseconds, value=_age_ms(job.created_at))
    except PermanentJobError as exc:
        try:
            _dead_letter(record, job, exc, attempt, invocation)
        except Exception as failure:
            # Recording or moving it failed (database down, SQS refusing): the record is retried, and says so.
            _note_transient(record, job, failure, attempt, invocation)
            raise
    except Exception as exc:
        _note_transient(record, job, exc, attempt, invocation)
        raise
    finally:
        logger.remove_keys(_LOG_KEYS)


def _execute(job: Job[Any], invocation: _Invocation) -> None:
    consumer, deps = invocation.consumer, invocation.deps
    with deps.unit_of_work() as uow:
        claim = inbox.claim(uow.session, job.job_id, job.job_type)
        if claim.fresh:
            effects = list(consumer.handle(job, uow.session, deps))
            pending = consumer.effects.dump(effects)
            inbox.store_pending_effects(uow.session, job.job_id, pending)
        else:
            pending = claim.effects_pending
        uow.commit()
    if not claim.fresh and not pending:
        metrics.add_metric(name="JobsDuplicate", unit=MetricUnit.Count, value=1)
        logger.info("duplicate job acknowledged")
        return
    performed = _perform_after_commit(job, invocation) if pending else 0
    metrics.add_metric(name="JobsProcessed", unit=MetricUnit.Count, value=1)
    logger.info("job processed", extra={"effects": performed, "redelivered": not claim.fresh})


def _perform_after_commit(job: Job[Any], invocation: _Invocation) -> int:
    """Perform the job's pending effects under its inbox row's lock, re-read inside the lock (a concurrent
    copy of the job may have performed them meanwhile); returns how many were attempted."""
    consumer, deps = invocation.consumer, invocation.deps
    with deps.unit_of_work() as uow:
        effects = consumer.effects.load(inbox.lock_pending_effects(uow.session, job.job_id))
        remaining, first_error = perform_effects(effects, job, uow.session, deps)
        inbox.store_pending_effects(uow.session, job.job_id, consumer.effects.dump(remaining))
        uow.commit()
    if first_error is not None:
        raise TransientJobError(f"{len(remaining)} post-commit effect(s) failed; retried") from first_error
    return len(effects)


def _dead_letter(
    record: SQSRecord, job: Job[Any] | None, exc: PermanentJobError, attempt: int, invocation: _Invocation
) -> None:
    """Record the failure, then move the original body to the DLQ; only then is the record acknowledged.

    The failures row is written first so that a database outage retries the record before anything reaches
    the DLQ (the upsert on the SQS message id keeps a retried dead-lettering to one row)."""
    consumer, deps = invocation.consumer, invocation.deps
    detail = str(exc)
    with deps.unit_of_work() as uow:
        inbox.record_failure(
            uow.session, _failure(record, job, consumer, exc, detail, attempt, permanent=True)
        )
        if job is not None and consumer.on_dead_letter is not None:
            consumer.on_dead_letter(job, uow.session)
        uow.commit()
    error_attributes = {
        "ErrorClass": type(exc).__name__,
        "ErrorReason": exc.reason,
        "ErrorMessage": detail[:1024] or type(exc).__name__,
        "JobType": consumer.kind.name,
        "Attempt": str(attempt),
        "FailedAt": datetime.now(UTC).isoformat(),
        "SourceQueueArn": record.event_source_arn,
    }
    dlq_url = deps.settings.require_dead_letter_queue_url()
    send_to_dead_letter_queue(deps.aws.sqs(), dlq_url, record, error_attributes, fifo=consumer.kind.fifo)
    metrics.add_metric(name="JobsDeadLettered", unit=MetricUnit.Count, value=1)
    logger.warning(
        "job dead-lettered", extra={"error_class": type(exc).__name__, "reason": exc.reason, "detail": detail}
    )


def _failure(
    record: SQSRecord,
    job: Job[Any] | None,
    consumer: JobConsumer[Any],
    exc: BaseException,
    detail: str,
    attempt: int,
    *,
    permanent: bool,
) -> inbox.Failure:
    return inbox.Failure(
        sqs_message_id=record.message_id,
        source_queue_arn=record.event_source_arn,
        job_id=job.job_id if job is not None else inbox.readable_job_id(record.body),
        job_type=consumer.kind.name,
        error_class=type(exc).__name__,
        reason=getattr(exc, "reason", "retries-exhausted") if permanent else "retries-exhausted",
        detail=detail,
        attempt=attempt,
        permanent=permanent,
    )


def _note_transient(
    record: SQSRecord, job: Job[Any] | None, exc: Exception, attempt: int, invocation: _Invocation
) -> None:
    """Schedule the record's backoff and log the failure; on the last allowed receive, record it (SQS
    dead-letters it next)."""
    settings = invocation.deps.settings
    if isinstance(exc, DeadlineApproaching):
        invocation.retry_after[record.receipt_handle] = 0  # not the record's fault: back at once
        invocation.deferred.add(record.receipt_handle)
        return
    invocation.retry_after[record.receipt_handle] = backoff_seconds(
        attempt, base=settings.retry_base_seconds, cap=settings.retry_max_seconds
    )
    metrics.add_metric(name="JobsRetried", unit=MetricUnit.Count, value=1)
    logger.warning("job failed, will retry", extra={**describe_failure(exc), "message_id": record.message_id})
    if attempt < settings.max_receive_count:
        return
    detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, TransientJobError) else type(exc).__name__
    try:
        with invocation.deps.unit_of_work() as uow:
            inbox.record_failure(
                uow.session, _failure(record, job, invocation.consumer, exc, detail, attempt, permanent=False)
            )
            uow.commit()
    except Exception as failure:  # noqa: BLE001 - logged; the record still fails and is retried
        # The record still goes to the DLQ through the redrive policy; only the analysis row is missing.
        logger.error("could not record exhausted retries in job_failures", extra=describe_failure(failure))


def describe_failure(exc: BaseException) -> dict[str, Any]:
    """What a log line may say about a failure: its class, reason, SQLSTATE, its cause's class and where it
    was raised — never its message or a traceback's, which may quote a row's values, a message's content or
    a phone number (a driver's error text, a provider's error message, a bug's own text)."""
    cause = exc.__cause__ or exc.__context__
    return {
        "error_class": type(exc).__name__,
        "reason": getattr(exc, "reason", "unexpected"),
        "sqlstate": sqlstate(exc) or (sqlstate(cause) if cause is not None else None),
        "cause": type(cause).__name__ if cause is not None else None,
        "raised_at": [
            f"{frame.filename}:{frame.lineno} {frame.name}"
            for frame in traceback.extract_tb((cause or exc).__traceback__)
        ][-6:],
    }


def _check_age(job: Job[Any], record: SQSRecord, invocation: _Invocation) -> None:
    limit = timedelta(seconds=invocation.deps.settings.max_job_age_seconds)
    if datetime.now(UTC) - job.created_at > limit and REDRIVE_ATTRIBUTE not in (
        record.message_attributes or {}
    ):
        raise StaleJob(f"created more than {int(limit.total_seconds())} s ago (redrive it to run it anyway)")


def _check_deadline(invocation: _Invocation) -> None:
    remaining = getattr(invocation.context, "get_remaining_time_in_millis", None)
    if remaining is not None and remaining() < invocation.deps.settings.deadline_margin_ms:
        raise DeadlineApproaching("too little time left before the Lambda deadline")


def _age_ms(created_at: datetime) -> float:
    return max(0.0, (datetime.now(UTC) - created_at).total_seconds() * 1000)
