"""Typed models of all tables. The shared tables (docs/contracts.md §4) keep their contract names and columns;
the chat API writes them too. Statuses are text with CHECK constraints so other services can read them."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    Time,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REGCONFIG, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# A bound array of UUIDs: `= ANY(:ids)` and `unnest(:ids)` take N ids as one parameter.
UUID_ARRAY = ARRAY(UUID(as_uuid=True))

# Stable constraint names, so Alembic migrations can refer to them (polar's kit/db/models/base.py does this).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MESSAGE_STATUSES = ("sending", "sent", "delivered", "read", "failed")
MESSAGE_BATCH_STATUSES = ("running", "completed", "completed_with_failures", "cancelled")
DELIVERY_STATUSES = ("pending", "delivered", "read", "failed")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        uuid.UUID: UUID(as_uuid=True),
        datetime: DateTime(timezone=True),
    }


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = _now()
    deleted_at: Mapped[datetime | None]


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint(_one_of("kind", ("direct", "group")), name="kind"),
        CheckConstraint("retention_days >= 1", name="retention_days"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str | None] = mapped_column(String(200))
    encryption_enabled: Mapped[bool] = mapped_column(Boolean, server_default="false")
    created_at: Mapped[datetime] = _now()
    deleted_at: Mapped[datetime | None]
    # The text search configuration of this conversation's index and of queries against it (migration 0005).
    search_config: Mapped[str] = mapped_column(REGCONFIG, server_default=text("'simple'::regconfig"))
    # Days its messages are kept (set by the chat API; null: cleanup's default). Migration 0008.
    retention_days: Mapped[int | None] = mapped_column(Integer)


class ConversationParticipant(Base):
    __tablename__ = "conversation_participants"
    __table_args__ = (Index("ix_conversation_participants_user_id", "user_id"),)

    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    joined_at: Mapped[datetime] = _now()
    left_at: Mapped[datetime | None]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_id_seq"),
        CheckConstraint(_one_of("status", MESSAGE_STATUSES), name="status"),
        CheckConstraint("content IS NULL OR content_ciphertext IS NULL", name="plaintext_or_sealed"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id"))
    sender_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(32), server_default="text")
    reply_to_id: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(String(16), server_default="sending")
    created_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    # Envelope encryption (plaintext `content` is NULL while these are set; shared/services/crypto).
    # `encryption_key_id` is the contract's column, unused: the key is (conversation_id, key version).
    content_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    encryption_key_id: Mapped[uuid.UUID | None]
    encryption_key_version: Mapped[int | None] = mapped_column(Integer)
    encryption_algorithm: Mapped[str | None] = mapped_column(String(32))


class MessageDelivery(Base):
    __tablename__ = "message_deliveries"
    __table_args__ = (
        CheckConstraint(_one_of("status", DELIVERY_STATUSES), name="status"),
        Index("ix_message_deliveries_recipient_id_status", "recipient_id", "status"),
    )

    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    recipient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    delivered_at: Mapped[datetime | None]
    read_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = _now()


class MessageRead(Base):
    __tablename__ = "message_reads"

    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    read_at: Mapped[datetime]


class Attachment(Base):
    """An upload (written by the chat API). send-message links it to a message (``message_id``, and through
    the message its conversation) only when ``uploaded_by`` is the message's sender and it is not attached to
    another message; a row without ``uploaded_by`` (written before migration 0004) can no longer be linked."""

    __tablename__ = "attachments"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id"), index=True)
    storage_key: Mapped[str] = mapped_column(String(1024))
    content_type: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    uploaded_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))


class WsConnection(Base):
    __tablename__ = "ws_connections"
    # The sweeper finds connections past API Gateway's maximum duration by connected_at, which never changes;
    # last_seen_at changes with every client frame and stays unindexed so those updates stay HOT.
    __table_args__ = (Index("ix_ws_connections_connected_at", "connected_at"),)

    connection_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    connected_at: Mapped[datetime] = _now()
    last_seen_at: Mapped[datetime] = _now()


class MessageBatch(Base):
    """Progress of a batch-message fan-out. A send-message job carrying its ``batch_id`` advances it once
    (``batch_jobs``), and only when the job's ``sender_id`` is this batch's ``sender_id`` (NOT NULL since
    migration 0001, so every row has one)."""

    __tablename__ = "message_batches"
    __table_args__ = (CheckConstraint(_one_of("status", MESSAGE_BATCH_STATUSES), name="status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    sender_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    total: Mapped[int] = mapped_column(Integer)
    queued: Mapped[int] = mapped_column(Integer, server_default="0")
    sent: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(32), server_default="running")  # 32: migration 0006
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None]
    # migration 0006: the batch function's snapshot of cancelled rows, when it was cancelled, and when its
    # last chunk was enqueued (it waits for the outcomes from then on)
    cancelled: Mapped[int] = mapped_column(Integer, server_default="0")
    cancelled_at: Mapped[datetime | None]
    enqueued_at: Mapped[datetime | None]
    # migration 0010: how many times its failed recipients were retried (the attempt now running), and the
    # batch's content sealed at rest for those retries (AES-256-GCM under a KMS data key whose encryption
    # context names the batch; shared/services/batches/sealing.py), cleared once no retry can need it
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    content_type: Mapped[str | None] = mapped_column(String(32))
    content_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_kms_key_id: Mapped[str | None] = mapped_column(String(2048))


# "retried" (migration 0010): a failed row a retry superseded with a new row (new job id); it counts nowhere
BATCH_JOB_STATUSES = ("pending", "queued", "sent", "failed", "cancelled", "retried")


class BatchJob(Base):
    """How one send-message job of a batch counted in ``message_batches``: one row per (batch, job), so a job
    counts once whatever the path (sent, or dead-lettered) and however often it is delivered or redriven.

    Keyed by the job, not the recipient: a send-message job need not name its recipient (``recipient_ids`` is
    optional, docs/contracts.md §2; batch fan-out sends each job "to a direct conversation with the
    recipient", §5), and a job dead-lettered before its conversation was found has no known recipient, yet
    must still count as failed. ``recipient_id`` is recorded whenever the job has exactly one: the single
    resolved recipient of a sent job, the single ``recipient_ids`` entry of a failed one. The planned fan-out
    can extend this table into its per-recipient ledger: it knows each child job's deterministic id and its
    recipient, so it can pre-insert rows (with a ``queued`` status, and an ``error`` column if it needs one)
    that send-message then settles on the same key; counts then derive from the rows.

    ``message_id`` is the job's message id (the stored message when ``sent``). No foreign keys besides the
    batch: a failed job may name users and messages that do not exist."""

    __tablename__ = "batch_jobs"
    __table_args__ = (
        CheckConstraint(_one_of("status", BATCH_JOB_STATUSES), name="status"),
        Index("ix_batch_jobs_batch_id_status", "batch_id", "status"),
    )

    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("message_batches.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    recipient_id: Mapped[uuid.UUID | None]
    message_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    error: Mapped[str | None] = mapped_column(String(200))  # migration 0006: why the row failed (a code)
    # migration 0010: the batch's retry this row belongs to (0: the batch itself)
    attempt: Mapped[int] = mapped_column(Integer, server_default="0")


class JobInbox(Base):
    """One row per job ever committed: the idempotency record, written in the job's own transaction.

    ``effects_pending`` holds the external effects (posts, enqueues) still to perform after commit, so a
    redelivered job redoes only those."""

    __tablename__ = "job_inbox"

    job_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    job_type: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = _now()
    effects_pending: Mapped[list[Any]] = mapped_column(JSONB, server_default="[]")
    completed_at: Mapped[datetime | None]


class JobFailure(Base):
    """A job that was dead-lettered (permanent failure, or retries exhausted). One row per SQS message;
    the body itself stays in the DLQ (message content never lands in logs or this table)."""

    __tablename__ = "job_failures"
    __table_args__ = (Index("ix_job_failures_job_type_failed_at", "job_type", "last_failed_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    sqs_message_id: Mapped[str] = mapped_column(String(128), unique=True)
    source_queue_arn: Mapped[str] = mapped_column(String(1024))
    job_id: Mapped[uuid.UUID | None]
    job_type: Mapped[str] = mapped_column(String(32))
    error_class: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    permanent: Mapped[bool] = mapped_column(Boolean)
    first_failed_at: Mapped[datetime] = _now()
    last_failed_at: Mapped[datetime] = _now()
    redriven_at: Mapped[datetime | None]


REDRIVE_MODES = ("native", "selective")
REDRIVE_STATUSES = ("running", "completed", "cancelling", "cancelled", "failed")


class Redrive(Base):
    """One redrive asked of the management API (docs/contracts.md §8), who asked it and how far it got.

    ``native``: an SQS message-move task (``task_handle``), its counts refreshed from ListMessageMoveTasks.
    ``selective``: moved by the management function itself, slice by slice; ``lease_until`` keeps two
    invocations from working on it at once. ``filter`` is the request's filter; it never holds content."""

    __tablename__ = "redrives"
    __table_args__ = (
        CheckConstraint(_one_of("mode", REDRIVE_MODES), name="mode"),
        CheckConstraint(_one_of("status", REDRIVE_STATUSES), name="status"),
        Index("ix_redrives_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    job_type: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    principal: Mapped[str] = mapped_column(String(2048))
    filter: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    max_messages: Mapped[int | None] = mapped_column(Integer)
    max_per_second: Mapped[int | None] = mapped_column(Integer)
    matched: Mapped[int] = mapped_column(BigInteger, server_default="0")
    moved: Mapped[int] = mapped_column(BigInteger, server_default="0")
    kept: Mapped[int] = mapped_column(BigInteger, server_default="0")
    failed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    to_move: Mapped[int | None] = mapped_column(BigInteger)
    task_handle: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    slices: Mapped[int] = mapped_column(Integer, server_default="0")
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None]


# --- notifications (docs/contracts.md §5 notification) ------------------------------------------------------

NOTIFICATION_CHANNELS = ("push", "email", "sms", "in_app")
NOTIFICATION_CATEGORIES = ("message", "mention", "system")
DEVICE_PLATFORMS = ("apns", "apns_sandbox", "fcm")
NOTIFICATION_DELIVERY_STATUSES = ("pending", "sent", "failed", "skipped")


class NotificationPreference(Base):
    """A user's choice for one channel. No row: the channel's default (push and in_app on, email and sms off).

    Quiet hours are a local-time window ``[quiet_start, quiet_end)`` in ``time_zone`` (IANA name); a window
    whose start is after its end wraps midnight; equal bounds mean no quiet hours. They hold back push and
    sms only."""

    __tablename__ = "notification_preferences"
    __table_args__ = (
        CheckConstraint(_one_of("channel", NOTIFICATION_CHANNELS), name="channel"),
        CheckConstraint("(quiet_start IS NULL) = (quiet_end IS NULL)", name="quiet_hours_complete"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    quiet_start: Mapped[time | None] = mapped_column(Time)
    quiet_end: Mapped[time | None] = mapped_column(Time)
    time_zone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    updated_at: Mapped[datetime] = _now()


class MutedConversation(Base):
    """A conversation whose notifications reach the user in-app only, until ``until`` (NULL: until
    unmuted)."""

    __tablename__ = "muted_conversations"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    # A mute of a purged conversation means nothing: it goes with the conversation.
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    until: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()


class DeviceEndpoint(Base):
    """A device registered for push: its platform token and the SNS platform endpoint created for it (by the
    chat API). Switchboard sets ``enabled`` false when SNS reports the endpoint disabled or unknown."""

    __tablename__ = "device_endpoints"
    __table_args__ = (
        CheckConstraint(_one_of("platform", DEVICE_PLATFORMS), name="platform"),
        UniqueConstraint("platform", "token", name="uq_device_endpoints_platform_token"),
        Index("ix_device_endpoints_user_id", "user_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    platform: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(4096))
    sns_endpoint_arn: Mapped[str] = mapped_column(String(1024), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    disabled_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class InAppNotification(Base):
    """A notification in the user's in-app inbox. ``conversation_id`` / ``message_id`` are references without
    foreign keys: retention may remove the message while the notification stays."""

    __tablename__ = "in_app_notifications"
    __table_args__ = (
        CheckConstraint(_one_of("category", NOTIFICATION_CATEGORIES), name="category"),
        Index("ix_in_app_notifications_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    category: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    conversation_id: Mapped[uuid.UUID | None]
    message_id: Mapped[uuid.UUID | None]
    read_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()


class NotificationDelivery(Base):
    """The outcome of one notification job on one channel and target: an SNS endpoint ARN (push), an email
    address, a phone number, an in-app notification id, or ``''`` when the channel as a whole was skipped
    (``error`` says why). Rows are written in the job's transaction as ``pending`` and settled after each
    send, so a redelivered job never sends again what is ``sent``."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint(
            "job_id", "channel", "target", name="uq_notification_deliveries_job_id_channel_target"
        ),
        CheckConstraint(_one_of("channel", NOTIFICATION_CHANNELS), name="channel"),
        CheckConstraint(_one_of("status", NOTIFICATION_DELIVERY_STATUSES), name="status"),
        Index("ix_notification_deliveries_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    provider_message_id: Mapped[str | None] = mapped_column(String(256))
    error: Mapped[str | None] = mapped_column(String(1000))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


# --- search (migration 0005; docs/contracts.md §4, §5 indexing) ---------------------------------------------


class MessageSearch(Base):
    """The search index of one message (the ``indexing`` job): ``document``, a tsvector (content A, sender
    name B, conversation title C, built with ``search_config``), for a plaintext conversation; or, for an
    encrypted one, ``blind_tokens`` (keyed hashes of its whole tokens, shared/services/search/blind.py) and
    ``key_version`` (the data key version its index key derives from), with no ``search_config`` (migration
    0009). Exactly one of ``document`` and ``blind_tokens`` is set. ``conversation_id`` and ``created_at``
    are the message's, copied so a search filters and orders on this table alone."""

    __tablename__ = "message_search"
    __table_args__ = (
        CheckConstraint("(document IS NULL) <> (blind_tokens IS NULL)", name="one_kind"),
        CheckConstraint("(blind_tokens IS NULL) = (key_version IS NULL)", name="blind_key_version"),
        CheckConstraint(
            "blind_tokens IS NULL OR (search_config IS NULL AND key_version >= 1)", name="blind_row_shape"
        ),
        Index("ix_message_search_conversation_id_created_at", "conversation_id", "created_at", "message_id"),
        Index("ix_message_search_document", "document", postgresql_using="gin"),
        Index("ix_message_search_blind_tokens", "blind_tokens", postgresql_using="gin"),
    )

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]
    search_config: Mapped[str | None] = mapped_column(REGCONFIG)
    document: Mapped[Any | None] = mapped_column(TSVECTOR)
    blind_tokens: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    key_version: Mapped[int | None] = mapped_column(Integer)
    indexed_at: Mapped[datetime] = _now()



# --- encryption at rest (migration 0007; docs/contracts.md §4, §5 encryption) -------------------------------


class EncryptionKey(Base):
    """One data key version of a conversation, wrapped by KMS (encryption context ``conversation_id``,
    ``key_version``). ``retired_at``: no message is sealed under it any more. ``messages_sealed``: how many
    seals it has made (bounded by ENCRYPTION_MAX_MESSAGES_PER_KEY). Deleting the rows crypto-shreds."""

    __tablename__ = "encryption_keys"
    __table_args__ = (CheckConstraint("key_version >= 1", name="key_version"),)

    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id"), primary_key=True)
    key_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    kms_key_id: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = _now()
    retired_at: Mapped[datetime | None]
    messages_sealed: Mapped[int] = mapped_column(BigInteger, server_default="0")
