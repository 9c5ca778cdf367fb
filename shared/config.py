"""Typed settings, read from the environment once per container.

Every function gets only the variables it needs from template.yaml; a setting a function uses but was not
given fails with a clear :class:`ConfigurationError` naming the variable, never with a ``None`` deep inside.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from shared.jobs import JobKind



def _job_queue_urls() -> dict[str, str]:
    """job type -> queue URL, for the job types whose ``<JOB_TYPE>_QUEUE_URL`` this function was given
    (template.yaml passes ``!Ref <JobType>Queue`` to the functions that enqueue that job type)."""
    from shared.jobs import JOB_KINDS

    return {
        name: url for name, kind in JOB_KINDS.items() if (url := os.environ.get(kind.queue_url_variable))
    }


class Settings(BaseSettings):
    """Everything a function may read from its environment. Unknown variables are ignored."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Database: a URL (local, tests) or a Secrets Manager secret in the RDS JSON shape (AWS).
    database_url: str | None = None
    db_secret_arn: str | None = None
    db_secret_max_age_seconds: int = Field(default=300, ge=0)
    db_pool_size: int = Field(default=2, ge=1)
    # Behind RDS Proxy the proxy pools; a Lambda-side pool only pins proxy connections.
    db_use_null_pool: bool = False
    db_statement_timeout_ms: int = Field(default=10_000, ge=0)

    # The queue this function consumes: where permanent failures go, and after how many receives SQS does it.
    dead_letter_queue_url: str | None = None
    max_receive_count: int = Field(default=5, ge=1)
    # Backoff for transient failures: between half and all of min(cap, base * 2**(attempt-1)) seconds (equal
    # jitter). With 5 receives the window is 150-300 s, longer than a Multi-AZ failover (runtime/retry.py).
    retry_base_seconds: int = Field(default=20, ge=1)
    retry_max_seconds: int = Field(default=900, ge=1, le=43_200)
    # Stop starting new records when less than this is left before the Lambda deadline.
    deadline_margin_ms: int = Field(default=3_000, ge=0)
    # A job created longer ago than this is refused as stale (a redriven message, which carries the
    # RedriveId attribute, is exempt): a send-message from last year must not be broadcast as new.
    max_job_age_seconds: int = Field(default=4 * 24 * 3600, ge=60)

    # Queues this function enqueues to, read from the variables the job declarations name (shared/jobs.py).
    job_queue_urls: dict[str, str] = Field(default_factory=_job_queue_urls, exclude=True)

    # Notifications (docs/contracts.md §5). Email goes via SES v2 from a verified sender ("Name <address>" is
    # allowed), with an optional configuration set for event publishing. The SMS sender id is sent only where
    # set (many countries do not support one). An empty value means unset.
    notification_email_from: str | None = None
    ses_configuration_set: str | None = None
    sms_sender_id: str | None = None
    # One-click unsubscribe target for email's List-Unsubscribe header; "{user_id}" is replaced. Unset: a
    # mailto: to the sender address.
    notification_unsubscribe_url: str | None = None

    # API Gateway WebSocket management endpoint: https://{api-id}.execute-api.{region}.amazonaws.com/{stage}
    websocket_endpoint: str | None = None
    broadcast_concurrency: int = Field(default=16, ge=1, le=256)
    # Client frames over this many bytes get a `frame-too-large` error frame (API Gateway's frame: 32 KB).
    websocket_max_frame_bytes: int = Field(default=32 * 1024, ge=1)
    # The sweeper deletes rows of connections older than API Gateway's 2 h maximum connection duration, and,
    # when set, of connections that sent nothing for this long (None: never by idleness; see ws_sweeper).
    connection_max_age_seconds: int = Field(default=7_200, ge=60)
    connection_idle_seconds: int | None = Field(default=None, ge=600)

    # WebSocket client tokens (docs/contracts.md §6): HS* with JWT_SECRET or the secret JWT_SECRET_ARN
    # (a plain string), RS*/ES*/PS* against the issuer's JWKS. Issuer and audience are always checked.
    jwt_secret: SecretStr | None = None
    jwt_secret_arn: str | None = None
    jwt_secret_max_age_seconds: int = Field(default=300, ge=0)
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # Comma-separated allow list; empty: HS256 when a secret is configured, RS256 and ES256 with a JWKS URL.
    jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = ()
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)

    # Batch fan-out (docs/contracts.md §5 batch-message): once every chunk is enqueued, the batch function
    # checks this often whether every recipient has an outcome; recipients still without one this long after
    # the last chunk are counted failed (`no-outcome`), so a batch always ends.
    batch_settle_check_seconds: int = Field(default=10, ge=0, le=900)
    batch_settle_timeout_seconds: int = Field(default=1_800, ge=60)

    # Cleanup (docs/contracts.md §5 cleanup). Messages older than the retention (a job's `retention_days`
    # wins) are soft-deleted; soft-deleted messages and conversations are purged after the grace period.
    # Each statement touches at most `cleanup_batch_size` rows; an invocation works for at most
    # `cleanup_time_budget_seconds` (well inside the function's timeout) and then enqueues a continuation.
    cleanup_retention_days: int = Field(default=365, ge=1, le=36_500)
    cleanup_grace_days: int = Field(default=30, ge=0, le=36_500)
    cleanup_batch_size: int = Field(default=500, ge=1, le=1_000)
    cleanup_time_budget_seconds: float = Field(default=20.0, ge=0, le=600)
    # Completed job_inbox rows are kept longer than any redelivery can come: SQS keeps a job 4 days and its
    # DLQ 14 days, so a redriven job is at most 18 days old; below that a redrive could run a job twice.
    cleanup_inbox_retention_days: int = Field(default=30, ge=19)
    cleanup_failures_retention_days: int = Field(default=90, ge=1)
    # A batch that finished with failures keeps its sealed content this long, for a retry of its failed ones.
    cleanup_batch_content_retention_days: int = Field(default=30, ge=0)
    # The management API's redrive records (who moved what, when) are an audit trail: kept a year by default.
    cleanup_redrives_retention_days: int = Field(default=365, ge=1)
    # Encryption at rest (docs/contracts.md §5 encryption): the KMS key that wraps the per-conversation data
    # keys; plaintext data keys are cached per container for at most `encryption_key_cache_seconds`, at most
    # `encryption_key_cache_size` of them; a key version seals at most `encryption_max_messages_per_key`
    # messages (far under the 2**32 random-nonce bound of AES-GCM), then a new version is made.
    encryption_key_arn: str | None = None
    encryption_key_cache_seconds: int = Field(default=300, ge=0, le=86_400)
    encryption_key_cache_size: int = Field(default=1_000, ge=1, le=1_000_000)
    encryption_max_messages_per_key: int = Field(default=2**30, ge=1, le=2**32)
    # Where attachments are stored (S3 key = attachments.storage_key). Unset: expired attachments are skipped.
    attachments_bucket: str | None = None
    # The key prefix the attachments live under ("" = the whole bucket): the reconciling sweep lists it.
    attachments_prefix: str = ""
    # The sweep reports objects under the prefix that no attachments row names; it deletes them only when
    # this is set. Objects younger than the minimum age are left alone (an upload whose row is not written
    # yet is not an orphan).
    cleanup_delete_orphan_objects: bool = False
    cleanup_orphan_min_age_hours: float = Field(default=24.0, ge=0)
    # Keys the orphan sweep lists in one job before it continues with a cursor job (20 DeleteObjects calls).
    cleanup_max_listed_keys: int = Field(default=20_000, ge=1)

    # Management API (docs/contracts.md §8). Health: a DLQ holding at least `..._dlq_degraded_depth` visible
    # messages makes the status `degraded` (`..._dlq_unhealthy_depth`: `unhealthy`); so does a queue whose
    # oldest message is older than the age thresholds. Selective redrive works in slices of at most
    # `..._redrive_slice_seconds`, stopping `..._redrive_margin_seconds` before the deadline, and continues in
    # an asynchronous invocation of the function itself; a running redrive whose last slice ended more than
    # `..._redrive_stall_seconds` ago is continued again when it is read (a lost continuation).
    management_dlq_degraded_depth: int = Field(default=1, ge=1)
    management_dlq_unhealthy_depth: int = Field(default=1_000, ge=1)
    management_queue_age_degraded_seconds: int = Field(default=300, ge=1)
    management_queue_age_unhealthy_seconds: int = Field(default=1_800, ge=1)
    management_redrive_slice_seconds: float = Field(default=20.0, gt=0, le=840)
    management_redrive_margin_seconds: float = Field(default=5.0, ge=0, le=60)
    management_redrive_stall_seconds: int = Field(default=120, ge=10)

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def queue_url(self, kind: JobKind[Any]) -> str:
        """The URL of the queue that carries ``kind`` jobs; raises if this function was not given it."""
        url = self.job_queue_urls.get(kind.name)
        if not url:
            raise ConfigurationError(
                f"{kind.queue_url_variable} is not set: this function cannot enqueue {kind.name} jobs"
            )
        return url

    def require(self, *variables: str) -> None:
        """Check that every one of ``variables`` (environment variable names) is set; raise one
        :class:`ConfigurationError` naming all that are not. Functions call it before touching any work."""
        missing = [variable for variable in variables if not self._value_of(variable)]
        if missing:
            raise ConfigurationError(
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                "this function cannot run without it (see template.yaml)"
            )

    def _value_of(self, variable: str) -> Any:
        from shared.jobs import JOB_KINDS

        for kind in JOB_KINDS.values():
            if kind.queue_url_variable == variable:
                return self.job_queue_urls.get(kind.name)
        if variable.lower() not in type(self).model_fields:
            raise ValueError(f"{variable} is not a setting")
        return getattr(self, variable.lower())

    def require_dead_letter_queue_url(self) -> str:
        if not self.dead_letter_queue_url:
            raise ConfigurationError(
                "DEAD_LETTER_QUEUE_URL is not set: permanent failures have nowhere to go"
            )
        return self.dead_letter_queue_url

    def require_websocket_endpoint(self) -> str:
        if not self.websocket_endpoint:
            raise ConfigurationError("WEBSOCKET_ENDPOINT is not set: cannot post to WebSocket connections")
        return self.websocket_endpoint

    def require_notification_email_from(self) -> str:
        if not self.notification_email_from:
            raise ConfigurationError("NOTIFICATION_EMAIL_FROM is not set: cannot send notification emails")
        return self.notification_email_from


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this container, read from the environment on first use."""
    return Settings()
