"""The job inbox, its pending effects (the outbox in the inbox row) and the failure ledger: every SQL
statement the runner issues, and nothing else.

``job_inbox(job_id)`` is written in the job's own transaction, so a redelivered job commits nothing twice;
``job_failures`` holds one row per failed SQS message (upserted on its message id)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import JobFailure, JobInbox
from shared.errors import InvalidJob
from shared.jobs import load_body


@dataclass(frozen=True)
class InboxClaim:
    """``fresh``: this delivery inserted the inbox row (first delivery); else the effects still pending."""

    fresh: bool
    effects_pending: list[dict[str, Any]]


# The hot path's statements, built once: each call only binds values and runs on the session's Core
# connection (no statement construction, cache-key walk or ORM execute path per job).
_CLAIM = (
    insert(JobInbox)
    .values(job_id=bindparam("claim_job_id"), job_type=bindparam("claim_job_type"))
    .on_conflict_do_update(index_elements=[JobInbox.job_id], set_={"job_id": bindparam("claim_job_id")})
    # xmax = 0 only on a row this statement inserted (the DO UPDATE also locks a duplicate's row).
    .returning(JobInbox.effects_pending, literal_column("xmax = 0").label("inserted"))
)
_LOCK_PENDING = (
    select(JobInbox.effects_pending).where(JobInbox.job_id == bindparam("lock_job_id")).with_for_update()
)
_STORE_PENDING = (
    update(JobInbox)
    .where(JobInbox.job_id == bindparam("store_job_id"))
    .values(effects_pending=bindparam("store_pending"), completed_at=bindparam("store_completed_at"))
)


def claim(session: Session, job_id: uuid.UUID, job_type: str) -> InboxClaim:
    """Insert the inbox row of a job, or lock the existing one (a concurrent duplicate waits for this one)."""
    row = session.connection().execute(_CLAIM, {"claim_job_id": job_id, "claim_job_type": job_type}).one()
    return InboxClaim(fresh=bool(row.inserted), effects_pending=list(row.effects_pending or []))


def lock_pending_effects(session: Session, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """The job's pending effects, its inbox row locked until this transaction ends: of two copies of a job
    performing effects at once, the second waits and then sees what the first left pending."""
    pending = session.connection().execute(_LOCK_PENDING, {"lock_job_id": job_id}).scalar_one_or_none()
    return list(pending or [])


def store_pending_effects(session: Session, job_id: uuid.UUID, payload: list[dict[str, Any]]) -> None:
    """Keep ``payload`` as the job's pending effects; the job is complete when none is left."""
    session.connection().execute(
        _STORE_PENDING,
        {
            "store_job_id": job_id,
            "store_pending": payload,
            "store_completed_at": None if payload else datetime.now(UTC),
        },
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


def readable_job_id(body: str) -> uuid.UUID | None:
    """The ``job_id`` of a body that failed validation, when it has a readable one (a JSON object whose
    ``job_id`` is a UUID), so the ledger can name the job; None otherwise. Parsed with the job contract's
    own guards (size, nesting, numbers), never echoing the body."""
    try:
        raw = load_body(body)
    except InvalidJob:
        return None
    value = raw.get("job_id") if isinstance(raw, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


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
