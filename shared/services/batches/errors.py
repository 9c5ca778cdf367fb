"""Why a batch operation the management API asks for is refused (docs/contracts.md §5 batch-message)."""

from __future__ import annotations

from typing import Literal

from shared.errors import SwitchboardError

RetryRefusal = Literal["running", "cancelled", "no-failed-recipients", "content-not-kept"]


class BatchNotRetryable(SwitchboardError):
    """The batch's failed recipients cannot be retried now; ``reason`` says why (the management API answers
    409 with it as the error code): the batch is still ``running`` (wait for it, or cancel it), it was
    ``cancelled``, it has no failed recipient that names its recipient, or its content is no longer kept
    (cleaned up, or the batch predates migration 0010). Nothing was changed."""

    def __init__(self, reason: RetryRefusal, message: str) -> None:
        super().__init__(message)
        self.reason: RetryRefusal = reason
