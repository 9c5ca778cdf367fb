"""A local stand-in for API Gateway's WebSocket API: a real WebSocket server that runs the template's
authorizer and ``$connect`` / ``$disconnect`` / ``$default`` functions with API Gateway-shaped events, and an
HTTP server for the ``@connections`` management API (POST, GET, DELETE) that the broadcast service calls.

Faithful where it matters to the handlers: a post to a closed connection answers 410 ``GoneException``; a
post over 128 KB answers 413; client frames over 128 KB close the connection (1009) as API Gateway does.
Like API Gateway's best-effort ``$disconnect``, a client that drops without a close frame does not run
``$disconnect``: its row stays until a post gets 410 (or the sweeper runs) — the case the broadcast service
must handle."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_FRAME_BYTES = 128 * 1024
_ACCOUNT = "123456789012"
ROUTE_CONNECT, ROUTE_DISCONNECT, ROUTE_DEFAULT = "$connect", "$disconnect", "$default"

# route key -> callable(event) -> response; "authorizer" for the $connect authorizer
Invoke = Callable[[dict[str, Any]], Any]


@dataclass
class _Connection:
    connection_id: str
    socket: Any
    source_ip: str
    user_agent: str
    connected_at: float = field(default_factory=time.time)
    last_active_at: float = field(default_factory=time.time)


class LocalWebSocketGateway:
    """``routes`` maps route keys (``$connect``, ``$disconnect``, ``$default``, custom actions) to invokers;
    ``authorizer`` (optional) is the REQUEST authorizer of ``$connect``."""

    def __init__(
        self,
        *,
        routes: dict[str, Invoke],
        authorizer: Invoke | None,
        host: str = "127.0.0.1",
        port: int = 0,
        management_port: int = 0,
        stage: str = "local",
        api_id: str = "local",
        region: str = "us-east-1",
        route_selection_expression: str = "$request.body.action",
        identity_sources: tuple[str, ...] = (),
    ) -> None:
        self.routes = routes
        self.authorizer = authorizer
        self.host, self.port, self.management_port = host, port, management_port
        self.stage, self.api_id, self.region = stage, api_id, region
        if not route_selection_expression.startswith("$request.body."):
            raise ValueError(f"unsupported RouteSelectionExpression {route_selection_expression!r}")
        self.route_selection_key = route_selection_expression.removeprefix("$request.body.")
        self.identity_query_parameters = [
            source.removeprefix("route.request.querystring.")
            for source in identity_sources
            if source.startswith("route.request.querystring.")
        ]
        self.connections: dict[str, _Connection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._http: ThreadingHTTPServer | None = None
        self._error: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def websocket_url(self) -> str:
        return f"ws://{self.host}:{self.port}/{self.stage}"

    @property
    def management_url(self) -> str:
        """The ``WEBSOCKET_ENDPOINT`` functions post to (``{url}/@connections/{id}``)."""
        return f"http://{self.host}:{self.management_port}/{self.stage}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="websocket-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"WebSocket gateway did not start: {self._error!r}")
        self._http = ThreadingHTTPServer((self.host, self.management_port), _management_handler(self))
        self._http.daemon_threads = True
        self.management_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="connections-api", daemon=True).start()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start() and re-raised there
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with serve(
            self._session,
            self.host,
            self.port,
            process_request=self._handshake,
            max_size=MAX_FRAME_BYTES,
            ping_interval=None,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stopping.wait()

    # --- WebSocket side ------------------------------------------------------------------------------------

    async def _handshake(self, connection: Any, request: Any) -> Any:
        """Authorizer then ``$connect``; a refusal is an HTTP response instead of the upgrade."""
        query = dict(parse_qsl(urlsplit(request.path).query))
        headers = {k: v for k, v in request.headers.raw_items()}
        connection_id = _connection_id()
        connection.switchboard_id = connection_id
        source_ip = connection.remote_address[0] if connection.remote_address else "127.0.0.1"
        context = self._request_context(connection_id, ROUTE_CONNECT, "CONNECT", source_ip, headers)
        authorizer_context: dict[str, Any] = {}
        if self.authorizer is not None:
            if not all(query.get(name) for name in self.identity_query_parameters):
                # API Gateway answers 401 itself when an identity source is missing
                return connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            outcome = await asyncio.to_thread(self._authorize, query, headers, context)
            if isinstance(outcome, HTTPStatus):
                return connection.respond(outcome, f"{outcome.phrase}\n")
            authorizer_context = outcome
        event = {
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": query or None,
            "requestContext": {**context, "authorizer": authorizer_context or None},
            "isBase64Encoded": False,
        }
        response = await asyncio.to_thread(self._invoke_route, ROUTE_CONNECT, event)
        status = int((response or {}).get("statusCode", 200)) if isinstance(response, dict) else 200
        if status >= 300:
            return connection.respond(
                HTTPStatus(status) if status in HTTPStatus._value2member_map_ else HTTPStatus.FORBIDDEN,
                "Forbidden\n",
            )
        self.connections[connection_id] = _Connection(
            connection_id, connection, source_ip, headers.get("User-Agent", "")
        )
        return None

    def _authorize(self, query: dict[str, str], headers: dict[str, str], context: dict[str, Any]) -> Any:
        """The authorizer context on Allow, else the status API Gateway answers: 403 on Deny, 401 when the
        authorizer raised ``Unauthorized``, 500 when it failed otherwise."""
        assert self.authorizer is not None
        event = {
            "type": "REQUEST",
            "methodArn": f"arn:aws:execute-api:{self.region}:{_ACCOUNT}:{self.api_id}/{self.stage}/$connect",
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
            "stageVariables": {},
            "requestContext": context,
        }
        try:
            policy = self.authorizer(event)
        except Exception as exc:  # noqa: BLE001 - an authorizer fault is an HTTP status, as in API Gateway
            if str(exc) == "Unauthorized":
                return HTTPStatus.UNAUTHORIZED
            print(f"[gateway] authorizer failed: {type(exc).__name__}", flush=True)
            return HTTPStatus.INTERNAL_SERVER_ERROR
        statements = (policy or {}).get("policyDocument", {}).get("Statement", [])
        if not any(s.get("Effect") == "Allow" for s in statements):
            return HTTPStatus.FORBIDDEN
        return {"principalId": policy.get("principalId"), **(policy.get("context") or {})}

    async def _session(self, socket: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        connection_id = socket.switchboard_id
        try:
            async for message in socket:
                if connection_id in self.connections:
                    self.connections[connection_id].last_active_at = time.time()
                body = message if isinstance(message, str) else message.decode("utf-8", "replace")
                route = self._select_route(body)
                context = self._request_context(connection_id, route, "MESSAGE", "", {})
                event = {
                    "requestContext": {**context, "messageId": _connection_id()},
                    "body": body,
                    "isBase64Encoded": False,
                }
                await asyncio.to_thread(self._invoke_route, route, event)
        except ConnectionClosed:
            pass
        finally:
            self.connections.pop(connection_id, None)
            close = socket.protocol.close_rcvd
            if close is not None:  # a clean close runs $disconnect; a dropped client does not
                code = close.code
                context = self._request_context(connection_id, ROUTE_DISCONNECT, "DISCONNECT", "", {})
                event = {
                    "headers": {},
                    "requestContext": {
                        **context,
                        "disconnectStatusCode": code,
                        "disconnectReason": close.reason,
                    },
                    "isBase64Encoded": False,
                }
                await asyncio.to_thread(self._invoke_route, ROUTE_DISCONNECT, event)

    def _select_route(self, body: str) -> str:
        try:
            parsed = json.loads(body)
        except ValueError:
            return ROUTE_DEFAULT
        action = parsed.get(self.route_selection_key) if isinstance(parsed, dict) else None
        return (
            action
            if isinstance(action, str) and action in self.routes and not action.startswith("$")
            else ROUTE_DEFAULT
        )

    def _invoke_route(self, route: str, event: dict[str, Any]) -> Any:
        invoke = self.routes.get(route)
        return invoke(event) if invoke is not None else {"statusCode": 200}

    def _request_context(
        self, connection_id: str, route: str, event_type: str, source_ip: str, headers: dict[str, str]
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "routeKey": route,
            "eventType": event_type,
            "messageDirection": "IN",
            "extendedRequestId": _connection_id(),
            "requestId": _connection_id(),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "connectedAt": int(self.connections[connection_id].connected_at * 1000)
            if connection_id in self.connections
            else int(now.timestamp() * 1000),
            "stage": self.stage,
            "domainName": f"{self.host}:{self.port}",
            "connectionId": connection_id,
            "apiId": self.api_id,
            "identity": {"sourceIp": source_ip or "127.0.0.1", "userAgent": headers.get("User-Agent", "")},
        }

    # --- @connections side ------------------------------------------------------------------------------

    def post(self, connection_id: str, data: bytes) -> HTTPStatus:
        connection = self.connections.get(connection_id)
        if connection is None or self._loop is None:
            return HTTPStatus.GONE
        if len(data) > MAX_FRAME_BYTES:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        try:
            text = data.decode("utf-8")
            future = asyncio.run_coroutine_threadsafe(connection.socket.send(text), self._loop)
            future.result(timeout=10)
        except UnicodeDecodeError:
            future = asyncio.run_coroutine_threadsafe(connection.socket.send(data), self._loop)
            future.result(timeout=10)
        except Exception:  # noqa: BLE001 - the socket went away while sending: that is a 410 to the caller
            self.connections.pop(connection_id, None)
            return HTTPStatus.GONE
        return HTTPStatus.OK

    def disconnect(self, connection_id: str) -> HTTPStatus:
        connection = self.connections.pop(connection_id, None)
        if connection is None or self._loop is None:
            return HTTPStatus.GONE
        asyncio.run_coroutine_threadsafe(connection.socket.close(1000, "closed by the server"), self._loop)
        return HTTPStatus.NO_CONTENT


def _connection_id() -> str:
    """Ids shaped like API Gateway's (12 url-safe base64 characters ending in ``=``)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes[:9]).decode()[:11] + "="


def _management_handler(gateway: LocalWebSocketGateway) -> type[BaseHTTPRequestHandler]:
    return type("ManagementApi", (_ManagementApi,), {"gateway": gateway})


class _ManagementApi(BaseHTTPRequestHandler):
    """``POST|GET|DELETE {stage}/@connections/{id}`` with API Gateway's status codes and error types."""

    protocol_version = "HTTP/1.1"
    gateway: LocalWebSocketGateway
    _ERROR_TYPES: ClassVar[dict[HTTPStatus, str]] = {
        HTTPStatus.GONE: "GoneException",
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "PayloadTooLargeException",
        HTTPStatus.NOT_FOUND: "NotFoundException",
    }

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("SWITCHBOARD_GATEWAY_DEBUG"):
            super().log_message(format, *args)

    def _target(self) -> str | None:
        path = urlsplit(self.path).path
        marker = "/@connections/"
        return unquote(path.split(marker, 1)[1].strip("/")) if marker in path else None

    def _reply(self, status: HTTPStatus, body: dict[str, Any] | None = None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status in self._ERROR_TYPES:
            self.send_header("x-amzn-ErrorType", self._ERROR_TYPES[status])
        self.end_headers()
        self.wfile.write(payload)

    def _gone(self, connection_id: str | None) -> None:
        self._reply(HTTPStatus.GONE, {"message": f"connection {connection_id} is gone"})

    def do_POST(self) -> None:
        connection_id = self._target()
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if connection_id is None:
            return self._reply(HTTPStatus.NOT_FOUND, {"message": "unknown resource"})
        status = self.gateway.post(connection_id, data)
        if status == HTTPStatus.OK:
            return self._reply(HTTPStatus.OK)
        if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
            return self._reply(status, {"message": f"frame exceeds {MAX_FRAME_BYTES} bytes"})
        return self._gone(connection_id)

    def do_GET(self) -> None:
        connection_id = self._target()
        connection = self.gateway.connections.get(connection_id or "")
        if connection is None:
            return self._gone(connection_id)
        return self._reply(
            HTTPStatus.OK,
            {
                "ConnectedAt": datetime.fromtimestamp(connection.connected_at, UTC).isoformat(),
                "LastActiveAt": datetime.fromtimestamp(connection.last_active_at, UTC).isoformat(),
                "Identity": {"SourceIp": connection.source_ip, "UserAgent": connection.user_agent},
            },
        )

    def do_DELETE(self) -> None:
        connection_id = self._target() or ""
        if self.gateway.disconnect(connection_id) == HTTPStatus.GONE:
            return self._gone(connection_id)
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Content-Length", "0")
        self.end_headers()
