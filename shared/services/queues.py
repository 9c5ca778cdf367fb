"""Sending jobs to their queues: SendMessageBatch, 10 entries per call, failed entries retried, calls made
concurrently on a small bounded pool (a message to a 1000-member group enqueues up to 999 notification jobs:
100 calls that must not run one after another).

FIFO queues (send-message) get MessageGroupId from the job type's declaration and MessageDeduplicationId =
job_id (docs/contracts.md §1), so a resend of the same job inside SQS's 5-minute window is dropped by SQS and
after it by the consumer's inbox."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field
from sqlalchemy.orm import Session

from shared.errors import DependencyThrottled
from shared.jobs import JOB_KINDS, Job, JobKind
from shared.runtime.effects import Effect

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

SQS_BATCH = 10
_ATTEMPTS = 3
_MAX_CONCURRENT_CALLS = 8


def send_jobs(
    sqs: Any, queue_url: str, kind: JobKind[Any], jobs: Sequence[Job[Any]], *, delay_seconds: int = 0
) -> int:
    """Send ``jobs`` (all of type ``kind``) to ``queue_url``; returns the number of SQS calls made.

    Raises :class:`DependencyThrottled` if some entries still fail after retries (the caller's job is then
    retried; consumers de-duplicate by job id). FIFO jobs keep their order: one call after another."""
    if not jobs:
        return 0
    chunks = [list(jobs[start : start + SQS_BATCH]) for start in range(0, len(jobs), SQS_BATCH)]
    if len(chunks) == 1 or kind.fifo:
        return sum(_send_chunk(sqs, queue_url, kind, chunk, delay_seconds) for chunk in chunks)
    with ThreadPoolExecutor(max_workers=min(_MAX_CONCURRENT_CALLS, len(chunks))) as pool:
        return sum(pool.map(lambda chunk: _send_chunk(sqs, queue_url, kind, chunk, delay_seconds), chunks))


def _send_chunk(sqs: Any, url: str, kind: JobKind[Any], jobs: list[Job[Any]], delay_seconds: int) -> int:
    pending = {str(i): _entry(kind, job, str(i), delay_seconds) for i, job in enumerate(jobs)}
    for attempt in range(_ATTEMPTS):
        try:
            result = sqs.send_message_batch(QueueUrl=url, Entries=list(pending.values()))
        except (ClientError, BotoCoreError) as exc:
            # botocore has already retried what was retryable: the caller's job is retried later.
            raise DependencyThrottled(
                f"SQS refused {len(pending)} {kind.name} job(s): {type(exc).__name__}"
            ) from exc
        failed = result.get("Failed") or []
        pending = {f["Id"]: pending[f["Id"]] for f in failed}
        if not pending:
            return attempt + 1
        if any(f.get("SenderFault") for f in failed):
            codes = sorted({f.get("Code", "?") for f in failed})
            raise DependencyThrottled(f"SQS rejected {len(failed)} {kind.name} job(s): {codes}")
        time.sleep(0.05 * 2**attempt)
    raise DependencyThrottled(f"{len(pending)} {kind.name} job(s) not accepted by SQS after retries")


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
    jobs: list[dict[str, Any]] = Field(min_length=1)

    @classmethod
    def of(cls, kind: JobKind[Any], jobs: Sequence[Job[Any]]) -> EnqueueJobs:
        return cls(job_type=kind.name, jobs=[job.model_dump(mode="json") for job in jobs])

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        kind = JOB_KINDS[self.job_type]
        send_jobs(
            deps.aws.sqs(), deps.settings.queue_url(kind), kind, [kind.load(body) for body in self.jobs]
        )
        return []
