"""Typed settings, read from the environment once per container.

Every function gets only the variables it needs from template.yaml; a setting a function uses but was not
given fails with a clear :class:`ConfigurationError` naming the variable, never with a ``None`` deep inside.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # API Gateway WebSocket management endpoint: https://{api-id}.execute-api.{region}.amazonaws.com/{stage}
    websocket_endpoint: str | None = None
    broadcast_concurrency: int = Field(default=16, ge=1, le=256)

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this container, read from the environment on first use."""
    return Settings()
