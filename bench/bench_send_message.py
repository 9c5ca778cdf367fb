"""Benchmarks for send-message (run: python bench/bench_send_message.py).

Prints, for conversations of 2, 50 and 1000 participants (sender + recipients, nobody connected, so every
recipient gets a notification job): SQL statements per job, AWS calls per job, jobs/s through the handler
(moto in-process for AWS) and through the same SQL issued directly with pg8000 (the raw-SQL floor), and their
ratio; then the import time of every handler module against importing only the libraries it loads
(``--imports-only`` for just that part).

Figures are ratios measured in one run: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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

SIZES = (2, 50, 1000)


def handler_modules() -> list[str]:
    """Every function's handler module, from template.yaml (one reader of the topology)."""
    from infra.template import load_template

    return sorted({spec.module for spec in load_template().functions.values()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=60, help="jobs per size (fewer for 1000)")
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--imports-only", action="store_true", help="skip the throughput part")
    args = parser.parse_args()
    if not args.imports_only:
        print("== send-message throughput ==")
        throughput(args.jobs)
    print(f"\n== cold-start import time (best of {args.import_runs}, fresh interpreter each) ==")
    for module in handler_modules():
        import_time(module, args.import_runs)


# --------------------------------------------------------------------------------------------- throughput


def throughput(jobs_per_size: int) -> None:
    quiet_local_aws()
    with bench_database() as url:
        _throughput(url, jobs_per_size)


def _throughput(database_url: str, jobs_per_size: int) -> None:
    import boto3
    from moto import mock_aws
    from sqlalchemy import event

    from infra.lambda_shapes import LocalLambdaContext
    from infra.seed import add_conversation, add_users
    from infra.template import load_template, provision
    from shared.db.engine import get_engine
    from shared.db.migrations import upgrade

    os.environ["DATABASE_URL"] = database_url
    engine = get_engine()
    upgrade(engine)
    with mock_aws():
        template = load_template()
        stack = provision(template, sqs_client=boto3.client("sqs", region_name="us-east-1"))
        spec = template.functions["SendMessageFunction"]
        env = stack.function_environment(spec)
        env.pop("DB_SECRET_ARN", None)
        os.environ.update(env)
        os.environ["WEBSOCKET_ENDPOINT"] = "https://bench.execute-api.us-east-1.amazonaws.com/prod"
        from shared.config import get_settings

        os.environ.update(
            {"POWERTOOLS_LOG_LEVEL": "ERROR", "LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "1"}
        )
        get_settings.cache_clear()  # read once per container: this "container" starts now
        from moto.sqs.models import sqs_backends

        # moto's queues slow down as they fill (real SQS does not): empty the downstream ones between jobs,
        # untimed, through moto's backend (PurgeQueue is limited to once a minute).
        backend = sqs_backends["123456789012"]["us-east-1"]
        downstream = [
            backend.queues[stack.queue_urls[q].rsplit("/", 1)[1]]
            for q in ("IndexingQueue", "NotificationQueue")
        ]
        from handlers.send_message import lambda_handler

        statements: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        aws_calls: list[str] = []
        aws_intervals: list[tuple[float, float]] = []
        started_at: dict[int, float] = {}
        import threading

        from shared.aws import client

        def before(model: Any, **_: Any) -> None:
            aws_calls.append(model.name)
            started_at[threading.get_ident()] = time.perf_counter()

        def after(**_: Any) -> None:
            aws_intervals.append((started_at.pop(threading.get_ident()), time.perf_counter()))

        for service in ("sqs", "apigatewaymanagementapi"):
            args = (service,) if service == "sqs" else (service, os.environ["WEBSOCKET_ENDPOINT"])
            client(*args).meta.events.register("before-call", before)
            client(*args).meta.events.register("after-call", after)

        print(
            f"{'participants':>12} {'stmts/job':>9} {'aws/job':>8} {'handler j/s':>11} {'excl. AWS':>10} "
            f"{'raw SQL j/s':>11} {'ratio':>6}"
        )
        for size in SIZES:
            with engine.begin() as conn:
                members = add_users(conn, [f"m{i}" for i in range(size)])
                conversation = add_conversation(conn, members, kind="group")
            n = jobs_per_size if size < 1000 else max(10, jobs_per_size // 4)
            events = [_event(conversation, members[0], i) for i in range(n)]
            lambda_handler(_event(conversation, members[0], -1), LocalLambdaContext())  # warm
            statements.clear()
            aws_calls.clear()
            aws_intervals.clear()
            handler_s = 0.0
            for e in events:
                started = time.perf_counter()
                response = lambda_handler(e, LocalLambdaContext())
                handler_s += time.perf_counter() - started
                assert response == {"batchItemFailures": []}, response
                for queue in downstream:
                    queue._messages.clear()
            stmts = len(statements) / n
            calls = len(aws_calls) / n
            raw_s = _raw_sql_floor(database_url, conversation, members, n)
            own_s = max(handler_s - _covered(aws_intervals), 1e-9)
            print(
                f"{size:>12} {stmts:>9.1f} {calls:>8.1f} {n / handler_s:>11.1f} {n / own_s:>10.1f} "
                f"{n / raw_s:>11.1f} {raw_s / own_s:>6.2f}"
            )
        print(
            "handler j/s: end to end, AWS served in-process by moto (whose latency is not AWS's);\n"
            "excl. AWS: the same runs minus wall time inside AWS calls (concurrent calls counted once);\n"
            "ratio: excl. AWS j/s / raw SQL j/s (1.0 = no overhead over the same SQL written by hand)"
        )


def _covered(intervals: list[tuple[float, float]]) -> float:
    """Wall time covered by possibly overlapping intervals."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def _event(conversation: uuid.UUID, sender: uuid.UUID, i: int) -> dict[str, Any]:
    job_id = str(uuid.uuid4())
    body = {
        "job_id": job_id,
        "job_type": "send-message",
        "schema_version": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "data": {
            "message_id": str(uuid.uuid4()),
            "conversation_id": str(conversation),
            "sender_id": str(sender),
            "content": f"benchmark message {i}",
        },
    }
    return body_event(
        json.dumps(body),
        "arn:aws:sqs:us-east-1:123456789012:bench-send-message.fifo",
        group_id=str(conversation),
    )


def _raw_sql_floor(database_url: str, conversation: uuid.UUID, members: list[uuid.UUID], n: int) -> float:
    """The same SQL the handler issues (its transaction, then the post-commit lookup and completion), by
    hand over one pg8000 connection: the floor for the handler's own database work."""
    import pg8000.dbapi

    from shared.db.engine import normalize_url

    url = normalize_url(database_url)
    conn = pg8000.dbapi.connect(
        user=url.username or "postgres",
        password=url.password,
        host=url.host,
        port=url.port or 5432,
        database=url.database,
        unix_sock=url.query.get("unix_sock"),
    )
    sender = members[0]
    started = time.perf_counter()
    for i in range(n):
        cur = conn.cursor()
        job_id, message_id = uuid.uuid4(), uuid.uuid4()
        cur.execute(
            "INSERT INTO job_inbox (job_id, job_type) VALUES (%s, 'send-message') "
            "ON CONFLICT (job_id) DO UPDATE SET job_id = EXCLUDED.job_id RETURNING effects_pending, xmax = 0",
            (job_id,),
        )
        cur.fetchall()
        cur.execute(
            "SELECT c.encryption_enabled, array_agg(p.user_id) FILTER (WHERE p.left_at IS NULL) "
            "FROM conversations c LEFT JOIN conversation_participants p ON p.conversation_id = c.id "
            "WHERE c.id = %s GROUP BY c.id",
            (conversation,),
        )
        participants = cur.fetchone()[1]
        cur.execute(
            "INSERT INTO messages (id, conversation_id, sender_id, seq, content, content_type, status, "
            "sent_at) VALUES (%s, %s, %s, (SELECT coalesce(max(seq), 0) + 1 FROM messages "
            "WHERE conversation_id = %s), %s, 'text', 'sent', now()) RETURNING seq, created_at",
            (message_id, conversation, sender, conversation, f"raw {i}"),
        )
        cur.fetchall()
        recipients = [p for p in participants if p != sender]
        cur.execute(
            "INSERT INTO message_deliveries (message_id, recipient_id, status) "
            "SELECT %s, unnest(%s::uuid[]), 'pending' ON CONFLICT DO NOTHING",
            (message_id, recipients),
        )
        # the job's effects, stored with it; then after commit, as the runner does: connections, completion
        effects = json.dumps(
            [{"kind": "enqueue", "job": str(i)}, {"kind": "broadcast", "users": len(participants)}]
        )
        cur.execute("UPDATE job_inbox SET effects_pending = %s::jsonb WHERE job_id = %s", (effects, job_id))
        conn.commit()
        cur.execute(
            "SELECT connection_id, user_id FROM ws_connections WHERE user_id = ANY(%s::uuid[])",
            (participants,),
        )
        cur.fetchall()
        cur.execute(
            "UPDATE job_inbox SET effects_pending = '[]', completed_at = now() WHERE job_id = %s", (job_id,)
        )
        conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


# -------------------------------------------------------------------------------------------- import time

_PROBE = r"""
import sys, time, json
project = ("handlers", "shared", "infra")
mods = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
t = time.perf_counter()
if mods is None:
    __import__(sys.argv[1])
else:
    for m in mods:
        try:
            __import__(m)
        except Exception:
            pass
elapsed = time.perf_counter() - t
loaded = [m for m in sys.modules if m.split(".")[0] not in project]
print(json.dumps({"seconds": elapsed, "modules": loaded}))
"""


def import_time(module: str, runs: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POWERTOOLS_TRACE_DISABLED": "1"}
    handler_runs, library_runs, modules = [], [], None
    for _ in range(runs):
        out = json.loads(subprocess.check_output([sys.executable, "-c", _PROBE, module], env=env, cwd=ROOT))
        handler_runs.append(out["seconds"])
        modules = out["modules"]
        # only the third-party modules the handler import pulled in, in the order they were loaded
        libs = json.loads(
            subprocess.check_output(
                [sys.executable, "-c", _PROBE, module, json.dumps(modules)], env=env, cwd=ROOT
            )
        )
        library_runs.append(libs["seconds"])
    h, lib = min(handler_runs), min(library_runs)
    print(
        f"{module:<34} handler {h * 1000:7.1f} ms   libraries alone {lib * 1000:7.1f} ms   "
        f"added {100 * (h - lib) / lib:5.1f}%   (median {statistics.median(handler_runs) * 1000:.1f} / "
        f"{statistics.median(library_runs) * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    main()
