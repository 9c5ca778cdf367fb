"""The management API's routes (docs/contracts.md §8): Powertools' ``APIGatewayHttpResolver`` with data
validation, so every body, path and query parameter is validated from the pydantic models in schemas.py and
the OpenAPI document (GET /openapi.json, docs/openapi.json) is generated from the same declarations.

Every refusal is ``{"error": {"code", "message"}}``: a request that fails validation is **400**
``invalid-request`` (not Powertools' default 422 body), an unknown job type **404** ``unknown-job-type``, an
unknown id **404** ``not-found``, a state conflict **409** ``conflict``, an AWS or database failure **503**
``unavailable``. Messages name fields and never echo the request's values."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from sqlalchemy.exc import SQLAlchemyError

from shared.bootstrap import dependencies
from shared.errors import DatabaseUnavailable
from shared.observability import logger
from shared.services.batches import BatchNotRetryable, cancel_batch, get_batch, retry_failed
from shared.services.management import failures, health, redrive
from shared.services.management.enqueue import enqueue_jobs
from shared.services.management.errors import Conflict, ManagementError, NotFound
from shared.services.management.schemas import (
    BatchRetryRequest,
    BatchView,
    EnqueueRequest,
    EnqueueResponse,
    ErrorBody,
    FailureReport,
    HealthReport,
    JobFailures,
    RedriveList,
    RedriveRequest,
    RedriveView,
)

TITLE = "Switchboard management API"
VERSION = "1"
DESCRIPTION = (
    "Health, failed-job analysis, redrive and bulk enqueue for Switchboard's queues (docs/contracts.md §8). "
    "An HTTP API with IAM auth: every request is SigV4-signed (service execute-api). Errors are "
    '{"error": {"code", "message"}}; a request that fails validation is 400 invalid-request.'
)
_MAX_VALIDATION_ERRORS = 10

app = APIGatewayHttpResolver(enable_validation=True)


def _error(status: int, code: str, message: str) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": {"code": code, "message": message}}),
    )


def _errors(*statuses: int) -> dict[int, Any]:
    """OpenAPI ``responses`` for the error statuses a route may answer."""
    return {
        status: {"description": "error", "content": {"application/json": {"model": ErrorBody}}}
        for status in statuses
    }


def _invalid_request(exc: RequestValidationError) -> Response[Any]:
    parts = [
        f"{'.'.join(str(part) for part in error.get('loc', ())) or 'request'}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    ]
    more = f" (+{len(parts) - _MAX_VALIDATION_ERRORS} more)" if len(parts) > _MAX_VALIDATION_ERRORS else ""
    return _error(400, "invalid-request", "; ".join(parts[:_MAX_VALIDATION_ERRORS]) + more)


def _refused(exc: ManagementError) -> Response[Any]:
    if exc.status >= 500:
        logger.warning("management request not served", extra={"code": exc.code, "error": exc.message})
    return _error(exc.status, exc.code, exc.message)


def _database_down(exc: SQLAlchemyError) -> Response[Any]:
    logger.error("database error in a management request", extra={"error_class": type(exc).__name__})
    return _error(503, "unavailable", "the database is unavailable; try again")


def _database_unavailable(exc: DatabaseUnavailable) -> Response[Any]:
    logger.error("database unavailable in a management request", extra={"error_class": type(exc).__name__})
    return _error(503, "unavailable", "the database is unavailable; try again")


# Registered by call: Powertools' decorator is untyped.
for _error_type, _handle in (
    (RequestValidationError, _invalid_request),
    (ManagementError, _refused),
    (SQLAlchemyError, _database_down),
    (DatabaseUnavailable, _database_unavailable),
):
    app.exception_handler(_error_type)(_handle)


@app.not_found
def _no_route(exc: Exception) -> Response[Any]:
    return _error(404, "not-found", "no such route")


def principal() -> str:
    """Who is calling: the IAM principal the HTTP API's IAM authorizer put in the request context."""
    iam = app.current_event.request_context.authorizer.iam
    return str(iam.user_arn or iam.caller_id or iam.user_id or "unknown")


# --- routes ---------------------------------------------------------------------------------------------


@app.get(
    "/health",
    summary="Queues, DLQs, event sources and the database; 503 when unhealthy",
    responses={503: {"description": "unhealthy", "content": {"application/json": {"model": HealthReport}}}},
)
def get_health() -> Response[HealthReport]:
    report = health.check_health(dependencies())
    return Response(
        status_code=health.http_status(report), content_type=content_types.APPLICATION_JSON, body=report
    )


@app.get(
    "/failures",
    summary="The failure ledger grouped by job type, error class and reason",
    responses=_errors(400, 404, 503),
)
def get_failures(
    since: Annotated[datetime | None, Query(description="failures last seen at or after (RFC 3339)")] = None,
    until: Annotated[datetime | None, Query(description="failures last seen before (RFC 3339)")] = None,
    job_type: Annotated[str | None, Query(max_length=64)] = None,
    error_class: Annotated[str | None, Query(max_length=128)] = None,
    include_redriven: Annotated[bool, Query(description="also count rows already redriven")] = False,
) -> FailureReport:
    return failures.failure_report(
        dependencies(),
        since=_aware(since, "since"),
        until=_aware(until, "until"),
        job_type=job_type,
        error_class=error_class,
        include_redriven=include_redriven,
    )


@app.get(
    "/failures/<job_id>", summary="Every recorded failed attempt of one job", responses=_errors(400, 404, 503)
)
def get_job_failures(job_id: uuid.UUID) -> JobFailures:
    return failures.job_failures(dependencies(), job_id)


@app.post(
    "/redrive",
    summary="Move dead-lettered jobs back to their queue: natively (no filter) or selectively",
    responses=_errors(400, 404, 409, 503),
)
def post_redrive(request: RedriveRequest) -> RedriveView:
    return redrive.start_redrive(dependencies(), request, principal(), app.lambda_context)


@app.get("/redrives", summary="Recent redrives, newest first", responses=_errors(400, 404, 503))
def get_redrives(
    job_type: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RedriveList:
    return redrive.list_redrives(dependencies(), job_type=job_type, limit=limit)


@app.get(
    "/redrives/<redrive_id>", summary="One redrive, its progress refreshed", responses=_errors(400, 404, 503)
)
def get_redrive(redrive_id: uuid.UUID) -> RedriveView:
    return redrive.get_redrive(dependencies(), redrive_id, app.lambda_context)


@app.delete(
    "/redrives/<redrive_id>", summary="Cancel a running redrive", responses=_errors(400, 404, 409, 503)
)
def delete_redrive(redrive_id: uuid.UUID) -> RedriveView:
    return redrive.cancel_redrive(dependencies(), redrive_id)


@app.post(
    "/jobs/<job_type>",
    summary="Enqueue 1..1000 jobs of one type, each validated against the job contract",
    responses=_errors(400, 404, 503),
)
def post_jobs(job_type: str, request: EnqueueRequest) -> EnqueueResponse:
    return enqueue_jobs(dependencies(), job_type, request.jobs)


@app.get("/batches/<batch_id>", summary="A batch fan-out's progress", responses=_errors(400, 404, 503))
def get_batch_view(batch_id: uuid.UUID) -> BatchView:
    found = get_batch(dependencies(), batch_id)
    if found is None:
        raise NotFound("no such batch")
    return BatchView.model_validate(found)


@app.post("/batches/<batch_id>/cancel", summary="Cancel a running batch", responses=_errors(400, 404, 503))
def post_batch_cancel(batch_id: uuid.UUID) -> BatchView:
    found = cancel_batch(dependencies(), batch_id)
    if found is None:
        raise NotFound("no such batch")
    return BatchView.model_validate(found)


@app.post(
    "/batches/<batch_id>/retry",
    summary="Send a finished batch's content again to its failed recipients only",
    responses=_errors(400, 404, 409, 503),
)
def post_batch_retry(
    batch_id: uuid.UUID, request: Annotated[BatchRetryRequest | None, Body()] = None
) -> BatchView:
    request = request or BatchRetryRequest()
    try:
        found = retry_failed(
            dependencies(),
            batch_id,
            chunk_size=request.chunk_size,
            chunk_delay_seconds=request.chunk_delay_seconds,
        )
    except BatchNotRetryable as exc:
        raise Conflict(str(exc), code=exc.reason) from exc
    if found is None:
        raise NotFound("no such batch")
    return BatchView.model_validate(found)


@app.get("/openapi.json", include_in_schema=False)
def get_openapi() -> Response[Any]:
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_document())


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        from shared.services.management.errors import InvalidRequest

        raise InvalidRequest(f"{name}: must carry a UTC offset")
    return value


def openapi_document() -> str:
    """The OpenAPI document of this API, as committed in docs/openapi.json."""
    schema = json.loads(app.get_openapi_json_schema(title=TITLE, version=VERSION, description=DESCRIPTION))
    # Powertools documents its default 422 body; this API answers validation errors 400 (_invalid_request).
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_openapi(path: Path) -> Path:
    path.write_text(openapi_document(), encoding="utf-8")
    return path
