"""The job inbox, its pending effects (the outbox in the inbox row) and the failure ledger: every SQL
statement the runner issues, and nothing else.

``job_inbox(job_id)`` is written in the job's own transaction, so a redelivered job commits nothing twice;
``job_failures`` holds one row per failed SQS message (upserted on its message id)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import JobFailure, JobInbox


@dataclass(frozen=True)
class InboxClaim:
    """``fresh``: this delivery inserted the inbox row (first delivery); else the effects still pending."""

    fresh: bool
    effects_pending: list[dict[str, Any]]


def claim(session: Session, job_id: uuid.UUID, job_type: str) -> InboxClaim:
    """Insert the inbox row of a job, or lock the existing one (a concurrent duplicate waits for this one)."""
    row = session.execute(
        insert(JobInbox)
        .values(job_id=job_id, job_type=job_type)
        .on_conflict_do_update(index_elements=[JobInbox.job_id], set_={"job_id": job_id})
        # xmax = 0 only on a row this statement inserted (the DO UPDATE also locks a duplicate's row).
        .returning(JobInbox.effects_pending, literal_column("xmax = 0").label("inserted"))
    ).one()
    return InboxClaim(fresh=bool(row.inserted), effects_pending=list(row.effects_pending or []))


def lock_pending_effects(session: Session, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """The job's pending effects, its inbox row locked until this transaction ends: of two copies of a job
    performing effects at once, the second waits and then sees what the first left pending."""
    pending = session.execute(
        select(JobInbox.effects_pending).where(JobInbox.job_id == job_id).with_for_update()
    ).scalar_one_or_none()
    return list(pending or [])


def store_pending_effects(session: Session, job_id: uuid.UUID, payload: list[dict[str, Any]]) -> None:
    """Keep ``payload`` as the job's pending effects; the job is complete when none is left."""
    session.execute(
        update(JobInbox)
        .where(JobInbox.job_id == job_id)
        .values(effects_pending=payload, completed_at=None if payload else datetime.now(UTC))
    )


@dataclass(frozen=True)
class Failure:
    """One failed SQS message, as the failure ledger records it (``detail`` never holds message content)."""

    sqs_message_id: str
    source_queue_arn: str
    job_id: uuid.UUID | None
    job_type: str
    error_class: str
    reason: str
    detail: str
    attempt: int
    permanent: bool


def record_failure(session: Session, failure: Failure) -> None:
    """Upsert the ledger row of ``failure`` (a retried dead-lettering stays one row)."""
    values = {
        "sqs_message_id": failure.sqs_message_id,
        "source_queue_arn": failure.source_queue_arn,
        "job_id": failure.job_id,
        "job_type": failure.job_type,
        "error_class": failure.error_class,
        "reason": failure.reason,
        "detail": failure.detail[:4000],
        "attempt": failure.attempt,
        "permanent": failure.permanent,
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
