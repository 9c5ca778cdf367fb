"""Typed settings, read from the environment once per container.

Every function gets only the variables it needs from template.yaml; a setting a function uses but was not
given fails with a clear :class:`ConfigurationError` naming the variable, never with a ``None`` deep inside.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigurationError

# The queue URL variable of each job type (template.yaml passes `!Ref <JobType>Queue` under these names).
QUEUE_URL_VARIABLES: dict[str, str] = {
    "send-message": "SEND_MESSAGE_QUEUE_URL",
    "delivery-confirmation": "DELIVERY_CONFIRMATION_QUEUE_URL",
    "encryption": "ENCRYPTION_QUEUE_URL",
    "indexing": "INDEXING_QUEUE_URL",
    "batch-message": "BATCH_MESSAGE_QUEUE_URL",
    "cleanup": "CLEANUP_QUEUE_URL",
    "notification": "NOTIFICATION_QUEUE_URL",
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
    # Backoff for transient failures: min(cap, base * 2**(attempt-1)) seconds with full jitter.
    retry_base_seconds: int = Field(default=2, ge=1)
    retry_max_seconds: int = Field(default=900, ge=1, le=43_200)
    # Stop starting new records when less than this is left before the Lambda deadline.
    deadline_margin_ms: int = Field(default=3_000, ge=0)

    send_message_queue_url: str | None = None
    delivery_confirmation_queue_url: str | None = None
    encryption_queue_url: str | None = None
    indexing_queue_url: str | None = None
    batch_message_queue_url: str | None = None
    cleanup_queue_url: str | None = None
    notification_queue_url: str | None = None

    # Notifications (DESIGN §6). Email is sent through SES v2 from a verified identity ("Name <address>" is
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

    # WebSocket client tokens (DESIGN §7): HS* with JWT_SECRET or the Secrets Manager secret JWT_SECRET_ARN
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

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def queue_url(self, job_type: str) -> str:
        """The URL of the queue that carries ``job_type`` jobs; raises if this function was not given it."""
        variable = QUEUE_URL_VARIABLES[job_type]
        url: str | None = getattr(self, variable.lower())
        if not url:
            raise ConfigurationError(f"{variable} is not set: this function cannot enqueue {job_type} jobs")
        return url

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
