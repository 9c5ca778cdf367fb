"""Shared fixtures: a real PostgreSQL (embedded with pgserver unless DATABASE_URL is set), moto with the
queues of template.yaml, and helpers to run a handler the way Lambda's SQS event source does.

With DATABASE_URL set, the tests migrate that database and TRUNCATE its tables between tests: point it at a
throwaway database."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy import Engine, text

from infra.local_lambda import SqsFunctionRunner
from infra.moto_frames import posted_frames
from infra.template import Stack, Template, load_template, provision
from shared import bootstrap
from shared import config as config_module
from shared.aws import reset_clients
from tests.iam import IAM_CALLS
from tests.world import World

WEBSOCKET_ENDPOINT = "https://test-api.execute-api.us-east-1.amazonaws.com/prod"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "runs_last: run after every other test (the IAM check, tests/iam.py)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)  # stable: order kept


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from infra.embedded_postgres import start_embedded_postgres

    server = start_embedded_postgres(tmp_path_factory.mktemp("pg"), keep=False)
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    from shared.config import Settings
    from shared.db.engine import build_engine
    from shared.db.migrations import upgrade

    db_engine = build_engine(Settings(database_url=database_url, db_pool_size=4))
    upgrade(db_engine)
    yield db_engine
    db_engine.dispose()


@pytest.fixture
def db(engine: Engine, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Engine]:
    """The test database, emptied, and used by every UnitOfWork of the code under test."""
    from shared.db.models import Base

    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    bootstrap.use(engine=engine)
    yield engine
    bootstrap.use()


@pytest.fixture(scope="session")
def template() -> Template:
    return load_template()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, template: Template) -> Iterator[Stack]:
    """moto with every queue of template.yaml (and its DLQ) created from the template itself."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "SwitchboardTest",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    reset_clients()
    with mock_aws():
        stack = provision(template, sqs_client=boto3.client("sqs", region_name="us-east-1"))
        yield stack
    reset_clients()


@pytest.fixture
def world(db: Engine) -> World:
    return World(db)


class FunctionHarness(SqsFunctionRunner):
    """A function of template.yaml run like Lambda's SQS event source, plus a way to send it jobs."""

    fifo = False

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        with IAM_CALLS.running(self.spec.logical_id):  # its AWS calls are checked against its role
            return super().invoke(event)

    def send(self, *bodies: str | dict[str, Any], group_id: str | None = None) -> None:
        for body in bodies:
            text_body = body if isinstance(body, str) else json.dumps(body)
            params: dict[str, Any] = {"QueueUrl": self.queue_url, "MessageBody": text_body}
            if self.fifo:
                try:
                    parsed = json.loads(text_body)
                except (ValueError, RecursionError):  # not JSON, or too deep: no job id to read
                    parsed = {}
                parsed = parsed if isinstance(parsed, dict) else {}
                data: dict[str, Any] = parsed["data"] if isinstance(parsed.get("data"), dict) else {}
                params["MessageGroupId"] = group_id or str(data.get("conversation_id", "group"))
                params["MessageDeduplicationId"] = str(parsed.get("job_id") or uuid.uuid4()) + (
                    group_id or ""
                )
            self.sqs.send_message(**params)


@pytest.fixture
def function(
    aws: Stack, template: Template, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], FunctionHarness]]:
    """``function("SendMessageFunction")``: that function's environment from the template, and a harness."""

    def make(logical_id: str) -> FunctionHarness:
        environment = aws.function_environment(template.functions[logical_id])
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("WEBSOCKET_ENDPOINT", WEBSOCKET_ENDPOINT)
        monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
        monkeypatch.delenv("DB_SECRET_ARN", raising=False)
        config_module.get_settings.cache_clear()
        spec = template.functions[logical_id]
        queue_url = aws.queue_urls[spec.sqs_events[0].queue_logical_id]
        harness = FunctionHarness(spec, queue_url, boto3.client("sqs", region_name="us-east-1"))
        harness.fifo = template.queues[spec.sqs_events[0].queue_logical_id].fifo
        return harness

    yield make
    config_module.get_settings.cache_clear()


@pytest.fixture
def websocket_function(
    aws: Stack, template: Template, db: Engine
) -> Callable[..., Callable[[dict[str, Any]], Any]]:
    """``websocket_function("WebSocketDefaultFunction")``: call that function of template.yaml with an API
    Gateway event, in its environment from the template (plus the test @connections endpoint and token
    settings), the way the local WebSocket gateway calls it. Keyword arguments add or (None) drop variables,
    e.g. ``JWT_JWKS_URL=url, JWT_SECRET=None``."""
    from infra.local_lambda import invoker
    from tests.tokens import TOKEN_SETTINGS

    def make(logical_id: str, **variables: str | None) -> Callable[[dict[str, Any]], Any]:
        environment = {
            **aws.function_environment(template.functions[logical_id]),
            "WEBSOCKET_ENDPOINT": WEBSOCKET_ENDPOINT,
            **TOKEN_SETTINGS,
            **variables,
        }
        given = {name: value for name, value in environment.items() if value is not None}
        return IAM_CALLS.recording(logical_id, invoker(template.functions[logical_id], given))

    return make


def queue_messages(stack: Stack, logical_id: str, max_messages: int = 10) -> list[dict[str, Any]]:
    """Everything currently visible in a queue (received with all attributes, left in place)."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    seen: list[dict[str, Any]] = []
    for _ in range(20):
        batch = sqs.receive_message(
            QueueUrl=stack.queue_urls[logical_id],
            MaxNumberOfMessages=10,
            VisibilityTimeout=30,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        seen.extend(batch)
    return seen


def ws_frames(connection_id: str) -> list[dict[str, Any]]:
    """Frames moto's API Gateway management API received for a connection."""
    return posted_frames(connection_id)


__all__ = ["queue_messages", "ws_frames"]
