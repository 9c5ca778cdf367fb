"""Lambda ``Invoke`` of the template's functions on the local stack's AWS endpoint (infra/lambda_invoke.py),
and a function run in processes of its own (infra/function_processes.py), as the management function's
redrive continuations use them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from infra.function_processes import FunctionProcesses
from infra.lambda_invoke import function_name
from infra.local_aws import LocalAwsServer

pytestmark = pytest.mark.integration
ARN = "arn:aws:lambda:us-east-1:123456789012:function:ManagementFunction"


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrived = threading.Event()

    def __call__(self, event: dict[str, Any]) -> Any:
        if event.get("fail"):
            raise ValueError("the stub fails")
        self.events.append(event)
        self.arrived.set()
        return {"echo": event}


@pytest.fixture
def served() -> Iterator[tuple[Any, Recorder, list[str]]]:
    server, recorder, lines = LocalAwsServer("127.0.0.1", 0), Recorder(), list[str]()
    server.start()
    assert server.functions is not None
    server.functions.out = lines.append
    server.functions.register({"ManagementFunction", "switchboard-local-management"}, recorder)
    client = boto3.client(
        "lambda",
        region_name="us-east-1",
        endpoint_url=server.url,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    yield client, recorder, lines
    server.stop()


def test_an_event_invocation_is_accepted_at_once_and_runs_in_the_background(served):
    client, recorder, _ = served
    response = client.invoke(FunctionName=ARN, InvocationType="Event", Payload=json.dumps({"n": 1}).encode())
    assert response["StatusCode"] == 202
    assert recorder.arrived.wait(10) and recorder.events == [{"n": 1}]


def test_a_request_response_invocation_returns_the_result_or_the_unhandled_error(served):
    client, _, _ = served
    response = client.invoke(FunctionName="switchboard-local-management", Payload=b'{"n": 2}')
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert json.loads(response["Payload"].read()) == {"echo": {"n": 2}}
    failed = client.invoke(FunctionName=f"{ARN}:$LATEST", Payload=b'{"fail": true}')
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read()) == {
        "errorMessage": "the stub fails",
        "errorType": "ValueError",
    }
    assert client.invoke(FunctionName=ARN, InvocationType="DryRun")["StatusCode"] == 204


def test_a_failed_event_invocation_is_reported_and_an_unknown_function_is_moto_s(served):
    client, _, lines = served
    assert (
        client.invoke(FunctionName=ARN, InvocationType="Event", Payload=b'{"fail": true}')["StatusCode"]
        == 202
    )
    with pytest.raises(ClientError) as unknown:
        client.invoke(FunctionName="no-such-function", Payload=b"{}")
    assert unknown.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert any("asynchronous invocation failed: ValueError" in line for line in lines)


def test_function_names_are_read_from_names_and_arns():
    assert function_name("ManagementFunction") == "ManagementFunction"
    assert function_name(ARN) == function_name(f"{ARN}:live") == "ManagementFunction"
    assert function_name("123456789012:function:ManagementFunction") == "ManagementFunction"


def test_the_management_function_runs_in_its_own_processes():
    # Given the template's ManagementFunction in worker processes with its environment
    lines: list[str] = []
    processes = FunctionProcesses(
        "ManagementFunction",
        {"AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "1"},
        max_workers=1,
        out=lines.append,
    )
    try:
        processes.warm()
        # When it is invoked with an HTTP API event (a route that needs neither database nor AWS)
        context = {"http": {"method": "GET", "path": "/openapi.json", "sourceIp": "127.0.0.1"}}
        event = {
            "version": "2.0",
            "rawPath": "/openapi.json",
            "rawQueryString": "",
            "headers": {},
            "requestContext": {**context, "stage": "$default", "requestId": "r"},
            "isBase64Encoded": False,
        }
        response = processes.invoke(event)
        # Then its result comes back; a malformed event raises here, and fails in the log when asynchronous
        assert response["statusCode"] == 200 and "openapi" in json.loads(response["body"])
        with pytest.raises(KeyError):
            processes.invoke({"unexpected": True})
        processes.invoke_async({"unexpected": True})
        deadline = time.monotonic() + 10
        while not lines:
            assert time.monotonic() < deadline, "the asynchronous invocation did not end"
            time.sleep(0.05)
    finally:
        processes.shutdown()
    assert lines == ["[ManagementFunction] asynchronous invocation failed: KeyError"]
