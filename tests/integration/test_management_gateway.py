"""The local management API (infra/management_gateway.py): IAM (SigV4) auth as API Gateway applies it, and
the HTTP API payload format 2.0 event a Powertools ``APIGatewayHttpResolver`` function receives. The
function here is a stub with the shape of handlers/management.py, invoked the way the local stack invokes
the template's functions (its environment, a Lambda context with a deadline)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from infra.local_lambda import invoker
from infra.management_gateway import ManagementApiServer, Route, http_api_routes
from infra.sigv4_verify import SigV4Verifier
from infra.template import FunctionSpec

pytestmark = pytest.mark.integration
KEY, SECRET, REGION = "AKIALOCALTESTKEY0001", "local-test-secret-key-0123456789abcdefghij", "us-east-1"

# --- the stub management function -------------------------------------------------------------------------

app = APIGatewayHttpResolver()


@app.get("/health")
def health() -> dict[str, Any]:
    return {"status": "healthy", "setting": os.environ.get("STUB_SETTING")}


@app.route("/event", method=["GET", "POST"])
def echo_event() -> dict[str, Any]:
    return dict(app.current_event.raw_event)


@app.get("/jobs/<job_id>")
def job(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id}


@app.get("/teapot")
def teapot() -> Response[str]:
    return Response(418, "text/plain", "short and stout", headers={"X-Kettle": "on"})


@app.get("/crash")
def crash() -> dict[str, Any]:
    raise RuntimeError("the stub fails")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("rawPath") == "/bare":
        return {"bare": True}  # a result without statusCode: API Gateway makes it a 200 JSON body
    return app.resolve(event, context)


STUB = FunctionSpec(
    logical_id="ManagementFunction",
    handler="tests.integration.test_management_gateway.handler",
    module="tests.integration.test_management_gateway",
    attribute="handler",
    timeout=30,
    memory_size=512,
    environment={},
    sqs_events=(),
    policies=[],
)

# --- fixtures and a SigV4 client (what the ops CLI does) ---------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[ManagementApiServer]:
    server = ManagementApiServer(
        invoke=invoker(STUB, {"STUB_SETTING": "from-the-template"}),
        verifier=SigV4Verifier(KEY, SECRET, REGION),
        routes=[Route("ANY", "/{proxy+}")],  # as template.yaml routes ManagementFunction
        out=lambda line: None,
    )
    server.start()
    yield server
    server.stop()


def sign(
    method: str,
    url: str,
    body: bytes = b"",
    *,
    key: str = KEY,
    secret: str = SECRET,
    region: str = REGION,
    service: str = "execute-api",
    headers: dict[str, str] | None = None,
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    return request


def send(request: AWSRequest, body: bytes | None = None) -> requests.Response:
    prepared = request.prepare()
    return requests.request(
        prepared.method,
        prepared.url,
        headers=dict(prepared.headers.items()),
        data=prepared.body if body is None else body,
        timeout=10,
    )


def forbidden(response: requests.Response) -> bool:
    return response.status_code == 403 and response.json() == {"message": "Forbidden"}


# --- signed requests reach the function -----------------------------------------------------------------


def test_a_signed_request_reaches_the_function_with_its_environment(api):
    response = send(sign("GET", f"{api.url}/health"))
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "setting": "from-the-template"}
    assert response.headers["apigw-requestid"]


def test_the_event_is_an_http_api_v2_event_with_the_iam_caller(api):
    # Given a signed POST with a query string (repeated and encoded values), a cookie and a JSON body
    body = json.dumps({"job_type": "send-message"}).encode()
    url = f"{api.url}/event?since=2026-01-01T00%3A00%3A00Z&job_type=a&job_type=b"
    headers = {"Content-Type": "application/json", "Cookie": "a=1; b=2", "X-Custom": "Yes"}
    # When it is sent
    event = send(sign("POST", url, body, headers=headers)).json()
    # Then the function saw what API Gateway sends
    assert event["version"] == "2.0" and event["routeKey"] == "ANY /{proxy+}"
    assert event["rawPath"] == "/event" and event["pathParameters"] == {"proxy": "event"}
    assert event["rawQueryString"] == "since=2026-01-01T00%3A00%3A00Z&job_type=a&job_type=b"
    assert event["queryStringParameters"] == {"since": "2026-01-01T00:00:00Z", "job_type": "a,b"}
    assert event["headers"]["x-custom"] == "Yes" and "cookie" not in event["headers"]
    assert event["cookies"] == ["a=1", "b=2"]
    assert json.loads(event["body"]) == {"job_type": "send-message"} and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["http"]["method"] == "POST" and context["http"]["path"] == "/event"
    assert context["http"]["sourceIp"] == "127.0.0.1" and context["stage"] == "$default"
    assert context["routeKey"] == "ANY /{proxy+}"
    iam = context["authorizer"]["iam"]
    assert iam["accessKey"] == KEY and iam["accountId"] == "123456789012"
    assert iam["userArn"] == "arn:aws:iam::123456789012:user/switchboard-local-operator"
    assert iam["callerId"] == iam["userId"] and iam["userId"].startswith("AIDA")
    assert context["timeEpoch"] > 0 and context["requestId"]


def test_a_binary_body_arrives_base64_encoded(api):
    body = bytes(range(256))
    event = send(sign("POST", f"{api.url}/event", body, headers={"Content-Type": "image/png"})).json()
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body


def test_path_parameters_statuses_headers_and_bare_results_come_back_as_api_gateway_returns_them(api):
    assert send(sign("GET", f"{api.url}/jobs/j-1")).json() == {"job_id": "j-1"}
    teapot = send(sign("GET", f"{api.url}/teapot"))
    assert (teapot.status_code, teapot.text, teapot.headers["X-Kettle"]) == (418, "short and stout", "on")
    bare = send(sign("GET", f"{api.url}/bare"))
    assert bare.status_code == 200 and bare.json() == {"bare": True}
    assert bare.headers["Content-Type"] == "application/json"
    assert send(sign("GET", f"{api.url}/nowhere")).status_code == 404  # the function's own 404
    root = send(sign("GET", f"{api.url}/"))  # no route: API Gateway's 404, the function is not invoked
    assert root.status_code == 404 and root.json() == {"message": "Not Found"}


def test_routes_come_from_the_template_and_match_as_api_gateway_matches_them(template):
    assert http_api_routes(template.resources["ManagementFunction"]) == [Route("ANY", "/{proxy+}")]
    routes = [Route("GET", "/redrives/{id}"), Route("ANY", "/{proxy+}"), Route("POST", "/jobs/{job_type}")]
    assert Route("ANY", "/{proxy+}").match("GET", "/failures/j%2D1") == {"proxy": "failures/j-1"}
    assert Route("GET", "/redrives/{id}").match("GET", "/redrives/r1") == {"id": "r1"}
    assert Route("GET", "/redrives/{id}").match("DELETE", "/redrives/r1") is None
    assert Route("GET", "/redrives/{id}").match("GET", "/redrives/r1/x") is None
    assert Route("GET", "/redrives/{id}").match("GET", "/redrives/") is None
    assert Route("ANY", "/{proxy+}").match("GET", "/") is None
    resource = {
        "Properties": {
            "Events": {
                f"E{i}": {"Type": "HttpApi", "Properties": {"Method": r.method.lower(), "Path": r.path}}
                for i, r in enumerate(routes)
            }
        }
    }
    assert http_api_routes(resource)[-1] == Route("ANY", "/{proxy+}")  # the greedy route is tried last


def test_a_crashing_function_is_a_500_without_its_error(api):
    response = send(sign("GET", f"{api.url}/crash"))
    assert response.status_code == 500 and response.json() == {"message": "Internal Server Error"}
    assert "stub fails" not in response.text


# --- what IAM auth refuses -------------------------------------------------------------------------------


def test_an_unsigned_request_is_forbidden(api):
    assert forbidden(requests.get(f"{api.url}/health", timeout=10))
    assert forbidden(requests.get(f"{api.url}/health", headers={"Authorization": "Bearer x"}, timeout=10))


@pytest.mark.parametrize(
    "signing",
    [
        {"secret": "a-wrong-secret-key-0123456789abcdefghijklm"},
        {"key": "AKIAANOTHERKEY000001"},
        {"region": "eu-west-1"},
        {"service": "sqs"},
    ],
    ids=["wrong secret", "unknown key", "other region", "other service"],
)
def test_a_request_signed_with_other_credentials_or_scope_is_forbidden(api, signing):
    assert forbidden(send(sign("GET", f"{api.url}/health", **signing)))


def test_a_tampered_body_path_or_query_is_forbidden(api):
    body = json.dumps({"dry_run": True}).encode()
    signed = sign("POST", f"{api.url}/event", body, headers={"Content-Type": "application/json"})
    assert forbidden(send(signed, json.dumps({"dry_run": False}).encode()))
    moved = sign("GET", f"{api.url}/health")
    moved.url = f"{api.url}/event"
    assert forbidden(send(moved))
    requeried = sign("GET", f"{api.url}/event?job_type=a")
    requeried.url = f"{api.url}/event?job_type=b"
    assert forbidden(send(requeried))
    # a payload hash header that does not describe the body sent is no way around it
    hashed = sign("POST", f"{api.url}/event", body, headers={"X-Amz-Content-SHA256": "0" * 64})
    assert forbidden(send(hashed))


def test_a_stale_signature_is_forbidden(api):
    # Given a server whose clock is 6 minutes ahead of the signer's (5 minutes of skew are allowed)
    ahead = ManagementApiServer(
        invoke=invoker(STUB, {}),
        verifier=SigV4Verifier(KEY, SECRET, REGION, clock=lambda: datetime.now(UTC) + timedelta(minutes=6)),
        out=lambda line: None,
    )
    ahead.start()
    try:
        assert forbidden(send(sign("GET", f"{ahead.url}/health")))
    finally:
        ahead.stop()
    # and the 4-minute case passes
    near = SigV4Verifier(KEY, SECRET, REGION, clock=lambda: datetime.now(UTC) + timedelta(minutes=4))
    request = sign("GET", "http://127.0.0.1:1/health")
    prepared = request.prepare()
    received = [("Host", "127.0.0.1:1"), *prepared.headers.items()]  # the HTTP client adds Host
    caller = near.verify("GET", prepared.url, received, b"")
    assert caller.access_key == KEY


def test_the_refusal_reason_is_logged_without_secrets():
    lines: list[str] = []
    server = ManagementApiServer(
        invoke=invoker(STUB, {}), verifier=SigV4Verifier(KEY, SECRET, REGION), out=lines.append
    )
    server.start()
    try:
        send(sign("GET", f"{server.url}/health", secret="a-wrong-secret-key-0123456789abcdefghijklm"))
        requests.get(f"{server.url}/health", timeout=10)
    finally:
        server.stop()
    assert "signature does not match" in lines[0] and "not signed" in lines[1]
    assert not any(SECRET in line or "a-wrong-secret" in line for line in lines)
