"""The management API's request and response bodies (docs/contracts.md §8): pydantic models from which
Powertools validates requests and builds the OpenAPI document (docs/openapi.json)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.jobs import MAX_CHUNK_DELAY_SECONDS, MAX_CHUNK_SIZE

MAX_ENQUEUE = 1_000
MAX_FILTER_JOB_IDS = 1_000
HealthStatus = Literal["healthy", "degraded", "unhealthy"]
RedriveStatus = Literal["running", "completed", "cancelling", "cancelled", "failed"]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, so a typo is never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. invalid-request, unknown-job-type")
    message: str = Field(description="what is wrong; never echoes the request's values")


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- GET /health ---------------------------------------------------------------------------------------


class DeadLetterQueueHealth(BaseModel):
    visible: int | None
    in_flight: int | None = None
    delayed: int | None = None
    oldest_age_seconds: int | None = Field(
        description="CloudWatch ApproximateAgeOfOldestMessage, max over 5 minutes; null: no datapoint"
    )


class QueueHealth(BaseModel):
    status: HealthStatus
    visible: int | None
    in_flight: int | None
    delayed: int | None
    oldest_age_seconds: int | None
    dlq: DeadLetterQueueHealth
    event_source: str | None = Field(
        description="state of the consumer's event source mapping (Enabled, Disabled, ...); null: none found"
    )
    problems: list[str] = Field(default_factory=list, description="why the status is not healthy")


class DatabaseHealth(BaseModel):
    reachable: bool
    revision: str | None
    head: str
    at_head: bool


class HealthReport(BaseModel):
    status: HealthStatus
    checked_at: datetime
    database: DatabaseHealth
    queues: dict[str, QueueHealth]


# --- GET /failures -------------------------------------------------------------------------------------


class FailureGroup(BaseModel):
    job_type: str
    error_class: str
    reason: str
    count: int
    first_seen: datetime
    last_seen: datetime
    latest_detail: str
    sample_job_ids: list[uuid.UUID]


class FailureReport(BaseModel):
    groups: list[FailureGroup] = Field(description="latest failure first")
    dlq_depth: dict[str, int | None]


class FailureAttempt(BaseModel):
    sqs_message_id: str
    job_type: str
    error_class: str
    reason: str
    detail: str
    attempt: int
    permanent: bool
    first_failed_at: datetime
    last_failed_at: datetime
    redriven_at: datetime | None


class JobFailures(BaseModel):
    job_id: uuid.UUID
    attempts: list[FailureAttempt]


# --- redrive -------------------------------------------------------------------------------------------


class RedriveFilter(Strict):
    error_class: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    job_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_FILTER_JOB_IDS)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> RedriveFilter:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self

    def is_empty(self) -> bool:
        return all(value is None for value in self.model_dump().values())


class RedriveRequest(Strict):
    job_type: Annotated[str, Field(min_length=1, max_length=64)]
    filter: RedriveFilter | None = Field(
        default=None, description="none (or empty) and no max_messages: the native SQS move of the whole DLQ"
    )
    dry_run: bool = False
    max_messages: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_per_second: Annotated[int, Field(ge=1, le=500)] | None = Field(
        default=None, description="native: MaxNumberOfMessagesPerSecond; selective: a cap on the move rate"
    )


class RedriveView(BaseModel):
    redrive_id: uuid.UUID
    job_type: str
    mode: Literal["native", "selective"]
    status: RedriveStatus
    dry_run: bool
    matched: int | None
    moved: int
    kept: int
    failed: int
    to_move: int | None = Field(description="native: ApproximateNumberOfMessagesToMove")
    failure_reason: str | None
    principal: str
    filter: dict[str, Any]
    max_messages: int | None
    max_per_second: int | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class RedriveList(BaseModel):
    redrives: list[RedriveView]


# --- POST /jobs/{job_type} -----------------------------------------------------------------------------


class EnqueueRequest(Strict):
    jobs: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ENQUEUE)


class EnqueueResult(BaseModel):
    index: int = Field(description="position of the job in the request")
    job_id: uuid.UUID | None = Field(description="null when the job had no readable job_id")
    status: Literal["queued", "rejected"]
    error: str | None = None
    code: str | None = Field(
        default=None, description="invalid-job, unsupported-schema-version, duplicate-job-id, enqueue-failed"
    )


class EnqueueResponse(BaseModel):
    queued: int
    rejected: int
    results: list[EnqueueResult]


# --- batches -------------------------------------------------------------------------------------------


class BatchRetryRequest(Strict):
    chunk_size: int = Field(default=100, ge=1, le=MAX_CHUNK_SIZE)
    chunk_delay_seconds: int = Field(default=0, ge=0, le=MAX_CHUNK_DELAY_SECONDS)


class BatchView(BaseModel):
    """The ``batch`` object of docs/contracts.md §6."""

    id: uuid.UUID
    status: str
    total: int
    pending: int
    queued: int
    sent: int
    failed: int
    cancelled: int
    percent: float
    started_at: datetime
    finished_at: datetime | None
