"""Benchmark of cleanup (run: python bench/bench_cleanup.py [--messages 200000] [--recipients 2]).

Seeds N old messages, soft-deleted past the grace period, each with ``--recipients`` deliveries, then purges
them with a ``cleanup`` job (task ``old-messages``, ``hard_delete``) run through CleanupFunction's handler as
Lambda would, in a process of its own: its settings from template.yaml (CLEANUP_TIME_BUDGET_SECONDS 15,
batches of CLEANUP_BATCH_SIZE), each continuation taken from the queue and run next, a moto server for SQS
and PostgreSQL (embedded unless DATABASE_URL is set). Then seeds the same rows again and deletes them with
plain ``DELETE`` statements in one transaction (deliveries, then messages: the foreign key needs both).

Prints: wall time of the job chain against the plain DELETE, invocations and their longest wall time, peak
RSS of the function's process (``resource.getrusage`` in it: handler, boto3 and SQLAlchemy, not moto or the
database), and
the longest single SQL statement of the job chain (SQLAlchemy cursor-execute events).

Not run in CI. The issue's goal is 1,000,000 messages; the default is 200,000 to fit a shared machine (pass
``--messages 1000000`` where there is time). Figures come from one run on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, quiet_local_aws  # noqa: E402 - after the path
from infra.lambda_shapes import body_event  # noqa: E402 - after the path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--recipients", type=int, default=2, help="deliveries per message")
    args = parser.parse_args()
    quiet_local_aws()
    with bench_database() as url:
        run(url, args.messages, args.recipients)


def seed(engine: Any, messages: int, recipients: int) -> uuid.UUID:
    """N messages created 800 days ago and soft-deleted 400 days ago, each delivered to every recipient."""
    from sqlalchemy import text

    from infra.seed import add_conversation, add_users

    with engine.begin() as conn:
        sender, *others = add_users(conn, ["sender", *(f"r{i}" for i in range(recipients))])
        conversation = add_conversation(conn, [sender, *others], kind="group")
        conn.execute(
            text(
                "INSERT INTO messages (id, conversation_id, sender_id, seq, status, created_at, deleted_at)"
                " SELECT gen_random_uuid(), :conversation, :sender, g, 'sent',"
                " now() - interval '800 days', now() - interval '400 days' FROM generate_series(1, :n) g"
            ),
            {"conversation": conversation, "sender": sender, "n": messages},
        )
        for recipient in others:
            conn.execute(
                text(
                    "INSERT INTO message_deliveries (message_id, recipient_id, status)"
                    " SELECT id, :recipient, 'delivered' FROM messages WHERE conversation_id = :conversation"
                ),
                {"conversation": conversation, "recipient": recipient},
            )
        conn.execute(text("ANALYZE messages; ANALYZE message_deliveries"))
    return conversation


def run(database_url: str, messages: int, recipients: int) -> None:
    import logging
    import multiprocessing

    import boto3
    from moto.server import ThreadedMotoServer
    from sqlalchemy import create_engine, text

    from infra.template import load_template, provision
    from shared.config import Settings
    from shared.db.engine import build_engine, normalize_url
    from shared.db.migrations import upgrade

    upgrade(build_engine(Settings(database_url=database_url)))
    # Seeding, counting and the plain DELETE run without the functions' statement and socket timeouts.
    engine = create_engine(normalize_url(database_url))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per SQS call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    try:
        template = load_template()
        stack = provision(template, sqs_client=boto3.client("sqs", region_name="us-east-1"))
        env = stack.function_environment(template.functions["CleanupFunction"])
        env.pop("DB_SECRET_ARN", None)
        env.update(
            {
                **{k: v for k, v in os.environ.items() if k.startswith(("AWS_", "POWERTOOLS_"))},
                "DATABASE_URL": database_url,
                "LOG_LEVEL": "ERROR",
                "POWERTOOLS_LOG_LEVEL": "ERROR",
            }
        )
        started = time.perf_counter()
        seed(engine, messages, recipients)
        print(
            f"seeded {messages} messages with {messages * recipients} deliveries in "
            f"{time.perf_counter() - started:.1f} s"
        )
        # The function in a process of its own, as in Lambda: its peak RSS is the handler's, not moto's.
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        child = context.Process(target=run_function, args=(env, stack.queue_urls["CleanupQueue"], results))
        child.start()
        result = results.get(timeout=3600)
        child.join(60)
        with engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM messages WHERE deleted_at IS NOT NULL")
            ).scalar_one()
        assert left == 0, f"{left} messages left"
        chain, invocations = result["chain"], result["invocations"]
        print(
            f"== cleanup: {messages} old messages, {recipients} deliveries each, "
            f"batch {result['batch']}, budget {result['budget']:.0f} s =="
        )
        print(
            f"job chain                 {chain:.1f} s in {len(invocations)} invocations "
            f"(longest {max(invocations):.1f} s; {messages / chain:,.0f} messages/s)"
        )
        print(
            f"peak RSS, function process {result['hwm_kb'] / 1024:.0f} MB (VmHWM of its own address space; "
            f"goal < 150 MB); getrusage ru_maxrss {result['rss_peak'] / 1024:.0f} MB, before the first job "
            f"{result['rss_before'] / 1024:.0f} MB (Linux keeps ru_maxrss across exec from the parent)"
        )
        print(
            f"longest single statement  {result['longest'] * 1000:.0f} ms (goal < 1 s): "
            f"{' '.join(result['statement'].split())[:100]}"
        )

        seed(engine, messages, recipients)
        cutoff = "now() - interval '30 days'"
        plain: list[float] = []
        with engine.begin() as conn:
            began = time.perf_counter()
            conn.execute(
                text(
                    "DELETE FROM message_deliveries WHERE message_id IN"
                    f" (SELECT id FROM messages WHERE deleted_at < {cutoff})"
                )
            )
            plain.append(time.perf_counter() - began)
            began = time.perf_counter()
            deleted = conn.execute(text(f"DELETE FROM messages WHERE deleted_at < {cutoff}")).rowcount
            plain.append(time.perf_counter() - began)
        assert deleted == messages
        print(
            f"plain DELETE              {sum(plain):.1f} s (deliveries {plain[0]:.1f} s, messages "
            f"{plain[1]:.1f} s, one transaction); job chain / plain = {chain / sum(plain):.1f}"
        )
    finally:
        server.stop()
        engine.dispose()


def run_function(env: dict[str, str], queue: str, results: Any) -> None:
    """The function process: CleanupFunction's handler, invoked once per job of the chain (the first one,
    then each continuation it enqueues, taken from the queue as the event source mapping would)."""
    os.environ.update(env)
    from sqlalchemy import event

    from handlers.cleanup import lambda_handler
    from infra.lambda_shapes import LocalLambdaContext
    from shared.aws import client
    from shared.config import get_settings
    from shared.db.engine import get_engine

    settings = get_settings()
    engine = get_engine()
    sqs = client("sqs")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    longest: list[Any] = [0.0, ""]
    starts: dict[int, float] = {}

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        starts[id(cursor)] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        elapsed = time.perf_counter() - starts.pop(id(cursor), time.perf_counter())
        if elapsed > longest[0]:
            longest[0], longest[1] = elapsed, statement

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    body: dict[str, Any] | None = {
        "job_id": str(uuid.uuid4()),
        "job_type": "cleanup",
        "schema_version": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "data": {"task": "old-messages", "hard_delete": True},
    }
    invocations: list[float] = []
    started = time.perf_counter()
    while body is not None:
        began = time.perf_counter()
        response = lambda_handler(_event(body), LocalLambdaContext())
        invocations.append(time.perf_counter() - began)
        assert response == {"batchItemFailures": []}, response
        received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=1)
        body = None
        for message in received.get("Messages", []):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            body = json.loads(message["Body"])
    results.put(
        {
            "hwm_kb": _vm_hwm_kb(),
            "chain": time.perf_counter() - started,
            "invocations": invocations,
            "rss_before": rss_before,
            "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "longest": longest[0],
            "statement": longest[1],
            "batch": settings.cleanup_batch_size,
            "budget": settings.cleanup_time_budget_seconds,
        }
    )


def _vm_hwm_kb() -> int:
    """Peak resident set of this process's address space (kB), reset at exec, unlike ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _event(body: dict[str, Any]) -> dict[str, Any]:
    return body_event(json.dumps(body), "arn:aws:sqs:us-east-1:123456789012:bench-cleanup")


if __name__ == "__main__":
    main()
