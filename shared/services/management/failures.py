"""GET /failures and GET /failures/{job_id}: the failure ledger (``job_failures``) grouped for operators,
with each DLQ's current depth (docs/contracts.md §8)."""

from __future__ import annotations

import uuid
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError

from shared.bootstrap import Dependencies
from shared.observability import logger
from shared.services.management import repository
from shared.services.management.errors import InvalidRequest, NotFound, Unavailable
from shared.services.management.schemas import FailureAttempt, FailureGroup, FailureReport, JobFailures
from shared.services.management.topology import configured_job_types, kind_of, queue_counts, queue_pair


def failure_report(
    deps: Dependencies,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    job_type: str | None = None,
    error_class: str | None = None,
    include_redriven: bool = False,
) -> FailureReport:
    """Groups by job type x error class x reason (latest failure first) and the DLQ depth of each job type
    (or of ``job_type`` only); a DLQ that cannot be read has depth null."""
    if since is not None and until is not None and since >= until:
        raise InvalidRequest("since must be before until")
    if job_type is not None:
        kind_of(job_type)
    with deps.unit_of_work() as uow:
        rows = repository.failure_groups(
            uow.session,
            since=since,
            until=until,
            job_type=job_type,
            error_class=error_class,
            include_redriven=include_redriven,
        )
    depths: dict[str, int | None] = {}
    for name in [job_type] if job_type is not None else configured_job_types(deps):
        depths[name] = _dlq_depth(deps, name)
    return FailureReport(groups=[FailureGroup.model_validate(row) for row in rows], dlq_depth=depths)


def _dlq_depth(deps: Dependencies, job_type: str) -> int | None:
    try:
        pair = queue_pair(deps, job_type)
        return queue_counts(deps.aws.sqs(), pair.dlq_url)["ApproximateNumberOfMessages"]
    except (Unavailable, ClientError, BotoCoreError) as exc:
        logger.warning(
            "DLQ depth not readable", extra={"job_type": job_type, "error_class": type(exc).__name__}
        )
        return None


def job_failures(deps: Dependencies, job_id: uuid.UUID) -> JobFailures:
    """Every failed attempt of one job recorded in the ledger (oldest first); 404 when there is none."""
    with deps.unit_of_work() as uow:
        rows = repository.attempts_of(uow.session, job_id)
        if not rows:
            raise NotFound("no failure recorded for this job_id")
        return JobFailures(
            job_id=job_id,
            attempts=[FailureAttempt.model_validate(row, from_attributes=True) for row in rows],
        )
