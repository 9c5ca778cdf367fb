"""One SQS-fed function of the local stack, in its own process (as a Lambda container is): its environment
is set once before the handler is imported, then it polls like Lambda's event source mapping — batch size
and batching window from the template, long polling, ``batchItemFailures`` honoured (failed records stay
for redelivery, where SQS's redrive policy moves them to the DLQ after ``maxReceiveCount`` receives)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

SQS_MAX_PER_RECEIVE = 10


def run_poller(
    logical_id: str, queue_url: str, environment: dict[str, str], stop: Any, ready: Any | None = None
) -> None:
    """Entry point of a poller process; returns when ``stop`` (a multiprocessing Event) is set."""
    # Ctrl-C reaches the whole process group: the parent stops the pollers through ``stop``, after the
    # batch in hand is finished, instead of each one dying mid-invocation.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(environment)
    import boto3

    from infra.lambda_shapes import sqs_event
    from infra.local_lambda import SqsFunctionRunner
    from infra.template import load_template

    spec = load_template().functions[logical_id]
    sqs = boto3.client("sqs")
    runner = SqsFunctionRunner(spec, queue_url, sqs)
    source = spec.sqs_events[0]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    if ready is not None:
        ready.set()
    while not stop.is_set():
        messages = _collect(sqs, queue_url, source.batch_size, source.batching_window_seconds, stop)
        if not messages:
            continue
        event = sqs_event(messages, arn, sqs.meta.region_name)
        try:
            response = runner.invoke(event)
        except Exception as exc:  # noqa: BLE001 - like Lambda: a crashed invocation fails the whole batch
            print(f"[{logical_id}] invocation failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), SQS_MAX_PER_RECEIVE):
            chunk = done[start : start + SQS_MAX_PER_RECEIVE]
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )


def _collect(
    sqs: Any, queue_url: str, batch_size: int, window_seconds: int, stop: Any
) -> list[dict[str, Any]]:
    """Up to ``batch_size`` messages: long-poll for the first, then keep receiving until the batch is full or
    the batching window has passed."""
    messages: list[dict[str, Any]] = []
    deadline: float | None = None
    while not stop.is_set() and len(messages) < batch_size:
        wait = 1 if deadline is None else 0
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(SQS_MAX_PER_RECEIVE, batch_size - len(messages)),
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        messages.extend(batch)
        if deadline is None:
            if not messages:
                return []
            deadline = time.monotonic() + window_seconds
        if time.monotonic() >= deadline or (not batch and window_seconds == 0):
            break
        if not batch:
            time.sleep(0.05)
    return messages
