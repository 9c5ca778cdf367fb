"""The management API's refusals: each one a class with the HTTP status and stable code it is answered with
(``{"error": {"code", "message"}}``, docs/contracts.md §8). Messages name what is wrong, never echo values."""

from __future__ import annotations


class ManagementError(Exception):
    """A request the management API refuses or cannot serve."""

    status = 400
    code = "invalid-request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequest(ManagementError):
    status = 400
    code = "invalid-request"


class UnknownJobType(ManagementError):
    status = 404
    code = "unknown-job-type"


class NotFound(ManagementError):
    status = 404
    code = "not-found"


class Conflict(ManagementError):
    status = 409
    code = "conflict"


class Unavailable(ManagementError):
    """A dependency (SQS, the database) failed; the request may be sent again."""

    status = 503
    code = "unavailable"
