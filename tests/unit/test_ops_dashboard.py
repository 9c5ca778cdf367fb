"""The dashboard's server: it serves the page only with the run's token, forwards only the page's own routes
(signed, to a fake management API), and refuses anything another site in the operator's browser could send
(CSRF, DNS rebinding)."""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from infra.ops.client import Endpoint, ManagementClient
from infra.ops.dashboard import SECURITY_HEADERS, TOKEN_HEADER, DashboardServer, start
from tests.fake_management import ACCESS_KEY, REGION, SECRET_KEY, FakeManagementServer, running_fake

HTTP = urllib3.PoolManager(retries=False)


@pytest.fixture
def fake() -> Iterator[FakeManagementServer]:
    with running_fake() as server:
        yield server


@pytest.fixture
def dashboard(fake: FakeManagementServer) -> Iterator[DashboardServer]:
    server, _ = start(ManagementClient(fake.endpoint()))
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def call(
    dashboard: DashboardServer,
    method: str,
    path: str,
    *,
    token: str | None = "",
    body: Any = None,
    **headers: str,
) -> urllib3.BaseHTTPResponse:
    sent = {"Host": f"127.0.0.1:{dashboard.port}"} | {k.replace("_", "-"): v for k, v in headers.items()}
    if token is not None:
        sent[TOKEN_HEADER] = token or dashboard.token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    return HTTP.request(method, f"http://127.0.0.1:{dashboard.port}{path}", body=data, headers=sent)


def test_the_page_is_served_with_the_token_and_security_headers(dashboard):
    page = call(dashboard, "GET", f"/?token={dashboard.token}", token=None)
    assert page.status == 200
    html = page.data.decode()
    assert f'<meta name="switchboard-token" content="{dashboard.token}">' in html
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    script = call(dashboard, "GET", "/static/app.js", token=None)
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert b"X-Switchboard-Token" in script.data
    assert call(dashboard, "GET", "/static/style.css", token=None).status == 200
    assert call(dashboard, "GET", "/static/../dashboard.py", token=None).status == 404


def test_the_page_is_refused_without_the_right_token(dashboard):
    for path in ("/", "/?token=", "/?token=guess"):
        answer = call(dashboard, "GET", path, token=None)
        assert answer.status == 403 and dashboard.token.encode() not in answer.data


def test_each_run_has_its_own_token(fake):
    client = ManagementClient(fake.endpoint())
    first, second = DashboardServer(client), DashboardServer(client)
    try:
        assert first.token != second.token and len(first.token) >= 40
    finally:
        first.server_close()
        second.server_close()


def test_api_calls_are_forwarded_signed(dashboard, fake):
    answer = call(dashboard, "GET", "/api/health")
    assert answer.status == 200 and json.loads(answer.data)["status"] == "healthy"
    fake.state.dead_letter("cleanup", "InvalidJob", "invalid-job", 2, "2026-11-29T09:00:00+00:00")
    answer = call(dashboard, "GET", "/api/failures?job_type=cleanup")
    assert json.loads(answer.data)["dlq_depth"]["cleanup"] == 2
    assert fake.state.requests[-1] == ("GET", "/failures", {"job_type": "cleanup"})
    dry = call(dashboard, "POST", "/api/redrive", body={"job_type": "cleanup", "dry_run": True})
    assert dry.status == 200 and json.loads(dry.data)["matched"] == 2


def test_the_apis_errors_and_unhealthy_status_pass_through(dashboard, fake):
    fake.state.status = "unhealthy"
    assert call(dashboard, "GET", "/api/health").status == 503
    answer = call(dashboard, "POST", "/api/redrive", body={"job_type": "nope"})
    assert answer.status == 400 and json.loads(answer.data)["error"]["code"] == "unknown-job-type"


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_api_calls_without_the_token_are_refused(dashboard, fake, token):
    answer = call(dashboard, "POST", "/api/redrive", token=token, body={"job_type": "cleanup"})
    assert answer.status == 403 and TOKEN_HEADER in json.loads(answer.data)["error"]["message"]
    assert fake.state.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example:80"},  # DNS rebinding: a hostile name resolved to 127.0.0.1
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_requests_from_another_site_are_refused_even_with_the_token(dashboard, fake, headers):
    answer = call(dashboard, "POST", "/api/redrive", body={"job_type": "cleanup"}, **headers)
    assert answer.status == 403
    assert fake.state.requests == []


def test_the_page_own_origin_is_accepted(dashboard):
    origin = f"http://localhost:{dashboard.port}"
    answer = call(
        dashboard,
        "GET",
        "/api/health",
        Origin=origin,
        Host=f"localhost:{dashboard.port}",
        Sec_Fetch_Site="same-origin",
    )
    assert answer.status == 200


def test_a_cors_preflight_is_never_approved(dashboard):
    answer = call(dashboard, "OPTIONS", "/api/redrive", Origin="https://evil.example")
    assert answer.status == 403 and "Access-Control-Allow-Origin" not in answer.headers


def test_only_the_pages_routes_are_forwarded(dashboard, fake):
    assert call(dashboard, "POST", "/api/jobs/cleanup", body={"jobs": []}).status == 404
    raw = http.client.HTTPConnection("127.0.0.1", dashboard.port)  # sends the path as is, dots included
    raw.request("GET", "/api/redrives/../health", headers={TOKEN_HEADER: dashboard.token})
    assert raw.getresponse().status == 404
    raw.close()
    assert call(dashboard, "PUT", "/api/redrive", body={}).status == 405
    assert fake.state.requests == []


def test_bodies_must_be_small_json(dashboard, fake):
    big = {"job_type": "cleanup", "filter": {"job_ids": ["x" * 100] * 700}}
    assert call(dashboard, "POST", "/api/redrive", body=big).status == 413
    answer = HTTP.request(
        "POST",
        f"http://127.0.0.1:{dashboard.port}/api/redrive",
        body=b"job_type=cleanup",
        headers={
            "Host": f"127.0.0.1:{dashboard.port}",
            TOKEN_HEADER: dashboard.token,
            "Content-Type": "application/x-www-form-urlencoded",  # what a cross-site <form> could send
        },
    )
    assert answer.status == 415
    assert fake.state.requests == []


def test_an_unreachable_api_is_a_502_with_the_reason():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = Endpoint(f"http://127.0.0.1:{probe.getsockname()[1]}", REGION, _credentials())
        server, _ = start(ManagementClient(endpoint))
        try:
            answer = call(server, "GET", "/api/health")
        finally:
            server.shutdown()
            server.server_close()
    assert answer.status == 502
    assert re.search(r"cannot reach the management API", json.loads(answer.data)["error"]["message"])


def _credentials() -> Any:
    from botocore.credentials import Credentials

    return Credentials(ACCESS_KEY, SECRET_KEY)
