"""A tiny management API (docs/contracts.md §8) on loopback for the ops tools' tests: the documented
shapes, SigV4 checked as API Gateway's IAM auth would (unsigned or wrongly signed -> 403), and in-memory
state the test arranges. It is not the real API (handlers/management.py): tests/e2e runs the tools
against that."""

from __future__ import annotations

import hmac
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from infra.ops.client import SERVICE, Endpoint

ACCESS_KEY, SECRET_KEY, REGION = "AKIAFAKEOPS", "fake-secret-for-the-ops-tests", "eu-west-1"
JOB_TYPES = ("send-message", "cleanup", "indexing")
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/"
    r"aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})"
)


def signature_is_valid(
    method: str, url: str, headers: dict[str, str], body: bytes, credentials: Credentials, region: str
) -> bool:
    """Recompute the SigV4 signature of a received request with botocore and compare."""
    match = _AUTH.fullmatch(headers.get("authorization", ""))
    if not match or match["key"] != credentials.access_key or match["service"] != SERVICE:
        return False
    if match["region"] != region or "x-amz-date" not in headers:
        return False
    signed = match["signed"].split(";")
    request = AWSRequest(method=method, url=url, data=body, headers={h: headers.get(h, "") for h in signed})
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(credentials.get_frozen_credentials(), SERVICE, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return hmac.compare_digest(expected, match["signature"])


@dataclass
class FakeState:
    status: str = "healthy"
    dlq: dict[str, list[dict[str, str]]] = field(default_factory=lambda: {t: [] for t in JOB_TYPES})
    groups: list[dict[str, Any]] = field(default_factory=list)
    redrives: dict[str, dict[str, Any]] = field(default_factory=dict)
    enqueued: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    step: int = 2  # messages a running redrive moves per status poll

    def dead_letter(self, job_type: str, error_class: str, reason: str, count: int, when: str) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(count)]
        self.dlq[job_type] += [{"job_id": i, "error_class": error_class, "reason": reason} for i in ids]
        self.groups.append(
            {
                "job_type": job_type,
                "error_class": error_class,
                "reason": reason,
                "count": count,
                "first_seen": when,
                "last_seen": when,
                "latest_detail": f"{reason}: detail",
                "sample_job_ids": ids[:5],
            }
        )
        return ids


class _Handler(BaseHTTPRequestHandler):
    server: FakeManagementServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        url = f"http://{headers.get('host', '')}{self.path}"
        if not signature_is_valid(method, url, headers, body, self.server.credentials, REGION):
            self._reply(403, {"message": "Forbidden"})
            return
        parts = urlsplit(self.path)
        path = parts.path.removeprefix(self.server.stage)
        query = dict(parse_qsl(parts.query))
        payload = json.loads(body) if body else None
        self.server.state.requests.append((method, path, payload if payload is not None else query))
        status, answer = _route(self.server.state, method, path, query, payload)
        self._reply(status, answer)

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _error(status: int, code: str, message: str) -> tuple[int, Any]:
    return status, {"error": {"code": code, "message": message}}


def _route(state: FakeState, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
    if (method, path) == ("GET", "/health"):
        return _health(state)
    if (method, path) == ("GET", "/failures"):
        groups = [g for g in state.groups if query.get("job_type") in (None, g["job_type"])]
        groups = [g for g in groups if query.get("error_class") in (None, g["error_class"])]
        return 200, {"groups": groups, "dlq_depth": {t: len(m) for t, m in state.dlq.items()}}
    if (method, path) == ("POST", "/redrive"):
        return _redrive(state, body)
    if (method, path) == ("GET", "/redrives"):
        return 200, {"redrives": list(state.redrives.values())}
    if path.startswith("/redrives/"):
        redrive = state.redrives.get(path.removeprefix("/redrives/"))
        if redrive is None:
            return _error(404, "unknown-redrive", "no such redrive")
        if method == "DELETE":
            redrive["status"] = "cancelled"
        elif redrive["status"] == "running":
            _advance(state, redrive)
        return 200, redrive
    if method == "POST" and path.startswith("/jobs/"):
        return _enqueue(state, path.removeprefix("/jobs/"), body)
    return _error(404, "not-found", f"{method} {path}")


def _health(state: FakeState) -> tuple[int, Any]:
    queues = {
        t: {
            "visible": 3,
            "in_flight": 1,
            "delayed": 0,
            "oldest_age_seconds": 125,
            "dlq": {"visible": len(m), "oldest_age_seconds": 3700 if m else None},
            "event_source": "Enabled",
            "status": "degraded" if m else "healthy",
            "problems": [f"{len(m)} messages in the DLQ"] if m else [],
        }
        for t, m in state.dlq.items()
    }
    database = {"reachable": True, "revision": "0011", "head": "0011", "at_head": True}
    body = {"status": state.status, "database": database, "queues": queues}
    return (503 if state.status == "unhealthy" else 200), body


def _matches(message: dict[str, str], rule: dict[str, Any]) -> bool:
    return all(message.get(k) == v for k, v in rule.items() if k in ("error_class", "reason"))


def _redrive(state: FakeState, body: Any) -> tuple[int, Any]:
    if not isinstance(body, dict) or body.get("job_type") not in state.dlq:
        return _error(400, "unknown-job-type", "job_type must be one of " + ", ".join(JOB_TYPES))
    rule = body.get("filter") or {}
    matched = [m for m in state.dlq[body["job_type"]] if _matches(m, rule)]
    redrive = {
        "redrive_id": str(uuid.uuid4()),
        "job_type": body["job_type"],
        "mode": "selective" if rule else "native",
        "status": "completed" if body.get("dry_run") else "running",
        "dry_run": bool(body.get("dry_run")),
        "principal": "arn:aws:iam::123456789012:user/operator",
        "created_at": "2026-11-29T10:00:00+00:00",
        "to_move": None,
        "matched": len(matched),
        "moved": 0,
        "kept": 0,
        "failed": 0,
        "filter": rule,
    }
    if not body.get("dry_run"):
        state.redrives[redrive["redrive_id"]] = redrive
    return 200, redrive


def _advance(state: FakeState, redrive: dict[str, Any]) -> None:
    queue = state.dlq[redrive["job_type"]]
    for message in [m for m in queue if _matches(m, redrive["filter"])][: state.step]:
        queue.remove(message)
        redrive["moved"] += 1
    if redrive["moved"] >= redrive["matched"]:
        redrive["status"] = "completed"
        for group in state.groups:
            if group["job_type"] == redrive["job_type"] and _matches(group, redrive["filter"]):
                state.groups.remove(group)


def _enqueue(state: FakeState, job_type: str, body: Any) -> tuple[int, Any]:
    if job_type not in state.dlq:
        return _error(404, "unknown-job-type", f"no job type {job_type}")
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(jobs, list) or not 1 <= len(jobs) <= 1000:
        return _error(422, "invalid-body", "jobs: 1..1000 job objects")
    results = []
    for index, job in enumerate(jobs):
        ok = job.get("job_type") == job_type and "job_id" in job
        results.append(
            {"index": index, "job_id": job.get("job_id"), "status": "queued" if ok else "rejected"}
            | ({} if ok else {"code": "invalid-job", "error": "job_type: does not match the queue"})
        )
        if ok:
            state.enqueued.setdefault(job_type, []).append(job)
    return 200, {"results": results}


class FakeManagementServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stage: str = "/local") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = FakeState()
        self.stage = stage
        self.credentials = Credentials(ACCESS_KEY, SECRET_KEY)
        self.url = f"http://127.0.0.1:{self.server_address[1]}{stage}"

    def endpoint(self, *, secret: str = SECRET_KEY) -> Endpoint:
        return Endpoint(self.url, REGION, Credentials(ACCESS_KEY, secret))

    def dev_json(self) -> dict[str, Any]:
        """What `switchboard dev` writes for its management API (§7)."""
        return {
            "region": REGION,
            "management_url": self.url,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
        }


@contextmanager
def running_fake() -> Iterator[FakeManagementServer]:
    server = FakeManagementServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
