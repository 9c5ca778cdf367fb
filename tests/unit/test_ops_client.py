"""The management API client: SigV4 signing (verified with botocore), endpoints from dev.json or a stack's
outputs, and the errors an operator sees."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from botocore.credentials import Credentials
from botocore.stub import Stubber

from infra.ops.client import (
    Endpoint,
    ManagementClient,
    ManagementError,
    ManagementUnreachable,
    deployed_endpoint,
    local_endpoint,
    region_of,
    sign,
)
from tests.fake_management import ACCESS_KEY, REGION, SECRET_KEY, running_fake, signature_is_valid

CREDENTIALS = Credentials(ACCESS_KEY, SECRET_KEY)
ENDPOINT = Endpoint("https://abc123.execute-api.eu-west-1.amazonaws.com/", REGION, CREDENTIALS)


def _headers(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()} | {"host": "abc123.execute-api.eu-west-1.amazonaws.com"}


def test_a_signed_request_verifies_with_botocore():
    body = json.dumps({"job_type": "cleanup", "dry_run": True}).encode()
    url, headers = sign(ENDPOINT, "POST", "/redrive", body=body)
    assert url == "https://abc123.execute-api.eu-west-1.amazonaws.com/redrive"
    assert headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert signature_is_valid("POST", url, _headers(headers), body, CREDENTIALS, REGION)


def test_a_signature_does_not_verify_for_another_body_path_query_key_or_region():
    body = b'{"job_type": "cleanup"}'
    url, headers = sign(ENDPOINT, "POST", "/redrive", query={"a": "1"}, body=body)
    signed = _headers(headers)
    assert signature_is_valid("POST", url, signed, body, CREDENTIALS, REGION)
    assert not signature_is_valid("POST", url, signed, b'{"job_type": "indexing"}', CREDENTIALS, REGION)
    assert not signature_is_valid(
        "POST", url.replace("/redrive", "/redrives"), signed, body, CREDENTIALS, REGION
    )
    assert not signature_is_valid("POST", url.replace("a=1", "a=2"), signed, body, CREDENTIALS, REGION)
    assert not signature_is_valid("DELETE", url, signed, body, CREDENTIALS, REGION)
    assert not signature_is_valid("POST", url, signed, body, Credentials(ACCESS_KEY, "other"), REGION)
    assert not signature_is_valid("POST", url, signed, body, CREDENTIALS, "us-east-1")
    assert not signature_is_valid("POST", url, {**signed, "authorization": ""}, body, CREDENTIALS, REGION)


def test_query_values_are_encoded_as_sigv4_canonical_form_and_verify():
    query = {"since": "2026-01-31T00:00:00+01:00", "error_class": "Unknown Entity"}
    url, headers = sign(ENDPOINT, "GET", "/failures", query=query)
    assert "error_class=Unknown%20Entity" in url and "since=2026-01-31T00%3A00%3A00%2B01%3A00" in url
    assert signature_is_valid("GET", url, _headers(headers), b"", CREDENTIALS, REGION)


def test_a_session_token_is_signed_along():
    endpoint = Endpoint(ENDPOINT.url, REGION, Credentials(ACCESS_KEY, SECRET_KEY, "the-session-token"))
    _, headers = sign(endpoint, "GET", "/health")
    assert headers["X-Amz-Security-Token"] == "the-session-token"
    assert "x-amz-security-token" in headers["Authorization"]


def test_endpoint_refuses_a_non_http_url_and_a_relative_path():
    with pytest.raises(ManagementError, match="not an http"):
        Endpoint("file:///etc/passwd", REGION, CREDENTIALS)
    with pytest.raises(ValueError, match="must start with"):
        sign(ENDPOINT, "GET", "health")


def test_region_of_reads_execute_api_host_names_only():
    assert region_of("https://abc.execute-api.ap-south-2.amazonaws.com/x") == "ap-south-2"
    assert region_of("https://ops.example.com") is None
    assert region_of("http://127.0.0.1:3003/local") is None


def test_local_endpoint_reads_dev_json(tmp_path):
    (tmp_path / "dev.json").write_text(
        json.dumps(
            {
                "region": "us-east-1",
                "management_url": "http://127.0.0.1:3003/local/",
                "aws_access_key_id": "k",
                "aws_secret_access_key": "s",
                "queues": {},
            }
        )
    )
    endpoint = local_endpoint(tmp_path)
    assert endpoint.url == "http://127.0.0.1:3003/local" and endpoint.region == "us-east-1"
    assert (endpoint.credentials.access_key, endpoint.credentials.secret_key) == ("k", "s")


def test_local_endpoint_says_what_is_missing(tmp_path):
    with pytest.raises(ManagementError, match="not found: start the local stack"):
        local_endpoint(tmp_path)
    (tmp_path / "dev.json").write_text("{not json")
    with pytest.raises(ManagementError, match="not readable JSON"):
        local_endpoint(tmp_path)
    (tmp_path / "dev.json").write_text(json.dumps({"region": "us-east-1", "aws_access_key_id": "k"}))
    with pytest.raises(ManagementError, match="no management_url, aws_secret_access_key"):
        local_endpoint(tmp_path)


class FakeSession:
    """What deployed_endpoint uses of a boto3 Session: credentials, region, a (stubbed) client."""

    def __init__(self, credentials: Credentials | None, region: str | None, cloudformation: Any = None):
        self.credentials, self.region_name, self.cloudformation = credentials, region, cloudformation

    def get_credentials(self) -> Credentials | None:
        return self.credentials

    def client(self, name: str) -> Any:
        assert name == "cloudformation"
        return self.cloudformation


def _cloudformation(outputs: list[dict[str, str]]) -> Any:
    import boto3

    client = boto3.client(
        "cloudformation", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    stubber = Stubber(client)
    stack = {
        "StackName": "switchboard-prod",
        "CreationTime": "2026-01-01T00:00:00Z",
        "StackStatus": "UPDATE_COMPLETE",
        "Outputs": outputs,
    }
    stubber.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "switchboard-prod"})
    stubber.activate()
    return client


def test_deployed_endpoint_reads_the_stack_output_and_takes_the_region_from_the_url():
    url = "https://xyz.execute-api.eu-west-1.amazonaws.com"
    cloudformation = _cloudformation([{"OutputKey": "ManagementUrl", "OutputValue": url}])
    session = FakeSession(CREDENTIALS, "us-east-1", cloudformation)
    endpoint = deployed_endpoint(stack="switchboard-prod", session=session)
    assert (endpoint.url, endpoint.region, endpoint.credentials) == (url, "eu-west-1", CREDENTIALS)


def test_deployed_endpoint_errors_are_clear():
    session = FakeSession(CREDENTIALS, None, _cloudformation([{"OutputKey": "Other", "OutputValue": "x"}]))
    with pytest.raises(ManagementError, match="has no ManagementUrl output"):
        deployed_endpoint(stack="switchboard-prod", session=session)
    with pytest.raises(ManagementError, match="no AWS credentials"):
        deployed_endpoint(url="https://ops.example.com", session=FakeSession(None, "eu-west-1"))
    with pytest.raises(ManagementError, match="give --region"):
        deployed_endpoint(url="https://ops.example.com", session=FakeSession(CREDENTIALS, None))
    with pytest.raises(ManagementError, match="give --stack NAME"):
        deployed_endpoint(session=FakeSession(CREDENTIALS, "eu-west-1"))
    endpoint = deployed_endpoint(url="https://ops.example.com", session=FakeSession(CREDENTIALS, "eu-west-1"))
    assert endpoint.region == "eu-west-1"


def test_the_client_reads_health_even_when_unhealthy():
    with running_fake() as fake:
        client = ManagementClient(fake.endpoint())
        assert client.health()["status"] == "healthy"
        fake.state.status = "unhealthy"
        assert client.health()["status"] == "unhealthy"  # 503, still an answer


def test_a_4xx_reaches_the_operator_as_code_and_message():
    with running_fake() as fake, pytest.raises(ManagementError) as error:
        ManagementClient(fake.endpoint()).redrive({"job_type": "no-such-type"})
    assert error.value.status == 400 and error.value.code == "unknown-job-type"
    assert str(error.value).startswith("400 unknown-job-type on POST /redrive: job_type must be one of")


def test_a_wrong_signature_is_a_403_with_a_hint():
    with running_fake() as fake, pytest.raises(ManagementError) as error:
        ManagementClient(fake.endpoint(secret="not-the-secret")).health()
    assert error.value.status == 403
    assert "403 Forbidden on GET /health: Forbidden; " in str(error.value)
    assert "execute-api:Invoke" in str(error.value)


def test_a_refused_connection_is_reported_as_unreachable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        client = ManagementClient(Endpoint(f"http://127.0.0.1:{port}/local", REGION, CREDENTIALS))
        with pytest.raises(
            ManagementUnreachable, match=f"cannot reach the management API at http://127.0.0.1:{port}"
        ):
            client.health()


def test_ids_that_could_change_the_path_are_refused_before_sending():
    client = ManagementClient(ENDPOINT)
    for bad in ("../health", "a/b", "", "x?y"):
        with pytest.raises(ManagementError, match="not a valid id"):
            client.redrive_status(bad)
