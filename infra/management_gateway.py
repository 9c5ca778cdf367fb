"""A local stand-in for the management API's HTTP API (IAM auth, Lambda proxy integration, payload format
2.0): an HTTP server that refuses what IAM auth refuses (unsigned, wrongly signed or stale requests: 403
``{"message": "Forbidden"}``), turns every other request into the event API Gateway would send, invokes the
template's ManagementFunction with it and returns the function's response.

Stage ``$default`` as in template.yaml's HttpApi, so the base URL has no stage segment and ``rawPath`` is the
request path. Routes are the function's ``HttpApi`` events (e.g. ``ANY /{proxy+}``): ``routeKey`` and
``pathParameters`` as API Gateway sets them; a request no route matches gets 404 ``Not Found``.
Not emulated: presigned (query-string) signatures, CORS, chunked request bodies (411), the 30-second
integration timeout."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from infra.sigv4_verify import Caller, SignatureRejected, SigV4Verifier

MAX_BODY_BYTES = 10 * 1024 * 1024  # HTTP API's payload limit
STAGE = "$default"
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded", "+json")

Invoke = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Route:
    """An HTTP API route: ``method`` is ``ANY`` or a verb; ``path`` may hold ``{name}`` and ``{name+}``."""

    method: str
    path: str

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters if the request is on this route, else None."""
        if self.method not in ("ANY", method):
            return None
        pattern, actual = self.path.strip("/").split("/"), path.strip("/").split("/")
        parameters: dict[str, str] = {}
        for index, segment in enumerate(pattern):
            if segment.startswith("{") and segment.endswith("+}"):
                rest = "/".join(actual[index:])
                if not rest:
                    return None
                parameters[segment[1:-2]] = unquote(rest)
                return parameters
            if index >= len(actual) or not actual[index]:
                return None
            if segment.startswith("{") and segment.endswith("}"):
                parameters[segment[1:-1]] = unquote(actual[index])
            elif segment != actual[index]:
                return None
        return parameters if len(actual) == len(pattern) else None


def http_api_routes(function_resource: dict[str, Any]) -> list[Route]:
    """The routes of a function's ``HttpApi`` events in template.yaml, most specific first."""
    events = (function_resource.get("Properties") or {}).get("Events") or {}
    routes = [
        Route(str(props.get("Method", "ANY")).upper(), str(props.get("Path", "/")))
        for event in events.values()
        if event.get("Type") == "HttpApi"
        for props in [event.get("Properties") or {}]
    ]
    return sorted(
        routes, key=lambda r: ("+}" in r.path, -r.path.count("/"), "{" in r.path, r.method == "ANY")
    )


class ManagementApiServer:
    """``invoke(event)`` runs the function (``infra.local_lambda.invoker``); ``verifier`` checks
    signatures."""

    def __init__(
        self,
        *,
        invoke: Invoke,
        verifier: SigV4Verifier,
        host: str = "127.0.0.1",
        port: int = 0,
        api_id: str = "local",
        routes: Sequence[Route] = (),
        out: Callable[[str], None] = print,
    ) -> None:
        self.invoke, self.verifier, self.routes = invoke, verifier, tuple(routes)
        self.host, self.port, self.api_id = host, port, api_id
        self.out = out
        self._http: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The base URL (``management_url`` in dev.json): no stage segment, no trailing slash."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        handler = type("ManagementApiHandler", (_ManagementApiHandler,), {"api": self})
        self._http = ThreadingHTTPServer((self.host, self.port), handler)
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        threading.Thread(target=self._http.serve_forever, name="management-api", daemon=True).start()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def route(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """(route key, path parameters) of the route a request is on; with no routes, ``$default``."""
        if not self.routes:
            return "$default", {}
        for route in self.routes:
            parameters = route.match(method, path)
            if parameters is not None:
                return route.key, parameters
        return None

    def event(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
        caller: Caller,
    ) -> dict[str, Any]:
        """The HTTP API (payload format 2.0) event of a request; ``target`` is the request target as sent."""
        parts = urlsplit(target)
        route_key, path_parameters = self.route(method, parts.path) or ("$default", {})
        lowered: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
        cookies = lowered.pop("cookie", None)
        query: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            query[key] = f"{query[key]},{value}" if key in query else value
        now = datetime.now(UTC)
        host = lowered.get("host", f"{self.host}:{self.port}")
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": parts.path,
            "rawQueryString": parts.query,
            "headers": lowered,
            "requestContext": {
                "accountId": caller.account_id,
                "apiId": self.api_id,
                "authorizer": {"iam": caller.iam_authorizer()},
                "domainName": host,
                "domainPrefix": host.split(".", 1)[0],
                "http": {
                    "method": method,
                    "path": unquote(parts.path),
                    "protocol": "HTTP/1.1",
                    "sourceIp": source_ip,
                    "userAgent": lowered.get("user-agent", ""),
                },
                "requestId": base64.urlsafe_b64encode(uuid.uuid4().bytes[:12]).decode().rstrip("="),
                "routeKey": route_key,
                "stage": STAGE,
                "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "timeEpoch": int(now.timestamp() * 1000),
            },
            "isBase64Encoded": False,
        }
        if cookies is not None:
            event["cookies"] = [cookie.strip() for cookie in cookies.split(";")]
        if query:
            event["queryStringParameters"] = query
        if path_parameters:
            event["pathParameters"] = path_parameters
        if body:
            textual = any(kind in lowered.get("content-type", "") for kind in _TEXT_TYPES)
            try:
                event["body"] = body.decode("utf-8") if textual else None
            except UnicodeDecodeError:
                event["body"] = None
            if event["body"] is None:
                event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
        return event


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """What API Gateway answers for a function's result (payload format 2.0): a result with
    ``statusCode`` is the response; any other result is a 200 JSON body."""
    if not (isinstance(result, dict) and "statusCode" in result):
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    headers.extend(("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or [])
    return int(result["statusCode"]), headers, payload


class _ManagementApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: ManagementApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the function logs each request itself, as in Lambda

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _serve(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True  # the body is left unread
            return self._reply(HTTPStatus.LENGTH_REQUIRED, {"message": "Length Required"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"message": "Request Entity Too Large"})
        body = self.rfile.read(length) if length > 0 else b""
        if self.api.route(self.command, urlsplit(self.path).path) is None:
            return self._reply(HTTPStatus.NOT_FOUND, {"message": "Not Found"})
        headers = list(self.headers.items())
        host = self.headers.get("Host", f"{self.api.host}:{self.api.port}")
        try:
            caller = self.api.verifier.verify(self.command, f"http://{host}{self.path}", headers, body)
        except SignatureRejected as refused:
            self.api.out(f"[management-api] 403 {self.command} {urlsplit(self.path).path}: {refused}")
            forbidden = {"message": "Forbidden"}
            return self._reply(HTTPStatus.FORBIDDEN, forbidden, error_type="ForbiddenException")
        event = self.api.event(self.command, self.path, headers, body, self.client_address[0], caller)
        try:
            status, response_headers, payload = http_response(self.api.invoke(event))
        except Exception as exc:  # noqa: BLE001 - a crashed invocation is API Gateway's 500, as in AWS
            self.api.out(f"[management-api] function failed: {type(exc).__name__}: {exc}")
            return self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"message": "Internal Server Error"})
        self._send(status, response_headers, payload, event["requestContext"]["requestId"])

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes, request_id: str) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("apigw-requestid", request_id)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _reply(self, status: HTTPStatus, body: dict[str, Any], *, error_type: str | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if error_type is not None:
            self.send_header("x-amzn-ErrorType", error_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
