"""Benchmark of batch fan-out (run: python bench/bench_batch_fanout.py [--recipients N] [--chunk-size C]).

Batch-message jobs to N recipients (10,000 by default: two batches, as a job holds at most 5,000; users
that exist, none with a direct conversation with the sender yet: the worst case, every conversation is
created), run chunk after chunk through BatchMessageFunction's
handler as Lambda would (its continuation taken from the queue each time), with moto in-process for AWS and
PostgreSQL (embedded unless DATABASE_URL is set). Prints the SQS calls against the goal ceil(N/10) sends plus
one continuation per chunk, SQL statements per chunk (min/max: constant means they do not grow with the
chunk's position or the batch's size) and wall time per chunk (median, p95, max).

Not run in CI. Figures come from one run on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, quiet_local_aws  # noqa: E402 - after the path
from infra.lambda_shapes import body_event  # noqa: E402 - after the path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=100)
    args = parser.parse_args()
    quiet_local_aws()
    with bench_database() as url:
        run(url, args.recipients, args.chunk_size)


def run(database_url: str, recipients: int, chunk_size: int) -> None:
    import boto3
    from moto import mock_aws
    from moto.sqs.models import sqs_backends
    from sqlalchemy import event

    from infra.lambda_shapes import LocalLambdaContext
    from infra.seed import add_users
    from infra.template import load_template, provision
    from shared.db.engine import get_engine
    from shared.db.migrations import upgrade
    from shared.jobs import MAX_BATCH_RECIPIENTS

    os.environ["DATABASE_URL"] = database_url
    engine = get_engine()
    upgrade(engine)
    with mock_aws():
        template = load_template()
        stack = provision(template, sqs_client=boto3.client("sqs", region_name="us-east-1"))
        env = stack.function_environment(template.functions["BatchMessageFunction"])
        env.pop("DB_SECRET_ARN", None)
        os.environ.update(env)
        os.environ["WEBSOCKET_ENDPOINT"] = "https://bench.execute-api.us-east-1.amazonaws.com/prod"
        os.environ.update({"LOG_LEVEL": "ERROR", "POWERTOOLS_LOG_LEVEL": "ERROR"})
        from shared.config import get_settings

        get_settings.cache_clear()
        from handlers.batch_message import lambda_handler
        from shared.aws import client

        backend = sqs_backends["123456789012"]["us-east-1"]
        sends = backend.queues[stack.queue_urls["SendMessageQueue"].rsplit("/", 1)[1]]
        sqs = client("sqs")
        batch_queue = stack.queue_urls["BatchMessageQueue"]

        with engine.begin() as conn:
            sender, *users = add_users(conn, ["sender", *(f"r{i}" for i in range(recipients))])
        statements: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        calls: Counter[str] = Counter()
        sqs.meta.events.register("before-call", lambda model, **_: calls.update([model.name]))
        in_sqs = [0.0]
        began: list[float] = []
        sqs.meta.events.register("before-call", lambda **_: began.append(time.perf_counter()))
        sqs.meta.events.register(
            "after-call", lambda **_: in_sqs.__setitem__(0, in_sqs[0] + time.perf_counter() - began.pop())
        )

        # A batch-message job holds at most MAX_BATCH_RECIPIENTS (5,000): a producer splits a larger audience
        # into several batches; they are run one after the other.
        per_chunk: list[tuple[float, int]] = []
        outside_sqs: list[float] = []
        enqueued = 0
        chunks = 0
        for first in range(0, recipients, MAX_BATCH_RECIPIENTS):
            part = users[first : first + MAX_BATCH_RECIPIENTS]
            body = {
                "job_id": str(uuid.uuid4()),
                "job_type": "batch-message",
                "schema_version": 1,
                "created_at": datetime.now(UTC).isoformat(),
                "data": {
                    "batch_id": str(uuid.uuid4()),
                    "sender_id": str(sender),
                    "content": "the quarterly all-hands moves to 10:00",
                    "recipient_ids": [str(u) for u in part],
                    "chunk_size": chunk_size,
                },
            }
            part_chunks = math.ceil(len(part) / chunk_size)
            chunks += part_chunks
            for index in range(part_chunks):
                statements.clear()
                in_sqs[0] = 0.0
                started = time.perf_counter()
                response = lambda_handler(_event(body), LocalLambdaContext())
                elapsed = time.perf_counter() - started
                assert response == {"batchItemFailures": []}, response
                per_chunk.append((elapsed, len(statements)))
                outside_sqs.append(elapsed - in_sqs[0])
                enqueued += len(sends._messages)
                sends._messages.clear()  # untimed: moto's queues slow down as they fill, SQS does not
                if index == part_chunks - 1:  # its continuation is the settle check
                    break
                body = _next_job(sqs, batch_queue, calls, body["data"]["batch_id"])
        from sqlalchemy import text

        with engine.connect() as conn:
            ledger = conn.execute(
                text(
                    "SELECT status, coalesce(error, '-'), count(*) FROM batch_jobs"
                    " GROUP BY 1, 2 ORDER BY 1, 2"
                )
            ).all()
        calls += Counter()  # drop the zero counts
        batches = calls["SendMessageBatch"]
        singles = calls["SendMessage"]
        goal = math.ceil(recipients / 10) + chunks
        times = sorted(t for t, _ in per_chunk)
        stmts = [s for _, s in per_chunk]
        print(f"== batch fan-out: {recipients} recipients, chunk_size {chunk_size}, {chunks} chunks ==")
        print(f"send-message jobs enqueued      {enqueued}")
        print(f"ledger (status, error, rows)    {[tuple(row) for row in ledger]}")
        print(
            f"SQS calls                       {batches + singles} "
            f"(SendMessageBatch {batches}, SendMessage {singles}; goal ceil(N/10)+chunks = {goal}; the"
            " continuation goes in its own SendMessageBatch call)"
        )
        print(f"all calls by operation          {dict(sorted(calls.items()))}")
        print(f"SQL statements per chunk        min {min(stmts)}, max {max(stmts)}")
        print(
            f"  chunks by statement count     {dict(sorted(Counter(stmts).items()))} "
            "(a batch's first chunk also creates the batch and its ledger)"
        )
        print(
            f"wall time per chunk             median {statistics.median(times) * 1000:.0f} ms, "
            f"p95 {times[int(0.95 * (len(times) - 1))] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms "
            "(moto in-process for SQS)"
        )
        own = sorted(outside_sqs)
        print(
            f"  of which outside SQS calls    median {statistics.median(own) * 1000:.0f} ms, "
            f"p95 {own[int(0.95 * (len(own) - 1))] * 1000:.0f} ms, max {own[-1] * 1000:.0f} ms "
            "(the database work and the function's own)"
        )
        print(f"total                           {sum(times):.1f} s")


def _next_job(sqs: Any, queue: str, calls: Counter[str], batch_id: str) -> dict[str, Any]:
    """The continuation the last chunk of ``batch_id`` enqueued, taken from the queue (the bench's own calls
    not counted). An earlier batch's settle check (due BATCH_SETTLE_CHECK_SECONDS after its last chunk) is
    dropped: the bench measures chunks."""
    before = dict(calls)
    try:
        for _attempt in range(20):
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=1).get(
                "Messages", []
            )
            for message in messages:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                body = dict(json.loads(message["Body"]))
                if body["data"]["batch_id"] == batch_id:
                    return body
        raise RuntimeError("the chunk enqueued no continuation")
    finally:
        calls.clear()
        calls.update(before)


def _event(body: dict[str, Any]) -> dict[str, Any]:
    return body_event(json.dumps(body), "arn:aws:sqs:us-east-1:123456789012:bench-batch-message")


if __name__ == "__main__":
    main()
