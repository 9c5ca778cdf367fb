"""The local stack's AWS endpoint: moto's server app (every service), plus what moto lacks and the stack's
functions use: SQS message move tasks (infra/move_tasks.py) and Lambda ``Invoke`` of the template's
functions (infra/lambda_invoke.py). Same interface as ``moto.server.ThreadedMotoServer``."""

from __future__ import annotations

import threading
from typing import Any

from infra.lambda_invoke import LambdaInvokeMiddleware
from infra.move_tasks import MoveTaskEmulator, MoveTaskMiddleware


class LocalAwsServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self.move_tasks = MoveTaskEmulator(self._sqs_client)
        self.functions: LambdaInvokeMiddleware | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class QuietRequestHandler(MotoRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass  # one line per SQS call otherwise (the pollers long-poll all the time)

        moto = DomainDispatcherApplication(create_backend_app)
        self.functions = LambdaInvokeMiddleware(MoveTaskMiddleware(moto, self.move_tasks))
        self._server = make_server(
            self.host, self.port, self.functions, threaded=True, request_handler=QuietRequestHandler
        )
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()

    def get_host_and_port(self) -> tuple[str, int]:
        return self.host, self.port

    def stop(self) -> None:
        self.move_tasks.shutdown()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def _sqs_client(self, region: str) -> Any:
        # One session: boto3's default session is not safe to create clients from several threads.
        with self._clients_lock:
            if region not in self._clients:
                import boto3

                moto_accepts_any_key = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
                session = boto3.session.Session(region_name=region, **moto_accepts_any_key)
                self._clients[region] = session.client("sqs", endpoint_url=self.url)
            return self._clients[region]
