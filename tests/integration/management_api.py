"""Helpers for the management API tests: ManagementFunction of template.yaml called with HTTP API (payload
2.0) events in its own environment, its AWS calls recorded for the IAM check (tests/iam.py), and a seam that
answers its asynchronous self-invocations (redrive continuations) instead of Lambda."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine

from infra.lambda_shapes import http_api_event
from infra.local_lambda import invoker
from infra.template import Stack, Template
from shared import aws as shared_aws
from tests.iam import IAM_CALLS
from tests.world import job

FUNCTION = "ManagementFunction"


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class ManagementApi:
    """Calls the function as the HTTP API would (``call``) or as its continuation would (``continue_``)."""

    invoke: Callable[[dict[str, Any]], Any]
    stack: Stack

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        raw_body: str | None = None,
        user_arn: str | None = "arn:aws:iam::123456789012:user/operator",
    ) -> Answer:
        text = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
        response = self.invoke(http_api_event(method, path, body=text, query=query, user_arn=user_arn))
        payload = response.get("body") or "null"
        return Answer(int(response["statusCode"]), json.loads(payload), dict(response.get("headers") or {}))

    def continue_(self, payload: dict[str, Any]) -> Any:
        return self.invoke(payload)


def management_environment(stack: Stack, template: Template, **variables: str) -> dict[str, str]:
    return {**stack.function_environment(template.functions[FUNCTION]), **variables}


def make_api(stack: Stack, template: Template, **variables: str) -> ManagementApi:
    """ManagementFunction with its environment from the template (plus ``variables``), calls recorded."""
    environment = management_environment(stack, template, **variables)
    return ManagementApi(
        IAM_CALLS.recording(FUNCTION, invoker(template.functions[FUNCTION], environment)), stack
    )


@pytest.fixture
def api(aws: Stack, template: Template, db: Engine) -> ManagementApi:
    return make_api(aws, template)


@dataclass
class Invocations:
    """Asynchronous invocations the function asked of Lambda (redrive continuations), answered 202."""

    payloads: list[dict[str, Any]] = field(default_factory=list)

    def take(self) -> list[dict[str, Any]]:
        taken, self.payloads = self.payloads, []
        return taken


class _Accepted:
    status_code = 202
    headers: dict[str, str] = {}  # noqa: RUF012 - read only
    content = b""


@contextmanager
def answering(
    client: Any, operation: str, answer: Callable[[dict[str, Any]], dict[str, Any]]
) -> Iterator[None]:
    """Calls of ``operation`` on ``client`` get ``answer(params)`` instead of reaching the service (botocore's
    ``before-call`` event, the seam tests/faults.py uses): for what moto cannot do (async Invoke)."""
    event_name = f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}"

    def before_call(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        return _Accepted(), answer(params)

    client.meta.events.register(event_name, before_call)
    try:
        yield
    finally:
        client.meta.events.unregister(event_name, before_call)


@pytest.fixture
def invocations(aws: Stack) -> Iterator[Invocations]:
    seen = Invocations()
    lambda_client = shared_aws.client("lambda")

    def record(params: dict[str, Any]) -> dict[str, Any]:
        seen.payloads.append(json.loads(params["body"] if "body" in params else params["Payload"]))
        return {"StatusCode": 202}

    with answering(lambda_client, "Invoke", record):
        yield seen


def event_sources(state: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An answer to ListEventSourceMappings: one mapping in ``state``, or none."""
    return lambda params: {"EventSourceMappings": [] if state is None else [{"State": state, "UUID": "x"}]}


def sqs() -> Any:
    return boto3.client("sqs", region_name="us-east-1")


def visible(queue_url: str) -> list[dict[str, Any]]:
    """Every message of a queue (received with all attributes, then made visible again)."""
    client = sqs()
    seen: dict[str, dict[str, Any]] = {}
    handles = []
    for _ in range(500):
        batch = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            seen[message["MessageId"]] = message
            handles.append(message["ReceiptHandle"])
    for start in range(0, len(handles), 10):
        client.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(handles[start : start + 10])
            ],
        )
    return list(seen.values())


def dead_letter_indexing_jobs(function: Any, *, invalid: int, unsupported: int) -> dict[str, list[str]]:
    """Run IndexingFunction over bodies that fail validation with a readable job_id: ``invalid`` with a field
    error (InvalidJob), ``unsupported`` with schema_version 2 (UnsupportedSchemaVersion). Returns the job ids
    by error class."""
    harness = function("IndexingFunction")
    ids: dict[str, list[str]] = {"InvalidJob": [], "UnsupportedSchemaVersion": []}
    bodies = []
    for _ in range(invalid):
        body = job("indexing", {"message_id": str(uuid.uuid4()), "operation": "index", "bogus": 1})
        ids["InvalidJob"].append(body["job_id"])
        bodies.append(body)
    for _ in range(unsupported):
        body = job("indexing", {"message_id": str(uuid.uuid4()), "operation": "index"}, schema_version=2)
        ids["UnsupportedSchemaVersion"].append(body["job_id"])
        bodies.append(body)
    harness.send(*bodies)
    harness.drain(max_batches=1000)
    return ids
