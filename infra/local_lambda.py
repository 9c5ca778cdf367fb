"""Runs a function of template.yaml the way Lambda's SQS event source mapping does: receive a batch from the
function's queue, invoke the handler with a real SQS event and a context with a deadline, delete the records
that succeeded and leave ``batchItemFailures`` for redelivery (where SQS counts receives toward the DLQ)."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from infra.lambda_shapes import LocalLambdaContext, receive_event
from infra.template import FunctionSpec

_ENVIRONMENT_LOCK = threading.RLock()


@contextmanager
def function_environment(environment: dict[str, str] | None) -> Iterator[None]:
    """Give one invocation its function's environment (as Lambda would) inside a shared process.

    Settings are read once per container; here a "container" lasts one invocation, so the cached settings
    are dropped before and after. Invocations that set an environment are serialized."""
    if not environment:
        yield
        return
    from shared.config import get_settings

    with _ENVIRONMENT_LOCK:
        saved = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)
        get_settings.cache_clear()
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            get_settings.cache_clear()


class SqsFunctionRunner:
    def __init__(
        self, spec: FunctionSpec, queue_url: str, sqs: Any, environment: dict[str, str] | None = None
    ) -> None:
        self.spec = spec
        self.environment = environment
        self.queue_url = queue_url
        self.sqs = sqs
        self.batch_size = spec.sqs_events[0].batch_size if spec.sqs_events else 10
        module = importlib.import_module(spec.module)
        self.handler: Callable[[dict[str, Any], Any], dict[str, Any]] = getattr(module, spec.attribute)

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        context = LocalLambdaContext(function_name=self.spec.logical_id, timeout_s=self.spec.timeout)
        with function_environment(self.environment):
            return dict(self.handler(event, context) or {})

    def poll_once(self, *, wait_seconds: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
        """One receive -> invoke -> delete cycle; returns (event, response). Nothing received: no invoke."""
        event = receive_event(
            self.sqs, self.queue_url, max_messages=min(10, self.batch_size), wait_seconds=wait_seconds
        )
        if not event["Records"]:
            return event, {"batchItemFailures": []}
        response = self.invoke(event)
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [record for record in event["Records"] if record["messageId"] not in failed]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": record["receiptHandle"]}
                for i, record in enumerate(done[start : start + 10])
            ]
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return event, response

    def drain(self, *, max_batches: int = 100) -> int:
        """Poll until the queue yields nothing visible; returns the number of records handled."""
        handled = 0
        for _ in range(max_batches):
            event, _ = self.poll_once()
            if not event["Records"]:
                break
            handled += len(event["Records"])
        return handled


def invoker(spec: FunctionSpec, environment: dict[str, str]) -> Callable[[dict[str, Any]], Any]:
    """Call a function of the template in this process with its own environment (any event source)."""
    module = importlib.import_module(spec.module)
    handler = getattr(module, spec.attribute)

    def invoke(event: dict[str, Any]) -> Any:
        context = LocalLambdaContext(function_name=spec.logical_id, timeout_s=spec.timeout)
        with function_environment(environment):
            return handler(event, context)

    return invoke
