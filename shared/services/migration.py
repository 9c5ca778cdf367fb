"""The database migration on deploy, as a CloudFormation custom resource (docs/contracts.md §1: "a migration
function run on deploy").

template.yaml declares ``SchemaMigration`` (``Custom::SchemaMigration``) served by MigrationFunction.
CloudFormation sends the function a request on stack create, on every update that changes the resource's
properties (``SchemaHead`` is the Alembic head, so each new migration changes it), and on stack delete, then
waits for one response: a JSON document PUT to the request's pre-signed ``ResponseURL``. Without one the stack
hangs until the resource's ``ServiceTimeout``; with FAILED, the deploy fails and CloudFormation rolls it back.
So :func:`handle_request` responds exactly once, whatever happens:

* ``Create`` / ``Update``: migrate the database to head (Alembic in one transaction, PostgreSQL DDL being
  transactional: all or nothing) -> SUCCESS with ``Data.Revision``. A database already at a revision these
  scripts do not know (ahead of this code, e.g. during a rollback) is left as it is: SUCCESS, never a
  downgrade.
* ``Delete``: nothing -> SUCCESS. The schema and its data outlive the stack.
* Any error -> FAILED with the exception class and a short message (credentials in URLs are masked), after
  ``logger.exception``.
* Still migrating shortly before the Lambda deadline -> FAILED ("timed out") from a timer; the migration's
  transaction is rolled back when Lambda stops the function.

The handler (handlers/migration.py) parses the event into a :class:`CustomResourceRequest`; a request it
cannot parse is answered FAILED with :func:`reject_request` when it has a ``ResponseURL``.

``PhysicalResourceId`` is stable (``switchboard-schema``): an update never looks like a replacement, which
would make CloudFormation send a Delete for the "old" schema. Powertools has no response helper, so the
protocol is implemented here.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.db.engine import get_engine
from shared.db.migrations import current_revision, head_revision, is_known_revision, upgrade
from shared.observability import logger

PHYSICAL_RESOURCE_ID = "switchboard-schema"
# Respond FAILED this long before the Lambda deadline if the migration is still running.
DEADLINE_MARGIN_MS = 15_000
RESPONSE_ATTEMPTS = 3
RESPONSE_TIMEOUT_SECONDS = 15
REASON_MAX_CHARS = 500  # the whole response must stay under CloudFormation's 4096 bytes
ERROR_MAX_CHARS = 300

Status = Literal["SUCCESS", "FAILED"]
Sleep = Callable[[float], None]

# user:password@ in any URL, and password=... / "password": ... in connection strings or dict reprs
_URL_CREDENTIALS = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^\s/@]+@")
_PASSWORD_FIELD = re.compile(r"(?i)(password['\"]?\s*[=:]\s*)(['\"]?)[^\s'\",}]+")


class ResponseNotDelivered(RuntimeError):
    """The response could not be PUT to CloudFormation, even after retries. Raised, so that the invocation
    counts as an error; the resource's ServiceTimeout then fails it in CloudFormation."""


@dataclass(frozen=True)
class ResponseTarget:
    """Where a response goes and the request it answers (``url`` is pre-signed: a credential, not logged)."""

    url: str = field(repr=False)
    stack_id: str
    request_id: str
    logical_resource_id: str
    physical_resource_id: str = PHYSICAL_RESOURCE_ID


class CustomResourceRequest(BaseModel):
    """A CloudFormation custom-resource request, as the handler parses it from the event."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # A str, not a Literal: an unsupported type must still be answered (FAILED), not rejected unanswered.
    request_type: str = Field(alias="RequestType", min_length=1)
    response_url: str = Field(alias="ResponseURL", min_length=1, repr=False)
    stack_id: str = Field(alias="StackId", min_length=1)
    request_id: str = Field(alias="RequestId", min_length=1)
    logical_resource_id: str = Field(alias="LogicalResourceId", min_length=1)
    physical_resource_id: str | None = Field(default=None, alias="PhysicalResourceId")
    resource_properties: dict[str, Any] = Field(default_factory=dict, alias="ResourceProperties")

    @property
    def target(self) -> ResponseTarget:
        physical_id = PHYSICAL_RESOURCE_ID
        if self.request_type != "Create" and self.physical_resource_id:
            physical_id = self.physical_resource_id  # echo it: a new id would mean a replacement
        return ResponseTarget(
            url=self.response_url,
            stack_id=self.stack_id,
            request_id=self.request_id,
            logical_resource_id=self.logical_resource_id,
            physical_resource_id=physical_id,
        )


def migrate_to_head() -> str:
    """Bring this container's database to the head revision; returns the revision it is at."""
    engine = get_engine()
    current = current_revision(engine)
    if current is not None and not is_known_revision(current):
        logger.warning("database is ahead of these migrations: left as it is", extra={"revision": current})
        return current
    upgrade(engine)
    revision = current_revision(engine)
    if revision is None:
        raise RuntimeError("the database has no revision after the upgrade")
    logger.info("database migrated", extra={"from_revision": current, "revision": revision})
    return revision


def describe(error: BaseException) -> str:
    """``ErrorClass: first line of the message``, short and with credentials masked."""
    lines = str(error).strip().splitlines()
    message = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    message = _URL_CREDENTIALS.sub(r"\1***@", message)
    message = _PASSWORD_FIELD.sub(r"\1\2***", message)
    return message[:ERROR_MAX_CHARS]


def put_response(response_url: str, body: Mapping[str, Any], *, sleep: Sleep = time.sleep) -> None:
    """PUT ``body`` to the pre-signed URL as CloudFormation requires (empty Content-Type), with retries
    (``sleep(attempt)`` seconds between them)."""
    if urlsplit(response_url).scheme not in ("https", "http"):
        raise ResponseNotDelivered("ResponseURL is not an http(s) URL")
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        response_url,
        data=data,
        method="PUT",
        headers={"Content-Type": "", "Content-Length": str(len(data))},
    )
    for attempt in range(1, RESPONSE_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT_SECONDS) as reply:  # noqa: S310
                reply.read()
            return
        except (urllib.error.URLError, OSError) as error:  # HTTPError is a URLError
            # The URL is pre-signed (a credential): log its failure, never the URL itself.
            logger.warning(
                "response not delivered to CloudFormation",
                extra={"attempt": attempt, "error": describe(error)},
            )
            if attempt == RESPONSE_ATTEMPTS:
                raise ResponseNotDelivered(describe(error)) from error
            sleep(attempt)


class _Response:
    """The one response of a request: whoever sends first (the handler or the deadline timer) wins."""

    def __init__(self, target: ResponseTarget, log_stream: str, sleep: Sleep) -> None:
        self.target = target
        self.log_stream = log_stream
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent = False

    def body(self, status: Status, reason: str, data: dict[str, str] | None) -> dict[str, Any]:
        target = self.target
        if status == "FAILED":  # where to look: CloudFormation shows the reason in the stack's events
            reason = f"{reason} (MigrationFunction log stream {self.log_stream})"
        body: dict[str, Any] = {
            "Status": status,
            "Reason": reason[:REASON_MAX_CHARS],
            "PhysicalResourceId": target.physical_resource_id,
            "StackId": target.stack_id,
            "RequestId": target.request_id,
            "LogicalResourceId": target.logical_resource_id,
        }
        if data is not None:
            body["Data"] = data
        return body

    def send(self, status: Status, reason: str, data: dict[str, str] | None = None) -> bool:
        """Send this response unless one was sent already; returns whether it was sent."""
        with self._lock:
            if self._sent:
                return False
            self._sent = True
        put_response(self.target.url, self.body(status, reason, data), sleep=self._sleep)
        logger.info("responded to CloudFormation", extra={"status": status, "reason": reason})
        return True

    def send_timed_out(self) -> None:
        try:
            self.send("FAILED", "timed out: the migration did not finish before the function's deadline")
        except ResponseNotDelivered:
            logger.exception("the timed-out response was not delivered")


def _perform(
    request: CustomResourceRequest, migrate: Callable[[], str]
) -> tuple[Status, str, dict[str, str] | None]:
    try:
        if request.request_type in ("Create", "Update"):
            revision = migrate()
            return "SUCCESS", f"schema at revision {revision}", {"Revision": revision}
        if request.request_type == "Delete":
            return (
                "SUCCESS",
                "schema left in place: deleting the stack never drops data",
                {"Revision": head_revision()},
            )
        logger.warning("unsupported custom-resource request", extra={"request_type": request.request_type})
        return "FAILED", f"unsupported RequestType {request.request_type[:40]!r}", None
    except Exception as error:  # noqa: BLE001 - every failure must reach CloudFormation as FAILED
        logger.exception("schema migration failed", extra={"request_type": request.request_type})
        return "FAILED", describe(error), None


def handle_request(
    request: CustomResourceRequest,
    context: LambdaContext,
    *,
    migrate: Callable[[], str] = migrate_to_head,
    deadline_margin_ms: int = DEADLINE_MARGIN_MS,
    sleep: Sleep = time.sleep,
) -> None:
    """Serve one custom-resource request and respond to it exactly once (see the module docstring).

    Raises only when the response could not be delivered (:class:`ResponseNotDelivered`)."""
    logger.info(
        "custom-resource request",
        extra={
            "request_type": request.request_type,
            "logical_resource_id": request.logical_resource_id,
            "stack_id": request.stack_id,
            "request_id": request.request_id,
        },
    )
    response = _Response(request.target, context.log_stream_name, sleep)
    seconds_left = (context.get_remaining_time_in_millis() - deadline_margin_ms) / 1000
    timer = threading.Timer(max(0.0, seconds_left), response.send_timed_out)
    timer.daemon = True
    timer.start()
    try:
        status, reason, data = _perform(request, migrate)
        if not response.send(status, reason, data):
            logger.warning("finished after the timed-out response", extra={"status": status})
    finally:
        timer.cancel()
        timer.join()  # a timed-out response being sent must be delivered before Lambda freezes us


def reject_request(
    target: ResponseTarget, reason: str, context: LambdaContext, *, sleep: Sleep = time.sleep
) -> None:
    """Answer a request the handler could not parse FAILED, so that the stack does not hang on it.

    Raises :class:`ResponseNotDelivered` when the response could not be delivered."""
    _Response(target, context.log_stream_name, sleep).send("FAILED", reason)
