"""POST /jobs/{job_type}: bulk enqueue, each job validated against the job contract (shared/jobs.py) exactly
as its consumer will validate it, then sent with SendMessageBatch as producers must send it (FIFO group and
deduplication ids included: shared/services/queues.py). Per-item results: a refused item never stops the
others."""

from __future__ import annotations

import json
import uuid
from typing import Any

from shared.bootstrap import Dependencies
from shared.errors import DependencyThrottled, PermanentJobError
from shared.jobs import Job
from shared.observability import logger
from shared.runtime.inbox import readable_job_id
from shared.services.management.errors import Unavailable
from shared.services.management.schemas import EnqueueResponse, EnqueueResult
from shared.services.management.topology import kind_of
from shared.services.queues import send_jobs_reporting


def enqueue_jobs(deps: Dependencies, job_type: str, bodies: list[dict[str, Any]]) -> EnqueueResponse:
    """Validate and send ``bodies`` (1..1000 job objects) to ``job_type``'s queue. A job that fails
    validation, repeats an earlier item's job_id, or that SQS keeps refusing is ``rejected`` with a code; a
    failure of SQS as a whole is 503 (sending again is safe: consumers de-duplicate by job_id)."""
    kind = kind_of(job_type)
    url = deps.settings.queue_url(kind)
    results: dict[int, EnqueueResult] = {}
    valid: list[tuple[int, Job[Any]]] = []
    seen: set[uuid.UUID] = set()
    for index, body in enumerate(bodies):
        text = json.dumps(body)
        try:
            job = kind.parse(text)
        except PermanentJobError as exc:
            results[index] = EnqueueResult(
                index=index, job_id=readable_job_id(text), status="rejected", error=str(exc), code=exc.reason
            )
            continue
        if job.job_id in seen:
            results[index] = EnqueueResult(
                index=index,
                job_id=job.job_id,
                status="rejected",
                error="job_id repeats an earlier job of this request",
                code="duplicate-job-id",
            )
            continue
        seen.add(job.job_id)
        valid.append((index, job))
    try:
        outcome = send_jobs_reporting(deps.aws.sqs(), url, kind, [job for _, job in valid])
    except DependencyThrottled as exc:
        raise Unavailable(f"SQS refused the jobs; send them again ({exc})") from exc
    for index, job in valid:
        refused = outcome.failed.get(job.job_id)
        results[index] = EnqueueResult(
            index=index,
            job_id=job.job_id,
            status="rejected" if refused else "queued",
            error=f"SQS refused the job ({refused})" if refused else None,
            code="enqueue-failed" if refused else None,
        )
    ordered = [results[index] for index in range(len(bodies))]
    queued = sum(result.status == "queued" for result in ordered)
    logger.info(
        "jobs enqueued", extra={"job_type": job_type, "queued": queued, "rejected": len(ordered) - queued}
    )
    return EnqueueResponse(queued=queued, rejected=len(ordered) - queued, results=ordered)
