"""Every query of the management API: the failure ledger (``job_failures``) and the redrive records
(``redrives``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, literal_column, or_, select, text, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from shared.db.models import JobFailure, Redrive

SAMPLE_JOB_IDS = 5


def failure_groups(
    session: Session,
    *,
    since: datetime | None,
    until: datetime | None,
    job_type: str | None,
    error_class: str | None,
    include_redriven: bool,
) -> list[dict[str, Any]]:
    """The ledger grouped by job type x error class x reason, latest failure first: count, first and last
    seen, the latest detail and up to five job ids (most recent first)."""
    conditions = []
    if since is not None:
        conditions.append(JobFailure.last_failed_at >= since)
    if until is not None:
        conditions.append(JobFailure.last_failed_at < until)
    if job_type is not None:
        conditions.append(JobFailure.job_type == job_type)
    if error_class is not None:
        conditions.append(JobFailure.error_class == error_class)
    if not include_redriven:
        conditions.append(JobFailure.redriven_at.is_(None))
    latest = JobFailure.last_failed_at.desc()
    details = func.array_agg(aggregate_order_by(JobFailure.detail, latest))
    job_ids = func.array_agg(aggregate_order_by(JobFailure.job_id, latest)).filter(
        JobFailure.job_id.is_not(None)
    )
    rows = session.execute(
        select(
            JobFailure.job_type,
            JobFailure.error_class,
            JobFailure.reason,
            func.count().label("count"),
            func.min(JobFailure.first_failed_at).label("first_seen"),
            func.max(JobFailure.last_failed_at).label("last_seen"),
            details[1].label("latest_detail"),
            job_ids[1:SAMPLE_JOB_IDS].label("sample_job_ids"),
        )
        .where(and_(*conditions))
        .group_by(JobFailure.job_type, JobFailure.error_class, JobFailure.reason)
        .order_by(literal_column("last_seen").desc(), JobFailure.job_type, JobFailure.error_class)
    ).all()
    return [
        {**row._asdict(), "sample_job_ids": list(dict.fromkeys(row.sample_job_ids or []))} for row in rows
    ]


def attempts_of(session: Session, job_id: uuid.UUID) -> list[JobFailure]:
    """Every ledger row of one job (one per failed SQS message), oldest first."""
    return list(
        session.scalars(
            select(JobFailure)
            .where(JobFailure.job_id == job_id)
            .order_by(JobFailure.first_failed_at, JobFailure.id)
        )
    )


def failures_of_messages(
    session: Session, job_type: str, message_ids: Iterable[str], job_ids: Iterable[uuid.UUID]
) -> list[JobFailure]:
    """The ledger rows of dead-lettered messages, found by SQS message id (a message SQS's redrive policy
    moved keeps its id) or by job id (the runner's dead-lettering sends a new message)."""
    message_ids, job_ids = list(message_ids), list(job_ids)
    if not message_ids and not job_ids:
        return []
    return list(
        session.scalars(
            select(JobFailure)
            .where(JobFailure.job_type == job_type)
            .where(or_(JobFailure.sqs_message_id.in_(message_ids), JobFailure.job_id.in_(job_ids)))
            .order_by(JobFailure.last_failed_at)
        )
    )


def count_dead_lettered(
    session: Session, job_type: str, wanted: Any, failed_after: datetime
) -> int:
    """Ledger rows of ``job_type`` not redriven, failed after ``failed_after`` (older ones have left the DLQ)
    and matching ``wanted`` (a RedriveFilter): what a FIFO DLQ holds, as far as the ledger knows."""
    conditions = [
        JobFailure.job_type == job_type,
        JobFailure.redriven_at.is_(None),
        JobFailure.last_failed_at > failed_after,
    ]
    if wanted.error_class is not None:
        conditions.append(JobFailure.error_class == wanted.error_class)
    if wanted.reason is not None:
        conditions.append(JobFailure.reason == wanted.reason)
    if wanted.job_ids is not None:
        conditions.append(JobFailure.job_id.in_(wanted.job_ids))
    if wanted.since is not None:
        conditions.append(JobFailure.last_failed_at >= wanted.since)
    if wanted.until is not None:
        conditions.append(JobFailure.last_failed_at < wanted.until)
    return int(session.scalar(select(func.count()).select_from(JobFailure).where(*conditions)) or 0)


def mark_redriven(
    session: Session, job_type: str, message_ids: Iterable[str], job_ids: Iterable[uuid.UUID]
) -> int:
    """Set ``redriven_at`` on the ledger rows of moved messages; returns the rows marked."""
    message_ids, job_ids = list(message_ids), list(job_ids)
    if not message_ids and not job_ids:
        return 0
    result = session.execute(
        update(JobFailure)
        .where(JobFailure.job_type == job_type, JobFailure.redriven_at.is_(None))
        .where(or_(JobFailure.sqs_message_id.in_(message_ids), JobFailure.job_id.in_(job_ids)))
        .values(redriven_at=func.now())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def mark_all_redriven(session: Session, job_type: str, failed_before: datetime) -> int:
    """A whole DLQ moved natively: its job type's rows of failures until then are redriven."""
    result = session.execute(
        update(JobFailure)
        .where(
            JobFailure.job_type == job_type,
            JobFailure.redriven_at.is_(None),
            JobFailure.last_failed_at <= failed_before,
        )
        .values(redriven_at=func.now())
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- redrives ------------------------------------------------------------------------------------------


def add_redrive(session: Session, redrive: Redrive) -> Redrive:
    session.add(redrive)
    session.flush()
    session.refresh(redrive)
    return redrive


def get_redrive(session: Session, redrive_id: uuid.UUID, *, lock: bool = False) -> Redrive | None:
    query = select(Redrive).where(Redrive.id == redrive_id)
    return session.scalars(query.with_for_update() if lock else query).one_or_none()


def list_redrives(session: Session, *, job_type: str | None, limit: int) -> list[Redrive]:
    query = select(Redrive).order_by(Redrive.created_at.desc(), Redrive.id).limit(limit)
    if job_type is not None:
        query = query.where(Redrive.job_type == job_type)
    return list(session.scalars(query))


def take_lease(session: Session, redrive_id: uuid.UUID, seconds: float) -> Redrive | None:
    """Lease a running selective redrive for one slice: None if it is not running, or another invocation
    holds an unexpired lease (two slices never receive from one DLQ for one redrive at once)."""
    return session.scalars(
        update(Redrive)
        .where(
            Redrive.id == redrive_id,
            Redrive.status == "running",
            or_(Redrive.lease_until.is_(None), Redrive.lease_until < func.now()),
        )
        .values(lease_until=func.now() + timedelta(seconds=seconds), updated_at=func.now())
        .returning(Redrive)
    ).one_or_none()


def now(session: Session) -> datetime:
    return session.execute(text("SELECT now()")).scalar_one()  # type: ignore[no-any-return]
