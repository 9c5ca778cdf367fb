"""Sending jobs to their queues: SendMessageBatch, 10 entries per call, failed entries retried, calls made
concurrently on a small bounded pool (a message to a 1000-member group enqueues up to 999 notification jobs:
100 calls that must not run one after another).

FIFO queues (send-message) get MessageGroupId = conversation_id and MessageDeduplicationId = job_id
(DESIGN §2), so a resend of the same job inside SQS's 5-minute window is dropped by SQS itself and after it
by the consumer's inbox."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.aws import client
from shared.config import get_settings
from shared.errors import DependencyThrottled
from shared.jobs import JobType

SQS_BATCH = 10
_ATTEMPTS = 3
_MAX_CONCURRENT_CALLS = 8


def message_group_id(job: Any) -> str | None:
    """The FIFO group of a job, or None for standard queues."""
    if job.job_type == JobType.SEND_MESSAGE:
        return str(job.data.conversation_id)
    return None


def send_jobs(jobs: Sequence[Any], *, delay_seconds: int = 0) -> int:
    """Send ``jobs`` (all of one type) to their queue; returns the number of SQS calls made.

    Raises :class:`DependencyThrottled` if some entries still fail after retries (the caller's job is then
    retried; consumers de-duplicate by job id). FIFO jobs keep their order: one call after another."""
    if not jobs:
        return 0
    url = get_settings().queue_url(jobs[0].job_type)
    chunks = [list(jobs[start : start + SQS_BATCH]) for start in range(0, len(jobs), SQS_BATCH)]
    if len(chunks) == 1 or url.endswith(".fifo"):
        return sum(_send_chunk(url, chunk, delay_seconds) for chunk in chunks)
    with ThreadPoolExecutor(max_workers=min(_MAX_CONCURRENT_CALLS, len(chunks))) as pool:
        return sum(pool.map(lambda chunk: _send_chunk(url, chunk, delay_seconds), chunks))


def _send_chunk(url: str, jobs: list[Any], delay_seconds: int) -> int:
    pending = {str(i): _entry(job, str(i), delay_seconds) for i, job in enumerate(jobs)}
    for attempt in range(_ATTEMPTS):
        result = client("sqs").send_message_batch(QueueUrl=url, Entries=list(pending.values()))
        failed = result.get("Failed") or []
        pending = {f["Id"]: pending[f["Id"]] for f in failed}
        if not pending:
            return attempt + 1
        if any(f.get("SenderFault") for f in failed):
            codes = sorted({f.get("Code", "?") for f in failed})
            raise DependencyThrottled(f"SQS rejected {len(failed)} {jobs[0].job_type} job(s): {codes}")
        time.sleep(0.05 * 2**attempt)
    raise DependencyThrottled(f"{len(pending)} {jobs[0].job_type} job(s) not accepted by SQS after retries")


def _entry(job: Any, entry_id: str, delay_seconds: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Id": entry_id,
        "MessageBody": job.model_dump_json(),
        "MessageAttributes": {"JobType": {"DataType": "String", "StringValue": str(job.job_type)}},
    }
    group = message_group_id(job)
    if group is not None:
        entry["MessageGroupId"] = group
        entry["MessageDeduplicationId"] = str(job.job_id)
    elif delay_seconds:
        entry["DelaySeconds"] = delay_seconds
    return entry
