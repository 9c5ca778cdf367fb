"""A function of the template run in worker processes of its own, as Lambda runs it in containers: each
process sets the function's environment once, imports its handler, and serves invocations with a Lambda
context that has the function's deadline. Several invocations run at once (up to ``max_workers``), and a
long one (a redrive slice) blocks neither the other requests nor the functions the local stack runs in its
main process (which share one environment and take turns)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_handler: Callable[[dict[str, Any], Any], Any] | None = None
_spec: Any = None


def _start_worker(logical_id: str, environment: dict[str, str]) -> None:
    global _handler, _spec
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool; Ctrl-C must not kill a call
    os.environ.update(environment)
    import importlib

    from infra.template import load_template

    _spec = load_template().functions[logical_id]
    _handler = getattr(importlib.import_module(_spec.module), _spec.attribute)


def _invoke(event: dict[str, Any]) -> Any:
    from infra.lambda_shapes import LocalLambdaContext

    assert _handler is not None and _spec is not None, "worker not initialised"
    return _handler(event, LocalLambdaContext(function_name=_spec.logical_id, timeout_s=_spec.timeout))


class FunctionProcesses:
    def __init__(
        self,
        logical_id: str,
        environment: dict[str, str],
        *,
        max_workers: int = 3,
        out: Callable[[str], None] = print,
    ) -> None:
        self.logical_id, self.environment, self.max_workers, self.out = (
            logical_id,
            environment,
            max_workers,
            out,
        )
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.max_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.logical_id, self.environment),
        )

    def warm(self) -> None:
        """Start one worker and import the handler now (the cold start), not on the first request."""
        self._pool.submit(_invoke_nothing).result(timeout=120)

    def invoke(self, event: dict[str, Any]) -> Any:
        """The handler's result; its exception is raised here."""
        try:
            return self._pool.submit(_invoke, event).result()
        except BrokenProcessPool:
            self._pool = self._new_pool()  # a worker died (as a container can): the next call gets new ones
            raise

    def invoke_async(self, event: dict[str, Any]) -> None:
        """Start an invocation and return (Lambda's ``Event`` type); a failure is reported, not retried."""
        future = self._pool.submit(_invoke, event)
        future.add_done_callback(self._report)

    def _report(self, future: Future[Any]) -> None:
        if future.cancelled():
            self.out(f"[{self.logical_id}] asynchronous invocation dropped: the stack stopped first")
            return
        error = future.exception()
        if error is not None:
            self.out(f"[{self.logical_id}] asynchronous invocation failed: {type(error).__name__}")

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the workers: those still running an invocation after ``timeout`` are terminated (as Lambda
        ends a container at its timeout; messages a redrive held reappear in their queue)."""
        workers = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(2)


def _invoke_nothing() -> None:
    assert _handler is not None, "worker not initialised"
