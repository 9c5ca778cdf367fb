"""The job contract (docs/contracts.md §2): the one definition of every SQS message body.

Every body is ``{"job_id", "job_type", "schema_version", "created_at", "correlation_id"?, "data"}``.
``switchboard schema`` writes these models as JSON Schema under ``docs/schemas/`` for producers in other
languages. Models build their validators on first use (``defer_build``), which keeps handler imports cheap.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, Self, TypeVar, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
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
# What any body may be, whatever its job type: SQS's own size limit, nesting far above any contract's (the
# envelope, data, and a free-form object inside it), integers a 64-bit column or a JSON number can hold.
MAX_BODY_BYTES = 256 * 1024
MAX_NESTING = 16
MAX_INT_DIGITS = 19
MAX_NOTIFICATION_DATA_BYTES = 4_096


Content = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CONTENT_CHARS)]
ContentType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.+/-]{0,31}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class JobData(BaseModel):
    """Base of every job type's ``data``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class SendMessageData(JobData):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    sender_id: uuid.UUID
    content: Content
    content_type: ContentType = "text"
    reply_to_id: uuid.UUID | None = None
    attachment_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_ATTACHMENTS)
    recipient_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=MAX_SEND_RECIPIENTS)
    batch_id: uuid.UUID | None = None


class DeliveryConfirmationData(JobData):
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


class EncryptionData(JobData):
    message_id: uuid.UUID
    operation: Literal["encrypt", "decrypt", "rotate"]
    key_id: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None


class IndexingData(JobData):
    message_id: uuid.UUID
    operation: Literal["index", "update", "delete"]


class BatchMessageData(JobData):
    batch_id: uuid.UUID
    sender_id: uuid.UUID
    content: Content | None = Field(
        default=None,
        description="required, except in a retry (attempt >= 1): it uses the batch's sealed content",
    )
    content_type: ContentType = "text"
    recipient_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BATCH_RECIPIENTS)
    chunk_size: int = Field(default=100, ge=1, le=MAX_CHUNK_SIZE)
    chunk_delay_seconds: int = Field(default=0, ge=0, le=MAX_CHUNK_DELAY_SECONDS)
    cursor: int | None = Field(default=None, ge=0, description="index of the next recipient to send to")
    attempt: int = Field(
        default=0,
        ge=0,
        le=1_000,
        description="0: the batch itself; n >= 1: its n-th retry of failed recipients",
    )

    @model_validator(mode="after")
    def _content_unless_retry(self) -> Self:
        # a retry sends the batch's own (sealed) content, never content of its own; the batch itself needs it
        if self.attempt == 0 and self.content is None:
            raise ValueError("content is required")
        if self.attempt > 0 and (self.content is not None or self.cursor is None):
            raise ValueError("a retry (attempt >= 1) carries no content and has a cursor")
        return self


class CleanupData(JobData):
    task: Literal["old-messages", "deleted-conversations", "expired-attachments", "all"]
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    hard_delete: bool = False
    dry_run: bool = False
    cursor: Annotated[str, StringConstraints(max_length=1024)] | None = None


NotificationChannel = Literal["push", "email", "sms", "in_app"]


class NotificationData(JobData):
    user_id: uuid.UUID
    category: Literal["message", "mention", "system"]
    title: ShortText
    body: Annotated[str, StringConstraints(min_length=1, max_length=4_000)]
    data: dict[str, Any] | None = None
    channels: list[NotificationChannel] | None = Field(default=None, min_length=1, max_length=4)
    conversation_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None

    @field_validator("data")
    @classmethod
    def _small_data(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value, separators=(",", ":"))) > MAX_NOTIFICATION_DATA_BYTES:
            raise ValueError(f"must be at most {MAX_NOTIFICATION_DATA_BYTES} bytes as JSON")
        return value


DataT = TypeVar("DataT", bound=JobData)


class Job(BaseModel, Generic[DataT]):
    """The envelope of every job. Each job type's model is a subclass with ``job_type`` pinned to its name."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    job_id: uuid.UUID
    job_type: str
    schema_version: Literal[1]
    created_at: AwareDatetime
    correlation_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    data: DataT

    @property
    def follow_up_correlation_id(self) -> str:
        """The correlation id of the jobs this job enqueues: its own, or else its job id."""
        return self.correlation_id or str(self.job_id)

    def child_job_id(self, *parts: object) -> uuid.UUID:
        """A deterministic id for something this job creates (a job it enqueues, a row it writes): redoing it
        after a retry gives the same id, which the consumer's inbox (or a unique key) de-duplicates."""
        return uuid.uuid5(self.job_id, "/".join(str(p) for p in parts))


@dataclass(frozen=True, eq=False)
class JobKind(Generic[DataT]):
    """One job type, declared once: its name, its data model and its queue. Everything else that names a job
    type (the job models, the ``Job`` union, the JSON Schemas, the queue's environment variable and its
    logical ids in template.yaml) is derived from these declarations.

    ``group_by`` names the data field that is the ``MessageGroupId`` of a FIFO queue (None: a standard
    queue)."""

    name: str
    data: type[DataT]
    group_by: str | None = None
    model: type[Job[DataT]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        job_type: Any = Literal[self.name]  # a literal built at run time: one model per declared name
        model = create_model(
            f"{self.camel_name}Job",
            __base__=Job[self.data],  # type: ignore[name-defined]
            __module__=__name__,
            job_type=(job_type, ...),
        )
        object.__setattr__(self, "model", model)

    @property
    def camel_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("-"))

    @property
    def fifo(self) -> bool:
        return self.group_by is not None

    @property
    def queue_url_variable(self) -> str:
        """The environment variable that holds this job type's queue URL in a function that enqueues it."""
        return f"{self.name.upper().replace('-', '_')}_QUEUE_URL"

    @property
    def queue_logical_id(self) -> str:
        return f"{self.camel_name}Queue"

    @property
    def dead_letter_queue_logical_id(self) -> str:
        return f"{self.camel_name}DLQ"

    @property
    def function_logical_id(self) -> str:
        return f"{self.camel_name}Function"

    def group_id(self, job: Job[DataT]) -> str | None:
        """The FIFO ``MessageGroupId`` of ``job``; None on a standard queue."""
        return None if self.group_by is None else str(getattr(job.data, self.group_by))

    def parse(self, body: str) -> Job[DataT]:
        """Validate an SQS body as a job of this type.

        Raises :class:`UnsupportedSchemaVersion` or :class:`InvalidJob` (both permanent) with a reason that
        names the offending fields but never echoes their values (bodies carry message content)."""
        raw = load_body(body)
        if not isinstance(raw, dict):
            raise InvalidJob("body must be a JSON object")
        version = raw.get("schema_version")
        if not isinstance(version, int | None) or isinstance(version, bool):
            raise UnsupportedSchemaVersion("schema_version must be an integer")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise UnsupportedSchemaVersion(
                f"schema_version {version} is not supported (supported: {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
            )
        if raw.get("job_type") != self.name:
            raise InvalidJob(f"job_type must be {self.name!r} on this queue")
        try:
            return self.model.model_validate(raw)
        except ValidationError as exc:
            raise InvalidJob(describe_validation_error(exc)) from None

    def new(
        self,
        data: DataT,
        *,
        job_id: uuid.UUID | None = None,
        correlation_id: str | None = None,
        created_at: datetime | None = None,
    ) -> Job[DataT]:
        """A job ready to send (``.model_dump_json()`` is the SQS body)."""
        return self.model.model_validate(
            {
                "job_id": job_id or uuid.uuid4(),
                "job_type": self.name,
                "schema_version": SCHEMA_VERSION,
                "created_at": created_at or datetime.now(UTC),
                "correlation_id": correlation_id,
                "data": data,
            }
        )

    def load(self, body: dict[str, Any]) -> Job[DataT]:
        """A job this code built and stored as JSON (e.g. in a pending effect), validated again."""
        return self.model.model_validate(body)


# --- the declarations (docs/contracts.md §1 and §2): one per job type ---------------------------------

SEND_MESSAGE = JobKind("send-message", SendMessageData, group_by="conversation_id")
DELIVERY_CONFIRMATION = JobKind("delivery-confirmation", DeliveryConfirmationData)
ENCRYPTION = JobKind("encryption", EncryptionData)
INDEXING = JobKind("indexing", IndexingData)
BATCH_MESSAGE = JobKind("batch-message", BatchMessageData)
CLEANUP = JobKind("cleanup", CleanupData)
NOTIFICATION = JobKind("notification", NotificationData)

JOB_KINDS: dict[str, JobKind[Any]] = {
    kind.name: kind
    for kind in (
        SEND_MESSAGE,
        DELIVERY_CONFIRMATION,
        ENCRYPTION,
        INDEXING,
        BATCH_MESSAGE,
        CLEANUP,
        NOTIFICATION,
    )
}


def load_body(body: str) -> Any:
    """Parse an SQS body as strict JSON that any job type can hold, or raise :class:`InvalidJob` (permanent).

    Refused: more than MAX_BODY_BYTES, NaN and infinities (``1e999`` included), integers of more than
    MAX_INT_DIGITS digits, nesting deeper than MAX_NESTING, NUL characters and unpaired surrogates (which
    PostgreSQL cannot store) in any string or key. The reasons never echo the body."""
    if len(body) > MAX_BODY_BYTES or len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise InvalidJob(f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        raw = json.loads(
            body, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJob(f"body is not JSON (line {getattr(exc, 'lineno', '?')})") from None
    except RecursionError:
        raise InvalidJob(f"body is nested more than {MAX_NESTING} levels deep") from None
    _check_values(raw)
    return raw


def _refuse_constant(name: str) -> Any:
    raise InvalidJob(f"body holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidJob("body holds a number too large for a double")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidJob(f"body holds an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _check_values(raw: Any) -> None:
    """Walk the parsed body (iteratively: no recursion limit to hit) for depth and unstorable strings."""
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth > MAX_NESTING:
                raise InvalidJob(f"body is nested more than {MAX_NESTING} levels deep")
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                stack.extend((item, depth + 1) for item in value.values())
            else:
                stack.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise InvalidJob("body holds a NUL character, which cannot be stored")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJob("body holds an unpaired surrogate, which is not text") from None


def describe_validation_error(exc: ValidationError) -> str:
    """``data.content: String should have at most 16384 characters; ...`` — locations and messages only."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
        for err in exc.errors(include_input=False)
    ]
    return "; ".join(parts[:10]) + (f" (+{len(parts) - 10} more)" if len(parts) > 10 else "")


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema: one per job type, and ``job.schema.json`` for any job."""
    schemas: dict[str, dict[str, Any]] = {
        f"{name}.schema.json": kind.model.model_json_schema() for name, kind in JOB_KINDS.items()
    }
    any_job: Any = Annotated[
        Union[tuple(kind.model for kind in JOB_KINDS.values())],  # noqa: UP007 - built from the declarations
        Field(discriminator="job_type"),
    ]
    schemas["job.schema.json"] = TypeAdapter(any_job).json_schema()
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
