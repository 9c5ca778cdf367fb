"""MigrationFunction, the Custom::SchemaMigration resource of template.yaml: invoked with real custom-resource
requests, in its environment from the template, against fresh databases on the test server; its response is
captured by a local HTTP server standing in for CloudFormation's pre-signed ResponseURL."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from infra.lambda_shapes import LocalLambdaContext
from infra.local_lambda import invoker
from infra.template import Stack, Template
from shared import config as config_module
from shared.db import engine as engine_module
from shared.db.engine import normalize_url
from shared.db.migrations import head_revision
from shared.services import migration

pytestmark = pytest.mark.integration

STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/switchboard-dev/0a1b2c3d-0000-4000-8000-1234"
# What CloudFormation requires in every response (Data is optional; Reason is required with FAILED).
REQUIRED_RESPONSE_FIELDS = {
    "Status",
    "Reason",
    "PhysicalResourceId",
    "StackId",
    "RequestId",
    "LogicalResourceId",
}
PASSWORD = "s3cret-Pa55word"


# --- CloudFormation's side: the pre-signed response URL ----------------------------------------------------


@dataclass
class CapturedPut:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return dict(json.loads(self.raw))


@dataclass
class ResponseEndpoint:
    base_url: str
    puts: list[CapturedPut] = field(default_factory=list)
    # HTTP statuses to answer with, in order (then 200): e.g. [500] fails the first PUT
    statuses: list[int] = field(default_factory=list)

    def url(self, request_id: str) -> str:
        """A URL shaped like CloudFormation's pre-signed S3 URL (its query string is the signature)."""
        path = f"/cloudformation-custom-resource-response-useast1/{request_id}"
        return f"{self.base_url}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc123"


@pytest.fixture
def cloudformation() -> Iterator[ResponseEndpoint]:
    endpoint = ResponseEndpoint(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            endpoint.puts.append(CapturedPut(self.path, {k: v for k, v in self.headers.items()}, raw))
            status = endpoint.statuses.pop(0) if endpoint.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield endpoint
    server.shutdown()
    server.server_close()
    thread.join()


def request(
    endpoint: ResponseEndpoint, request_type: str, *, physical_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A custom-resource request as CloudFormation sends it to the function."""
    request_id = str(uuid.uuid4())
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:switchboard-dev-MigrationFunction",
        "ResponseURL": endpoint.url(request_id),
        "StackId": STACK_ID,
        "RequestId": request_id,
        "LogicalResourceId": "SchemaMigration",
        "ResourceType": "Custom::SchemaMigration",
        "ResourceProperties": {"ServiceToken": "arn:...", "SchemaHead": head_revision()},
        **extra,
    }
    if physical_id is not None:
        event["PhysicalResourceId"] = physical_id
    if request_type == "Update":
        event.setdefault("OldResourceProperties", {"ServiceToken": "arn:...", "SchemaHead": "0002"})
    return event


# --- the function, in its environment from template.yaml ---------------------------------------------------


@pytest.fixture
def migration_function(
    aws: Stack, template: Template, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, Any], str], Any]]:
    """``migration_function(event, database_url)``: MigrationFunction as Lambda runs it, against that database
    (DATABASE_URL in place of the stack's secret), a fresh container (settings, engine) per invocation."""
    spec = template.functions["MigrationFunction"]
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)

    def reset_container() -> None:
        engine_module.get_engine.cache_clear()
        config_module.get_settings.cache_clear()

    def invoke(event: dict[str, Any], database_url: str) -> Any:
        environment = {
            **aws.function_environment(spec),
            "DATABASE_URL": database_url,
            "POWERTOOLS_TRACE_DISABLED": "1",
        }
        reset_container()
        try:
            return invoker(spec, environment)(event)
        finally:
            reset_container()

    yield invoke
    reset_container()


@pytest.fixture
def fresh_database(engine: Engine) -> Iterator[str]:
    """The URL of a new, empty database on the test server (dropped afterwards)."""
    name = f"mig_test_{uuid.uuid4().hex[:12]}"
    # A connection of its own: CREATE / DROP DATABASE cannot run inside the transaction a pooled one may hold
    admin = create_engine(engine.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def connect() -> Iterator[Callable[[str], Engine]]:
    engines: list[Engine] = []

    def make(url: str) -> Engine:
        engines.append(create_engine(normalize_url(url), poolclass=NullPool))
        return engines[-1]

    yield make
    for made in engines:
        made.dispose()


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Create / Update / Delete ---------------------------------------------------------------------------


def test_create_migrates_an_empty_database_to_head_and_responds_success(
    migration_function, cloudformation, fresh_database, connect
):
    database = connect(fresh_database)
    assert inspect(database).get_table_names() == []

    event = request(cloudformation, "Create")
    assert migration_function(event, fresh_database) is None

    (put,) = cloudformation.puts
    assert put.body == {
        "Status": "SUCCESS",
        "Reason": f"schema at revision {head_revision()}",
        "PhysicalResourceId": "switchboard-schema",
        "StackId": STACK_ID,
        "RequestId": event["RequestId"],
        "LogicalResourceId": "SchemaMigration",
        "Data": {"Revision": head_revision()},
    }
    assert revision_of(database) == head_revision()
    tables = set(inspect(database).get_table_names())
    assert {"users", "conversations", "messages", "message_deliveries", "ws_connections"} <= tables


def test_update_is_idempotent_and_keeps_the_data(migration_function, cloudformation, fresh_database, connect):
    migration_function(request(cloudformation, "Create"), fresh_database)
    database = connect(fresh_database)
    user_id = uuid.uuid4()
    with database.begin() as conn:
        conn.execute(text("INSERT INTO users (id, display_name) VALUES (:id, 'Ada')"), {"id": user_id})

    for _ in range(2):
        migration_function(
            request(cloudformation, "Update", physical_id="switchboard-schema"), fresh_database
        )

    assert [put.body["Status"] for put in cloudformation.puts] == ["SUCCESS"] * 3
    assert {put.body["PhysicalResourceId"] for put in cloudformation.puts} == {"switchboard-schema"}
    assert cloudformation.puts[-1].body["Data"] == {"Revision": head_revision()}
    assert revision_of(database) == head_revision()
    with database.connect() as conn:
        assert (
            conn.execute(text("SELECT display_name FROM users WHERE id = :id"), {"id": user_id}).scalar()
            == "Ada"
        )


def test_update_migrates_a_database_behind_head(migration_function, cloudformation, fresh_database, connect):
    from shared.db.migrations import upgrade

    database = connect(fresh_database)
    upgrade(database, "0001")
    migration_function(request(cloudformation, "Update", physical_id="switchboard-schema"), fresh_database)
    assert cloudformation.puts[-1].body["Status"] == "SUCCESS"
    assert revision_of(database) == head_revision()


def test_delete_responds_success_and_leaves_the_schema(
    migration_function, cloudformation, fresh_database, connect
):
    migration_function(request(cloudformation, "Create"), fresh_database)
    database = connect(fresh_database)
    tables = set(inspect(database).get_table_names())

    event = request(cloudformation, "Delete", physical_id="switchboard-schema")
    migration_function(event, fresh_database)

    delete = cloudformation.puts[-1].body
    assert (delete["Status"], delete["PhysicalResourceId"]) == ("SUCCESS", "switchboard-schema")
    assert delete["RequestId"] == event["RequestId"]
    assert set(inspect(database).get_table_names()) == tables
    assert revision_of(database) == head_revision()


def test_delete_succeeds_without_reaching_the_database(migration_function, cloudformation):
    """Deleting the stack is never blocked by a database that is already gone (Delete does not connect)."""
    broken = f"postgresql://switchboard:{PASSWORD}@127.0.0.1:{closed_port()}/switchboard"
    migration_function(request(cloudformation, "Delete", physical_id="switchboard-schema"), broken)
    assert cloudformation.puts[-1].body["Status"] == "SUCCESS"


def test_a_database_ahead_of_these_migrations_is_left_as_it_is(
    migration_function, cloudformation, fresh_database, connect
):
    """A rollback redeploys older code over a newer schema: no downgrade, and the rollback is not blocked."""
    migration_function(request(cloudformation, "Create"), fresh_database)
    database = connect(fresh_database)
    with database.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    migration_function(request(cloudformation, "Update", physical_id="switchboard-schema"), fresh_database)

    body = cloudformation.puts[-1].body
    assert (body["Status"], body["Data"]) == ("SUCCESS", {"Revision": "9999"})
    assert revision_of(database) == "9999"


# --- failures always reach CloudFormation -----------------------------------------------------------------


def test_an_unreachable_database_responds_failed_without_the_password(
    migration_function, cloudformation, caplog
):
    broken = f"postgresql://switchboard:{PASSWORD}@127.0.0.1:{closed_port()}/switchboard"
    with caplog.at_level(logging.DEBUG):
        assert migration_function(request(cloudformation, "Create"), broken) is None

    (put,) = cloudformation.puts
    body = put.body
    assert body["Status"] == "FAILED"
    assert body["Reason"].startswith("InterfaceError: ")
    assert "Can't create a connection" in body["Reason"]
    assert "MigrationFunction log stream" in body["Reason"]
    assert "Data" not in body
    assert PASSWORD not in put.raw.decode()
    formatter = logging.Formatter()
    logged = "\n".join(formatter.format(record) + str(record.__dict__) for record in caplog.records)
    assert "schema migration failed" in logged and "Traceback" in logged
    assert PASSWORD not in logged
    assert "X-Amz-Signature" not in logged  # the pre-signed URL is a credential too


def test_a_malformed_database_url_responds_failed_without_the_password(migration_function, cloudformation):
    broken = f"postgresql://switchboard:{PASSWORD}@db.internal:not-a-port/switchboard"
    migration_function(request(cloudformation, "Create"), broken)
    (put,) = cloudformation.puts
    assert put.body["Status"] == "FAILED"
    assert put.body["Reason"].startswith("ValueError: ")
    assert PASSWORD not in put.raw.decode()


def test_a_failing_migration_responds_failed(migration_function, cloudformation, fresh_database, connect):
    database = connect(fresh_database)
    with database.begin() as conn:  # a table the first migration creates: it fails, and rolls back whole
        conn.execute(text("CREATE TABLE users (id int)"))

    migration_function(request(cloudformation, "Create"), fresh_database)

    body = cloudformation.puts[-1].body
    assert body["Status"] == "FAILED"
    assert body["Reason"].startswith("ProgrammingError: ")
    assert "already exists" in body["Reason"]
    assert set(inspect(database).get_table_names()) == {"users"}  # transactional: nothing half-applied


def test_an_unknown_request_type_responds_failed(migration_function, cloudformation, fresh_database):
    migration_function(request(cloudformation, "Replace"), fresh_database)
    body = cloudformation.puts[-1].body
    assert body["Status"] == "FAILED"
    assert "unsupported RequestType 'Replace'" in body["Reason"]


def test_a_request_without_a_response_url_is_an_error_not_a_hang(migration_function, cloudformation):
    event = request(cloudformation, "Create")
    del event["ResponseURL"]
    with pytest.raises(ValueError, match="ResponseURL"):
        migration_function(event, "postgresql://unused@127.0.0.1:1/x")
    assert cloudformation.puts == []


def test_a_malformed_request_with_a_response_url_is_answered_failed(
    migration_function, cloudformation, caplog
):
    event = request(cloudformation, "Create")
    del event["StackId"]
    event["LogicalResourceId"] = ""
    with caplog.at_level(logging.DEBUG), pytest.raises(ValueError, match="missing StackId") as raised:
        migration_function(event, "postgresql://unused@127.0.0.1:1/x")

    (put,) = cloudformation.puts
    assert put.body["Status"] == "FAILED"
    assert put.body["Reason"].startswith(
        "not a CloudFormation custom-resource request: missing StackId; invalid LogicalResourceId"
    )
    assert (put.body["RequestId"], put.body["StackId"]) == (event["RequestId"], "")
    assert put.body["PhysicalResourceId"] == "switchboard-schema"
    # the pre-signed URL is a credential: neither in the logs nor in the error (nor its chained cause)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    formatter = logging.Formatter()
    logged = "\n".join(formatter.format(record) + str(record.__dict__) for record in caplog.records)
    assert "not a CloudFormation custom-resource request" in logged
    assert "X-Amz-Signature" not in logged + str(raised.value)


# --- the response itself ----------------------------------------------------------------------------------


def test_the_response_is_put_as_cloudformation_requires(migration_function, cloudformation, fresh_database):
    event = request(cloudformation, "Create")
    migration_function(event, fresh_database)

    (put,) = cloudformation.puts
    assert put.path == event["ResponseURL"].removeprefix(cloudformation.base_url)  # signature untouched
    assert put.headers["Content-Type"] == ""  # the pre-signed URL is signed for an empty content type
    assert int(put.headers["Content-Length"]) == len(put.raw)
    assert len(put.raw) < 4096
    assert set(put.body) >= REQUIRED_RESPONSE_FIELDS
    assert all(isinstance(put.body[name], str) and put.body[name] for name in REQUIRED_RESPONSE_FIELDS)
    assert put.body["StackId"] == event["StackId"]
    assert put.body["LogicalResourceId"] == event["LogicalResourceId"]


def serve(event: dict[str, Any], *, sleep: Callable[[float], None], migrate: Callable[[], str]) -> None:
    """The service as the handler calls it, with the waits between response attempts recorded, not slept."""
    context = LocalLambdaContext(function_name="MigrationFunction", timeout_s=60)
    request = migration.CustomResourceRequest.model_validate(event)
    migration.handle_request(request, context, migrate=migrate, sleep=sleep)  # type: ignore[arg-type]


def test_a_rejected_response_is_retried(cloudformation):
    waits: list[float] = []
    cloudformation.statuses = [503]
    serve(request(cloudformation, "Create"), sleep=waits.append, migrate=head_revision)
    assert [put.body["Status"] for put in cloudformation.puts] == ["SUCCESS", "SUCCESS"]
    assert cloudformation.puts[0].raw == cloudformation.puts[1].raw
    assert waits == [1]


def test_an_undeliverable_response_is_an_error_of_the_invocation(cloudformation):
    waits: list[float] = []
    cloudformation.statuses = [503] * migration.RESPONSE_ATTEMPTS
    with pytest.raises(migration.ResponseNotDelivered, match="503"):
        serve(request(cloudformation, "Create"), sleep=waits.append, migrate=head_revision)
    assert len(cloudformation.puts) == migration.RESPONSE_ATTEMPTS
    assert waits == [1, 2]  # none after the last attempt


def test_a_migration_still_running_near_the_deadline_responds_failed_once(cloudformation):
    finished = threading.Event()

    def slow_migration() -> str:
        time.sleep(1.0)
        finished.set()
        return "0003"

    context = LocalLambdaContext(function_name="MigrationFunction", timeout_s=1.2)
    migration.handle_request(
        migration.CustomResourceRequest.model_validate(request(cloudformation, "Update")),
        context,  # type: ignore[arg-type]  # the local stack's context: the attributes Lambda's has
        migrate=slow_migration,
        deadline_margin_ms=1000,
    )

    assert finished.is_set()
    (put,) = cloudformation.puts  # the late success is not sent after the timed-out failure
    assert put.body["Status"] == "FAILED"
    assert put.body["Reason"].startswith("timed out")
    assert "MigrationFunction log stream" in put.body["Reason"]


def test_error_descriptions_mask_credentials() -> None:
    error = RuntimeError(
        f"cannot reach postgresql+pg8000://switchboard:{PASSWORD}@db:5432/x (password={PASSWORD}, "
        f"{{'password': '{PASSWORD}'}})\n[SQL: SELECT 1]"
    )
    described = migration.describe(error)
    assert PASSWORD not in described
    assert described.startswith("RuntimeError: cannot reach postgresql+pg8000://***@db:5432/x")
    assert "[SQL" not in described
    assert len(migration.describe(RuntimeError("x" * 5000))) <= migration.ERROR_MAX_CHARS
