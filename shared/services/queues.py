"""Sending jobs to their queues: SendMessageBatch, 10 entries per call, failed entries retried, calls made
concurrently on a small bounded pool (a message to a 1000-member group enqueues up to 999 notification jobs:
100 calls that must not run one after another).

FIFO queues (send-message) get MessageGroupId from the job type's declaration and MessageDeduplicationId =
job_id (docs/contracts.md §1), so a resend of the same job inside SQS's 5-minute window is dropped by SQS and
after it by the consumer's inbox."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field as ModelField
from sqlalchemy.orm import Session

from shared.errors import DependencyThrottled
from shared.jobs import JOB_KINDS, Job, JobKind
from shared.runtime.effects import Effect

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

SQS_BATCH = 10
_ATTEMPTS = 3
_MAX_CONCURRENT_CALLS = 8  # SendMessageBatch calls in flight at once (a large fan-out)


def send_jobs(
    sqs: Any, queue_url: str, kind: JobKind[Any], jobs: Sequence[Job[Any]], *, delay_seconds: int = 0
) -> int:
    """Send ``jobs`` (all of type ``kind``) to ``queue_url``; returns the number of SQS calls made.

    Raises :class:`DependencyThrottled` if some entries still fail after retries (the caller's job is then
    retried; consumers de-duplicate by job id). FIFO jobs keep their order: one call after another."""
    outcome = send_jobs_reporting(sqs, queue_url, kind, jobs, delay_seconds=delay_seconds)
    if outcome.failed:
        codes = sorted(set(outcome.failed.values()))
        raise DependencyThrottled(f"{len(outcome.failed)} {kind.name} job(s) not accepted by SQS: {codes}")
    return outcome.calls


@dataclass
class SendOutcome:
    """What :func:`send_jobs_reporting` did: SQS calls made, and the jobs SQS still refused (job id -> the
    entry's error code)."""

    calls: int = 0
    failed: dict[uuid.UUID, str] = field(default_factory=dict)


def send_jobs_reporting(
    sqs: Any, queue_url: str, kind: JobKind[Any], jobs: Sequence[Job[Any]], *, delay_seconds: int = 0
) -> SendOutcome:
    """Like :func:`send_jobs`, but entries SQS keeps refusing are reported instead of raised: an entry refused
    as the sender's fault is not retried, any other is retried up to 3 times. A call SQS refuses as a whole
    (after botocore's own retries) still raises :class:`DependencyThrottled`: nothing of it was sent."""
    outcome = SendOutcome()
    if not jobs:
        return outcome
    chunks = [list(jobs[start : start + SQS_BATCH]) for start in range(0, len(jobs), SQS_BATCH)]
    if len(chunks) == 1 or kind.fifo:
        results = [_send_chunk(sqs, queue_url, kind, chunk, delay_seconds) for chunk in chunks]
    else:
        results = list(
            _send_pool().map(lambda chunk: _send_chunk(sqs, queue_url, kind, chunk, delay_seconds), chunks)
        )
    for calls, failed in results:
        outcome.calls += calls
        outcome.failed.update(failed)
    return outcome


@lru_cache(maxsize=1)
def _send_pool() -> ThreadPoolExecutor:
    """One pool per container, its threads kept between invocations: starting them for every large fan-out
    cost about 30 ms per job at 1000 participants (thread start-up contending with the running sends). A
    chunk's send never submits to the pool itself, so callers cannot deadlock it."""
    return ThreadPoolExecutor(max_workers=_MAX_CONCURRENT_CALLS, thread_name_prefix="sqs-send")


def _send_chunk(
    sqs: Any, url: str, kind: JobKind[Any], jobs: list[Job[Any]], delay_seconds: int
) -> tuple[int, dict[uuid.UUID, str]]:
    """(calls made, job id -> error code of the entries still refused)."""
    pending = {str(i): _entry(kind, job, str(i), delay_seconds) for i, job in enumerate(jobs)}
    refused: dict[uuid.UUID, str] = {}
    calls = 0
    for attempt in range(_ATTEMPTS):
        try:
            calls += 1
            result = sqs.send_message_batch(QueueUrl=url, Entries=list(pending.values()))
        except (ClientError, BotoCoreError) as exc:
            # botocore has already retried what was retryable: the caller's job is retried later.
            raise DependencyThrottled(
                f"SQS refused {len(pending)} {kind.name} job(s): {type(exc).__name__}"
            ) from exc
        failed = result.get("Failed") or []
        retry = {}
        for entry in failed:
            if entry.get("SenderFault"):  # the same entry would be refused again
                refused[jobs[int(entry["Id"])].job_id] = str(entry.get("Code", "?"))
            else:
                retry[entry["Id"]] = pending[entry["Id"]]
        pending = retry
        if not pending:
            return calls, refused
        if attempt < _ATTEMPTS - 1:
            time.sleep(0.05 * 2**attempt)
    for entry in failed:
        if entry["Id"] in pending:
            refused[jobs[int(entry["Id"])].job_id] = str(entry.get("Code", "?"))
    return calls, refused


def _entry(kind: JobKind[Any], job: Job[Any], entry_id: str, delay_seconds: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Id": entry_id,
        "MessageBody": job.model_dump_json(),
        "MessageAttributes": {"JobType": {"DataType": "String", "StringValue": kind.name}},
    }
    group = kind.group_id(job)
    if group is not None:
        entry["MessageGroupId"] = group
        entry["MessageDeduplicationId"] = str(job.job_id)
    elif delay_seconds:
        entry["DelaySeconds"] = delay_seconds
    return entry


class EnqueueJobs(Effect):
    """Send jobs (already built, with deterministic ids) to their queue."""

    kind: Literal["enqueue"] = "enqueue"
    job_type: str
    jobs: list[dict[str, Any]] = ModelField(min_length=1)
    # SQS DelaySeconds of every job (standard queues only; a continuation waits this long). 0: none.
    delay_seconds: int = ModelField(default=0, ge=0, le=900)

    @classmethod
    def of(cls, kind: JobKind[Any], jobs: Sequence[Job[Any]], *, delay_seconds: int = 0) -> EnqueueJobs:
        return cls(
            job_type=kind.name,
            jobs=[job.model_dump(mode="json") for job in jobs],
            delay_seconds=delay_seconds,
        )

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        kind = JOB_KINDS[self.job_type]
        send_jobs(
            deps.aws.sqs(),
            deps.settings.queue_url(kind),
            kind,
            [kind.load(body) for body in self.jobs],
            delay_seconds=self.delay_seconds,
        )
        return []
