"""The job contract (DESIGN §3): the one definition of every SQS message body.

Every body is ``{"job_id", "job_type", "schema_version", "created_at", "correlation_id"?, "data"}``.
``switchboard schema`` writes these models as JSON Schema under ``docs/schemas/`` for producers in other
languages. Models build their validators on first use (``defer_build``), which keeps handler imports cheap.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from shared.errors import InvalidJob, UnsupportedSchemaVersion

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})

MAX_CONTENT_CHARS = 16_384
MAX_CONFIRM_MESSAGE_IDS = 500
MAX_BATCH_RECIPIENTS = 5_000
MAX_CHUNK_SIZE = 1_000
MAX_CHUNK_DELAY_SECONDS = 900  # SQS DelaySeconds limit
MAX_SEND_RECIPIENTS = 5_000
MAX_ATTACHMENTS = 32


class JobType(StrEnum):
    SEND_MESSAGE = "send-message"
    DELIVERY_CONFIRMATION = "delivery-confirmation"
    ENCRYPTION = "encryption"
    INDEXING = "indexing"
    BATCH_MESSAGE = "batch-message"
    CLEANUP = "cleanup"
    NOTIFICATION = "notification"


Content = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CONTENT_CHARS)]
ContentType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.+/-]{0,31}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class SendMessageData(_Data):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    sender_id: uuid.UUID
    content: Content
    content_type: ContentType = "text"
    reply_to_id: uuid.UUID | None = None
    attachment_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_ATTACHMENTS)
    recipient_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=MAX_SEND_RECIPIENTS)
    batch_id: uuid.UUID | None = None


class DeliveryConfirmationData(_Data):
    recipient_id: uuid.UUID
    status: Literal["delivered", "read"]
    confirmed_at: AwareDatetime
    message_ids: list[uuid.UUID] | None = Field(
        default=None, min_length=1, max_length=MAX_CONFIRM_MESSAGE_IDS
    )
    read_up_to: uuid.UUID | None = None

    @model_validator(mode="after")
    def _exactly_one_target(self) -> Self:
        if (self.message_ids is None) == (self.read_up_to is None):
            raise ValueError("exactly one of message_ids or read_up_to is required")
        return self


class EncryptionData(_Data):
    message_id: uuid.UUID
    operation: Literal["encrypt", "decrypt", "rotate"]
    key_id: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None


class IndexingData(_Data):
    message_id: uuid.UUID
    operation: Literal["index", "update", "delete"]


class BatchMessageData(_Data):
    batch_id: uuid.UUID
    sender_id: uuid.UUID
    content: Content
    content_type: ContentType = "text"
    recipient_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BATCH_RECIPIENTS)
    chunk_size: int = Field(default=100, ge=1, le=MAX_CHUNK_SIZE)
    chunk_delay_seconds: int = Field(default=0, ge=0, le=MAX_CHUNK_DELAY_SECONDS)
    cursor: int | None = Field(default=None, ge=0, description="index of the next recipient to send to")


class CleanupData(_Data):
    task: Literal["old-messages", "deleted-conversations", "expired-attachments", "all"]
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    hard_delete: bool = False
    dry_run: bool = False
    cursor: Annotated[str, StringConstraints(max_length=1024)] | None = None


NotificationChannel = Literal["push", "email", "sms", "in_app"]


class NotificationData(_Data):
    user_id: uuid.UUID
    category: Literal["message", "mention", "system"]
    title: ShortText
    body: Annotated[str, StringConstraints(min_length=1, max_length=4_000)]
    data: dict[str, Any] | None = None
    channels: list[NotificationChannel] | None = Field(default=None, min_length=1, max_length=4)
    conversation_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    job_id: uuid.UUID
    schema_version: Literal[1]
    created_at: AwareDatetime
    correlation_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None


class SendMessageJob(_Job):
    job_type: Literal[JobType.SEND_MESSAGE]
    data: SendMessageData


class DeliveryConfirmationJob(_Job):
    job_type: Literal[JobType.DELIVERY_CONFIRMATION]
    data: DeliveryConfirmationData


class EncryptionJob(_Job):
    job_type: Literal[JobType.ENCRYPTION]
    data: EncryptionData


class IndexingJob(_Job):
    job_type: Literal[JobType.INDEXING]
    data: IndexingData


class BatchMessageJob(_Job):
    job_type: Literal[JobType.BATCH_MESSAGE]
    data: BatchMessageData


class CleanupJob(_Job):
    job_type: Literal[JobType.CLEANUP]
    data: CleanupData


class NotificationJob(_Job):
    job_type: Literal[JobType.NOTIFICATION]
    data: NotificationData


Job = Annotated[
    SendMessageJob
    | DeliveryConfirmationJob
    | EncryptionJob
    | IndexingJob
    | BatchMessageJob
    | CleanupJob
    | NotificationJob,
    Field(discriminator="job_type"),
]

JOB_MODELS: dict[JobType, type[_Job]] = {
    JobType.SEND_MESSAGE: SendMessageJob,
    JobType.DELIVERY_CONFIRMATION: DeliveryConfirmationJob,
    JobType.ENCRYPTION: EncryptionJob,
    JobType.INDEXING: IndexingJob,
    JobType.BATCH_MESSAGE: BatchMessageJob,
    JobType.CLEANUP: CleanupJob,
    JobType.NOTIFICATION: NotificationJob,
}


def parse_job(body: str, expected: JobType) -> Any:
    """Validate an SQS body as a job of type ``expected``.

    Raises :class:`UnsupportedSchemaVersion` or :class:`InvalidJob` (both permanent) with a reason that names
    the offending fields but never echoes their values (bodies carry message content)."""
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJob(f"body is not JSON (line {getattr(exc, 'lineno', '?')})") from None
    if not isinstance(raw, dict):
        raise InvalidJob("body must be a JSON object")
    version = raw.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise UnsupportedSchemaVersion(
            f"schema_version {version!r} is not supported (supported: {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
            if isinstance(version, int | None)
            else "schema_version must be an integer"
        )
    if raw.get("job_type") != expected:
        raise InvalidJob(f"job_type must be {expected.value!r} on this queue")
    try:
        return JOB_MODELS[expected].model_validate(raw)
    except ValidationError as exc:
        raise InvalidJob(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """``data.content: String should have at most 16384 characters; ...`` — locations and messages only."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
        for err in exc.errors(include_input=False)
    ]
    return "; ".join(parts[:10]) + (f" (+{len(parts) - 10} more)" if len(parts) > 10 else "")


def new_job(
    job_type: JobType,
    data: _Data,
    *,
    job_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
    created_at: datetime | None = None,
) -> _Job:
    """A job ready to send (``.model_dump_json()`` is the SQS body)."""
    return JOB_MODELS[job_type].model_validate(
        {
            "job_id": job_id or uuid.uuid4(),
            "job_type": job_type,
            "schema_version": SCHEMA_VERSION,
            "created_at": created_at or datetime.now(UTC),
            "correlation_id": correlation_id,
            "data": data,
        }
    )


def child_job_id(parent_job_id: uuid.UUID, *parts: object) -> uuid.UUID:
    """A deterministic job id for a job enqueued by another job: redoing the enqueue after a retry sends the
    same id, which the consumer's inbox de-duplicates."""
    return uuid.uuid5(parent_job_id, "/".join(str(p) for p in parts))


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema: one per job type, and ``job.schema.json`` for any job."""
    schemas: dict[str, dict[str, Any]] = {
        f"{job_type.value}.schema.json": model.model_json_schema() for job_type, model in JOB_MODELS.items()
    }
    schemas["job.schema.json"] = TypeAdapter(Job).json_schema()
    for name, schema in schemas.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://switchboard.dev/schemas/{name}"
    return schemas


def write_schemas(directory: Path) -> list[Path]:
    """Write :func:`json_schemas` under ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in sorted(json_schemas().items()):
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
