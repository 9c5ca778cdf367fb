"""Lambda's ``Invoke`` API for functions of the template, on the local stack's moto server.

The management function continues a long selective redrive by invoking itself asynchronously
(``InvocationType=Event`` on its own ARN); moto knows no such function. This WSGI middleware answers
``POST /2015-03-31/functions/{name}/invocations`` for the functions registered with it (by name, ARN or
partial ARN, any qualifier) as Lambda does: ``Event`` -> 202 and the function runs in the background,
``RequestResponse`` -> 200 with its result (``X-Amz-Function-Error: Unhandled`` when it raised),
``DryRun`` -> 204. Any other function goes to moto."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from infra.move_tasks import WsgiApp

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")

Invoke = Callable[[dict[str, Any]], Any]
InvokeAsync = Callable[[dict[str, Any]], None]


def function_name(identifier: str) -> str:
    """``name`` from a name, ``account:function:name``, or ``arn:aws:lambda:region:account:function:name``
    (with or without ``:qualifier``)."""
    parts = identifier.split(":")
    if "function" in parts:
        return parts[parts.index("function") + 1]
    return parts[0]


class LambdaInvokeMiddleware:
    def __init__(self, app: WsgiApp, out: Callable[[str], None] = print) -> None:
        self.app, self.out = app, out
        self._functions: dict[str, tuple[Invoke, InvokeAsync]] = {}

    def register(self, names: Iterable[str], invoke: Invoke, invoke_async: InvokeAsync | None = None) -> None:
        """Serve ``Invoke`` for a function known by ``names``; ``invoke_async`` runs an ``Event``
        invocation (default: ``invoke`` in a thread, its failure reported)."""
        handlers = (invoke, invoke_async or self._in_thread(invoke))
        for name in names:
            self._functions[name] = handlers

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = _INVOKE_PATH.match(environ.get("PATH_INFO", ""))
        handlers = self._functions.get(function_name(unquote(match["name"]))) if match else None
        if handlers is None or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        invoke, invoke_async = handlers
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            event = json.loads(environ["wsgi.input"].read(length) or b"{}") if length > 0 else {}
        except ValueError:
            body = {"Type": "User", "message": "Could not parse request body into json"}
            return _reply(
                start_response,
                "400 Bad Request",
                body,
                [("x-amzn-ErrorType", "InvalidRequestContentException")],
            )
        kind = environ.get("HTTP_X_AMZ_INVOCATION_TYPE", "RequestResponse")
        if kind == "Event":
            invoke_async(event)
            return _reply(start_response, "202 Accepted", None, [])
        if kind == "DryRun":
            return _reply(start_response, "204 No Content", None, [])
        try:
            return _reply(start_response, "200 OK", invoke(event), [("X-Amz-Executed-Version", "$LATEST")])
        except Exception as exc:  # noqa: BLE001 - an unhandled function error is a 200 with the error, as in Lambda
            error = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            return _reply(start_response, "200 OK", error, [("X-Amz-Function-Error", "Unhandled")])

    def _in_thread(self, invoke: Invoke) -> InvokeAsync:
        def run(event: dict[str, Any]) -> None:
            try:
                invoke(event)
            except Exception as exc:  # noqa: BLE001 - like Lambda: an asynchronous failure is only logged
                self.out(f"[lambda] asynchronous invocation failed: {type(exc).__name__}")

        return lambda event: threading.Thread(target=run, args=(event,), daemon=True).start()


def _reply(
    start_response: Callable[..., Any], status: str, body: Any, headers: list[tuple[str, str]]
) -> Iterable[bytes]:
    payload = b"" if body is None else json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            *headers,
        ],
    )
    return [payload]
