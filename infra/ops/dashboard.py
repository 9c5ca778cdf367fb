"""``switchboard ops dashboard``: a page on 127.0.0.1 that signs its calls to the management API.

A browser cannot SigV4-sign with the operator's AWS credentials, so this server does: it serves the static
page (``infra/ops/static``) and forwards ``/api/<path>`` to the management API through
:class:`~infra.ops.client.ManagementClient`. Because that proxy holds the operator's credentials, only the
page it served may drive it (a redrive is a state change another site must not trigger, CSRF):

- the ``Host`` header must name this server (defeats DNS rebinding: a hostile name resolved to 127.0.0.1);
- an ``Origin`` header, when present, must be this server's origin;
- every ``/api`` call carries ``X-Switchboard-Token``, a random token made per run and written only into the
  page, which is itself served only to the URL printed with the token. A custom header also forces a CORS
  preflight on any cross-site request, which this server never approves.

Only the dashboard's own routes are forwarded (no bulk enqueue), bodies are capped, and the page is sent with
a strict Content-Security-Policy and ``frame-ancestors 'none'`` (no clickjacking).
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from infra.ops.client import ManagementClient, ManagementError, ManagementUnreachable

TOKEN_HEADER = "X-Switchboard-Token"  # noqa: S105 - a header name, not a secret
MAX_BODY = 64 * 1024
FORWARDED = (  # (method, path) the page uses; everything else is refused before it reaches AWS
    ("GET", re.compile(r"/health")),
    ("GET", re.compile(r"/failures")),
    ("GET", re.compile(r"/failures/[A-Za-z0-9-]{1,64}")),
    ("POST", re.compile(r"/redrive")),
    ("GET", re.compile(r"/redrives")),
    ("GET", re.compile(r"/redrives/[A-Za-z0-9-]{1,64}")),
    ("DELETE", re.compile(r"/redrives/[A-Za-z0-9-]{1,64}")),
)
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class _Refusal(NamedTuple):
    status: HTTPStatus
    code: str
    message: str


def _static(name: str) -> bytes:
    return resources.files("infra.ops").joinpath("static", name).read_bytes()


class DashboardServer(ThreadingHTTPServer):
    """The dashboard's HTTP server; ``url`` (with the token) is what the operator opens."""

    daemon_threads = True

    def __init__(self, client: ManagementClient, port: int = 0, token: str | None = None) -> None:
        super().__init__(("127.0.0.1", port), DashboardHandler)
        self.client = client
        self.token = token or secrets.token_urlsafe(32)
        self.port = int(self.server_address[1])
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.origins = {f"http://{host}" for host in self.hosts}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def page(self) -> bytes:
        """index.html with this run's token in a meta tag the script reads."""
        html = _static("index.html").decode("utf-8")
        return html.replace("__SWITCHBOARD_TOKEN__", self.token).encode("utf-8")


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the URL carries the token, and the terminal shows the CLI's own lines."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, "method-not-allowed", "not a dashboard method")

    def do_OPTIONS(self) -> None:  # a CORS preflight: never approved
        self._send_error(HTTPStatus.FORBIDDEN, "cross-origin", "cross-origin requests are refused")

    def _dispatch(self, method: str) -> None:
        refusal = self._refusal()
        if refusal:
            self._send_error(HTTPStatus.FORBIDDEN, "forbidden", refusal)
            return
        parts = urlsplit(self.path)
        if parts.path.startswith("/api/"):
            self._proxy(method, parts.path[len("/api") :], parts.query)
        elif method != "GET":
            self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, "method-not-allowed", "pages are GET only")
        elif parts.path == "/":
            self._index(parts.query)
        elif parts.path == "/favicon.ico":  # browsers ask for it; no icon, and no 404 in the console
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        elif parts.path.startswith("/static/") and parts.path[len("/static/") :] in STATIC:
            name = parts.path[len("/static/") :]
            self._send(HTTPStatus.OK, _static(name), STATIC[name] + "; charset=utf-8")
        else:
            self._send_error(HTTPStatus.NOT_FOUND, "not-found", "no such page")

    def _refusal(self) -> str | None:
        """Why this request may not come from the dashboard's own page, or None."""
        if self.headers.get("Host", "") not in self.server.hosts:
            return "unexpected Host header: open the dashboard at the URL it printed"
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self.server.origins:
            return "cross-origin requests are refused"
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return "cross-site requests are refused"
        return None

    def _token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.server.token.encode())

    def _index(self, query: str) -> None:
        if not self._token_ok(dict(parse_qsl(query)).get("token")):
            self._send_error(
                HTTPStatus.FORBIDDEN, "token", "open the URL `switchboard ops dashboard` printed"
            )
            return
        self._send(HTTPStatus.OK, self.server.page(), "text/html; charset=utf-8")

    def _proxy(self, method: str, path: str, query: str) -> None:
        if not self._token_ok(self.headers.get(TOKEN_HEADER)):
            self._send_error(HTTPStatus.FORBIDDEN, "token", f"missing or wrong {TOKEN_HEADER}")
            return
        if not any(m == method and pattern.fullmatch(path) for m, pattern in FORWARDED):
            self._send_error(HTTPStatus.NOT_FOUND, "not-found", f"{method} {path} is not a dashboard route")
            return
        body = self._body()
        if isinstance(body, _Refusal):
            self._send_error(*body)
            return
        try:
            reply = self.server.client.call(
                method, path, query=dict(parse_qsl(query)), body=body or None, accept=range(400, 600)
            )
        except ManagementUnreachable as exc:
            self._send_error(HTTPStatus.BAD_GATEWAY, "unreachable", str(exc))
            return
        except ManagementError as exc:
            self._send_error(HTTPStatus.BAD_REQUEST, "bad-request", str(exc))
            return
        self._send(reply.status, json.dumps(reply.body).encode(), "application/json")

    def _body(self) -> bytes | _Refusal | None:
        """The request body (None if empty), or why it is refused."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return _Refusal(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-large", f"bodies are 0..{MAX_BODY} bytes"
            )
        if length and self.headers.get_content_type() != "application/json":
            return _Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "json-only", "bodies are application/json")
        return self.rfile.read(length) if length else None

    def _send_error(self, status: HTTPStatus, code: str, message: str) -> None:
        """A refusal; it closes the connection, as the request's body may not have been read."""
        self.close_connection = True
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self._send(status, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def start(client: ManagementClient, port: int = 0) -> tuple[DashboardServer, threading.Thread]:
    """The dashboard serving in a background thread (tests, and :func:`serve`)."""
    server = DashboardServer(client, port)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="ops-dashboard", daemon=True)
    thread.start()
    return server, thread


def serve(
    client: ManagementClient, *, port: int = 0, open_browser: bool = True, out: Callable[[str], None] = print
) -> int:
    """Serve until Ctrl-C; prints the URL (it carries the per-run token) and opens it."""
    server, thread = start(client, port)
    out(f"dashboard for {client.endpoint.url}: {server.url}")
    out("Ctrl-C to stop")
    if open_browser:
        webbrowser.open(server.url)
    try:
        thread.join()
    except KeyboardInterrupt:
        out("stopped")
    finally:
        server.shutdown()
        server.server_close()
    return 0
