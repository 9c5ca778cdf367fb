"""Domain exceptions. The job runner classifies failures by these types, never by message text.

``PermanentJobError``: retrying cannot help (bad input, unknown entity, not a participant). The body goes to
the DLQ with its reason and a row in the failures table.
``TransientJobError``: retrying can help (database unavailable, throttling, timeouts). The record is reported
failed and redelivered with backoff; after maxReceiveCount SQS moves it to the DLQ.
Anything else raised by a job is treated as transient: a bug must never acknowledge (and so lose) a job.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(SwitchboardError):
    """A setting the function needs is missing or wrong: a deployment problem, retried until fixed."""


class PermanentJobError(SwitchboardError):
    """The job can never succeed as sent."""

    reason = "permanent"


class InvalidJob(PermanentJobError):
    """The body is not a valid job of the queue's type."""

    reason = "invalid-job"


class UnsupportedSchemaVersion(PermanentJobError):
    reason = "unsupported-schema-version"


class UnknownEntity(PermanentJobError):
    """A user, conversation or message the job names does not exist (or is deleted)."""

    reason = "unknown-entity"


class NotAParticipant(PermanentJobError):
    """The acting user is not an active participant of the conversation."""

    reason = "not-a-participant"


class NotARecipient(PermanentJobError):
    """A confirmer is not a recipient of every message it confirms."""

    reason = "not-a-recipient"


class ConflictingJob(PermanentJobError):
    """The job contradicts stored state (e.g. a message_id already used in another conversation)."""

    reason = "conflict"


class InvalidData(PermanentJobError):
    """The database refused a value of the job as data (SQLSTATE class 22, or a NOT NULL, foreign-key or
    check violation): the same job would be refused again."""

    reason = "invalid-data"


class StaleJob(PermanentJobError):
    """The job was created longer ago than MAX_JOB_AGE_SECONDS (and is not a deliberate redrive)."""

    reason = "stale"


class EncryptionNotAvailable(PermanentJobError):
    """The conversation requires encryption at rest, which this path cannot honour: send-message without a key
    ring."""

    reason = "encryption-not-available"


class SealedContentRefused(PermanentJobError):
    """Sealed content failed to open: its ciphertext, nonce or key version was altered, it was copied from
    another message, or its algorithm is unknown. Fails closed (never garbage text); the message names the
    message and key version, never content or key material."""

    reason = "sealed-content-refused"


class EncryptionKeyUnavailable(PermanentJobError):
    """The key version a message is sealed under does not exist (crypto-shredded, or never made), or KMS
    refused to unwrap it (its wrapped key or encryption context does not match)."""

    reason = "encryption-key-unavailable"


class TransientJobError(SwitchboardError):
    """The job may succeed if retried later."""

    reason = "transient"


class DeadlineApproaching(TransientJobError):
    """Too little Lambda time is left to start this record safely; it is redelivered without penalty."""

    reason = "deadline"


class DatabaseUnavailable(TransientJobError):
    """The database could not be reached or dropped the connection."""

    reason = "database-unavailable"


class DependencyThrottled(TransientJobError):
    """An AWS dependency is throttling or failing; retried with backoff."""

    reason = "throttled"


class DeliveryRejected(SwitchboardError):
    """A provider refused one notification target for good (disabled endpoint, invalid address, opted out).
    Recorded as ``failed`` on that target's delivery row; never raised out of a job. ``code`` is the
    provider's error code (never an address or content)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# --- WebSocket (docs/contracts.md §6): refusals and lookups at the edge, never job failures -----------------


class SearchRefused(SwitchboardError):
    """A WebSocket ``search`` request that cannot be served. ``code`` is the error frame's stable code
    (``invalid-request``, ``invalid-query``, ``invalid-cursor``, ``forbidden``); the message never echoes the
    request."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidToken(SwitchboardError):
    """A WebSocket client's token is refused. ``reason`` is one of ``missing``, ``malformed``, ``expired``,
    ``not-yet-valid``, ``bad-signature``, ``wrong-audience``, ``wrong-issuer``; neither the reason nor the
    message ever contains the token."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class KeySetUnavailable(SwitchboardError):
    """The issuer's JWKS could not be fetched or read: not the client's fault, so no refusal is given."""


class UnknownConnection(SwitchboardError):
    """No ``ws_connections`` row has this connection id (never registered, swept, or already gone)."""
