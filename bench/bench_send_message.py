"""Benchmarks for send-message (run: python bench/bench_send_message.py [--jobs N] [--runs 3] [--batch 1]).

Prints, for conversations of 2, 50 and 1000 participants (``BENCH_SIZES=2,50`` to choose; sender +
recipients, nobody connected, so every recipient gets a notification job): SQL statements, PostgreSQL round
trips, AWS calls and X-Ray segment documents per job, the handler's and the floor's milliseconds per job and
their ratio (median of ``--runs``, with the min-max spread); then the import time of every handler module
against importing only the libraries it loads (``--imports-only`` for just that part).

Measured as production runs it: the tracer is on as in Lambda (Powertools sees ``LAMBDA_TASK_ROOT``, the
X-Ray SDK gets a trace header per invocation and streams every subsegment as UDP to a stand-in daemon in
another process); AWS is answered at the HTTP layer (bench/aws_stub.py), so botocore validates,
serialises, signs and parses as against AWS and wall times compare like with like. The floor
(:class:`_Floor`) does the handler's whole job by hand at every size, fan-out included, with the driver
setting the engine uses (COMMIT as a simple query). Handler and floor jobs alternate, so that both see the
same load: this machine is shared and noisy, and the spread says how much.
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, quiet_local_aws  # noqa: E402 - after the path
from infra.lambda_shapes import body_event  # noqa: E402 - after the path

SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "2,50,1000").split(","))


def handler_modules() -> list[str]:
    """Every function's handler module, from template.yaml (one reader of the topology)."""
    from infra.template import load_template

    return sorted({spec.module for spec in load_template().functions.values()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=60, help="jobs per size (fewer for 1000)")
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument(
        "--batch", type=int, default=1, help="records per invocation (1: every job pays a whole invocation)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per size (median and spread reported)")
    parser.add_argument("--no-tracing", action="store_true", help="tracer off (production runs it on)")
    parser.add_argument("--show-sql", action="store_true", help="print one job's statements per size")
    parser.add_argument("--profile", metavar="PREFIX", help="cProfile the first run of each size")
    parser.add_argument("--imports-only", action="store_true", help="skip the throughput part")
    parser.add_argument("--throughput-only", action="store_true", help="skip the import times")
    args = parser.parse_args()
    if not args.imports_only:
        print("== send-message throughput ==")
        throughput(
            args.jobs,
            args.runs,
            tracing=not args.no_tracing,
            show_sql=args.show_sql,
            profile=args.profile,
            batch=args.batch,
        )
    if args.throughput_only:
        return
    print(f"\n== cold-start import time (best of {args.import_runs}, fresh interpreter each) ==")
    for module in handler_modules():
        import_time(module, args.import_runs)


# --------------------------------------------------------------------------------------------- throughput


def throughput(
    jobs_per_size: int, runs: int, *, tracing: bool, show_sql: bool, profile: str | None, batch: int
) -> None:
    global _SINK
    _SINK = quiet_local_aws(tracing=tracing)
    try:
        with bench_database() as url:
            _throughput(url, jobs_per_size, runs, show_sql=show_sql, profile=profile, batch=batch)
    finally:
        if _SINK is not None:
            _SINK.close()


class _RoundTrips:
    """Round trips to PostgreSQL, counted at pg8000's protocol methods: a simple query is one; an unnamed
    extended-protocol statement is three (Parse+Sync, Describe+Sync, Bind+Execute+Sync: pg8000 waits for the
    answer of each); a named prepared statement's execution is one. Counts every connection in the process."""

    COST: ClassVar[dict[str, int]] = {
        "execute_simple": 1,
        "execute_unnamed": 3,
        "execute_named": 1,
        "prepare_statement": 1,
    }

    def __init__(self) -> None:
        import pg8000.core

        self.count = 0
        for name, cost in self.COST.items():
            original = getattr(pg8000.core.CoreConnection, name)
            setattr(pg8000.core.CoreConnection, name, self._counted(original, cost))

    def _counted(self, original: Any, cost: int) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += cost
            return original(*args, **kwargs)

        return counted


def _report_tracer(disabled: bool) -> None:
    if _SINK is not None and disabled:
        raise SystemExit("tracing asked for but the tracer is off: shared.observability was imported early")
    print("tracer: " + ("off" if disabled else "on (as in Lambda: segments emitted to a local X-Ray daemon)"))


def _throughput(
    database_url: str, jobs_per_size: int, runs: int, *, show_sql: bool, profile: str | None, batch: int
) -> None:
    import boto3
    from moto import mock_aws
    from sqlalchemy import event

    from bench.aws_stub import CALLS, stub_aws_http
    from infra.seed import add_conversation, add_users
    from infra.template import load_template, provision
    from shared.db.engine import get_engine
    from shared.db.migrations import upgrade

    os.environ["DATABASE_URL"] = database_url
    engine = get_engine()
    upgrade(engine)
    template = load_template()
    with mock_aws():  # only to resolve the function's environment (queue URLs) as Lambda would see it
        stack = provision(template, sqs_client=boto3.client("sqs", region_name="us-east-1"))
        spec = template.functions["SendMessageFunction"]
        env = stack.function_environment(spec)
    env.pop("DB_SECRET_ARN", None)
    os.environ.update(env)
    os.environ["WEBSOCKET_ENDPOINT"] = "https://bench.execute-api.us-east-1.amazonaws.com/prod"
    os.environ.update(
        {"POWERTOOLS_LOG_LEVEL": "ERROR", "LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "1"}
    )
    stub_aws_http()  # every client created from here on: handler's and floor's alike
    from shared.aws import reset_clients
    from shared.config import get_settings

    reset_clients()
    get_settings.cache_clear()  # read once per container: this "container" starts now
    from handlers.send_message import lambda_handler
    from shared.observability import tracer

    _report_tracer(tracer.disabled)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    trips = _RoundTrips()

    print(
        f"{'participants':>12} {'stmts/job':>9} {'RT/job':>7} {'aws/job':>8} {'segs/job':>8} "
        f"{'handler ms/job':>15} {'floor ms/job':>13} {'floor stmts':>11} {'ratio':>14}"
    )
    summary: dict[int, list[float]] = {}
    for size in SIZES:
        with engine.begin() as conn:
            members = add_users(conn, [f"m{i}" for i in range(size)])
            conversation = add_conversation(conn, members, kind="group")
        n = jobs_per_size if size < 1000 else max(10, jobs_per_size // 4)
        sender = members[0]
        lambda_handler(_event(conversation, sender, -1), _invocation())  # warm
        ratios, handler_ms, floor_ms = [], [], []
        for run_index in range(runs):
            events = [
                {
                    "Records": [
                        r
                        for i in range(k, min(n, k + batch))
                        for r in _event(conversation, sender, i)["Records"]
                    ]
                }
                for k in range(0, n, batch)
            ]
            statements.clear()
            CALLS.clear()
            trips.count = 0
            if _SINK:
                _SINK.count()  # from zero
            floor = _Floor(database_url, conversation, members)
            profiler = _profiler(profile, size, run_index)
            handler_s = raw_s = 0.0
            handler_calls = floor_calls = handler_trips = 0
            # handler and floor jobs alternate, so that both see the same load on this shared machine
            for i, e in enumerate(events):  # i: the invocation
                calls_before, trips_before = sum(CALLS.values()), trips.count
                if profiler is not None:
                    profiler.enable()
                started = time.perf_counter()
                response = lambda_handler(e, _invocation())
                handler_s += time.perf_counter() - started
                if profiler is not None:
                    profiler.disable()
                assert response == {"batchItemFailures": []}, response
                handler_calls += sum(CALLS.values()) - calls_before
                handler_trips += trips.count - trips_before
                if i == 0 and show_sql and run_index == 0:
                    print("\n".join(statements))
                calls_before = sum(CALLS.values())
                with _untraced():
                    started = time.perf_counter()
                    for record in range(len(e["Records"])):
                        floor.job(i * batch + record)
                    raw_s += time.perf_counter() - started
                floor_calls += sum(CALLS.values()) - calls_before
            floor.close()
            if profiler is not None:
                profiler.dump_stats(f"{profile}-{size}.prof")
            stmts, rts, calls = len(statements) / n, handler_trips / n, handler_calls / n
            segs = _SINK.count() / n if _SINK else 0.0
            assert floor_calls == handler_calls, (
                f"floor made {floor_calls} AWS calls, handler {handler_calls}"
            )
            raw_statements = floor.statements
            ratios.append(raw_s / handler_s)
            handler_ms.append(1000 * handler_s / n)
            floor_ms.append(1000 * raw_s / n)
        summary[size] = ratios
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if runs > 1 else ""
        print(
            f"{size:>12} {stmts:>9.1f} {rts:>7.1f} {calls:>8.1f} {segs:>8.1f} "
            f"{statistics.median(handler_ms):>15.2f} {statistics.median(floor_ms):>13.2f} "
            f"{raw_statements / n:>11.1f} {statistics.median(ratios):>5.2f} {spread:>8}"
        )
    print(
        f"{jobs_per_size} jobs per size ({max(10, jobs_per_size // 4)} at 1000), {batch} per invocation, "
        f"median of {runs} run(s), "
        "spread min-max.\n"
        "AWS is answered at the HTTP layer (botocore validates, serialises, signs, parses; no network), so\n"
        "wall times compare the same work. floor: the handler's SQL and AWS calls written by hand (pg8000,\n"
        "one botocore client). ratio: floor time / handler time (1.0 = no overhead). RT: PostgreSQL round\n"
        "trips. segs: X-Ray segment documents emitted."
    )


_SINK: Any = None


def _invocation() -> Any:
    """A new invocation's context; with tracing on, Lambda's per-invocation trace header too."""
    from infra.lambda_shapes import LocalLambdaContext

    if _SINK is not None:
        root = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
        os.environ["_X_AMZN_TRACE_ID"] = f"Root={root};Parent={uuid.uuid4().hex[:16]};Sampled=1"
    return LocalLambdaContext()


@contextmanager
def _untraced() -> Iterator[None]:
    """No X-Ray for the floor: the SDK's botocore patch is process-wide, the floor's client included."""
    if _SINK is None:
        yield
        return
    from aws_xray_sdk import global_sdk_config

    global_sdk_config.set_sdk_enabled(False)
    try:
        yield
    finally:
        global_sdk_config.set_sdk_enabled(True)


def _profiler(prefix: str | None, size: int, run_index: int) -> Any:
    if prefix is None or run_index != 0:
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


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


FLOOR_SQL = {
    "claim": "INSERT INTO job_inbox (job_id, job_type) VALUES (%s, 'send-message') ON CONFLICT (job_id) "
    "DO UPDATE SET job_id = EXCLUDED.job_id RETURNING job_inbox.effects_pending, xmax = 0",
    "conversation": "SELECT c.encryption_enabled, c.deleted_at, array_agg(p.user_id) FILTER (WHERE "
    "p.left_at IS NULL AND u.deleted_at IS NULL), true, (SELECT display_name FROM users WHERE id = %s) "
    "FROM conversations c LEFT OUTER JOIN conversation_participants p ON p.conversation_id = c.id "
    "LEFT OUTER JOIN users u ON u.id = p.user_id WHERE c.id = %s GROUP BY c.id",
    "message": "INSERT INTO messages (id, conversation_id, sender_id, seq, content, content_type, status, "
    "sent_at) VALUES (%s, %s, %s, (SELECT coalesce(max(seq), 0) + 1 FROM messages "
    "WHERE conversation_id = %s),"
    " %s, 'text', 'sent', now()) ON CONFLICT (id) DO UPDATE SET status = 'sent', sent_at = now() WHERE "
    "messages.status = 'sending' AND messages.conversation_id = excluded.conversation_id AND "
    "messages.sender_id = excluded.sender_id RETURNING id, seq, content, content_type, created_at",
    "deliveries": "INSERT INTO message_deliveries (message_id, recipient_id, status) "
    "SELECT %s, unnest(CAST(%s AS UUID[])), 'pending' ON CONFLICT DO NOTHING",
    "store": "UPDATE job_inbox SET effects_pending = %s, completed_at = %s WHERE job_id = %s",
    "lock": "SELECT effects_pending FROM job_inbox WHERE job_id = %s FOR UPDATE",
    "connections": "SELECT connection_id, user_id FROM ws_connections "
    "WHERE user_id = ANY (CAST(%s AS UUID[]))",
}


class _Floor:
    """The handler's whole job by hand: the same SQL over one pg8000 connection (same transactions), the
    same AWS calls (the indexing job; one notification job per offline recipient, SendMessageBatch by 10,
    bodies as the contract shapes them) over one botocore client without parameter validation; no
    framework, no tracing."""

    def __init__(self, database_url: str, conversation: uuid.UUID, members: list[uuid.UUID]) -> None:
        import boto3
        from botocore.config import Config

        from shared.db import driver
        from shared.db.engine import normalize_url

        url = normalize_url(database_url)
        self.conn = driver.connect(  # pg8000 with the engine's one-round-trip COMMIT: both can use it
            user=url.username or "postgres",
            password=url.password,
            host=url.host,
            port=url.port or 5432,
            database=url.database,
            unix_sock=url.query.get("unix_sock"),
        )
        self.sqs = boto3.session.Session().client("sqs", config=Config(parameter_validation=False))
        self.index_url = os.environ["INDEXING_QUEUE_URL"]
        self.notify_url = os.environ["NOTIFICATION_QUEUE_URL"]
        self.conversation, self.sender = conversation, members[0]
        self.statements = 0

    def close(self) -> None:
        self.conn.close()

    def _execute(self, cur: Any, name: str, args: tuple[Any, ...]) -> None:
        cur.execute(FLOOR_SQL[name], args)
        self.statements += 1

    def job(self, i: int) -> None:
        conversation, sender, cur = self.conversation, self.sender, self.conn.cursor()
        job_id, message_id = uuid.uuid4(), uuid.uuid4()
        now = datetime.now(UTC).isoformat()
        self._execute(cur, "claim", (job_id,))
        cur.fetchall()
        self._execute(cur, "conversation", (sender, conversation))
        participants = cur.fetchone()[2]
        self._execute(cur, "message", (message_id, conversation, sender, conversation, f"raw {i}"))
        seq, created_at = (row := cur.fetchone())[1], row[4]
        recipients = [p for p in participants if p != sender]
        self._execute(cur, "deliveries", (message_id, recipients))
        frame = {
            "type": "message.new",
            "message": {
                "id": str(message_id),
                "seq": seq,
                "content": f"raw {i}",
                "created_at": str(created_at),
            },
        }
        effects = [
            {"kind": "enqueue", "job": str(job_id)},
            {"kind": "message.new", "frames": [frame], "user_ids": [str(p) for p in participants]},
        ]
        self._execute(cur, "store", (json.dumps(effects), None, job_id))
        self.conn.commit()
        self._execute(cur, "lock", (job_id,))
        cur.fetchall()
        indexing = {
            "job_id": str(uuid.uuid5(job_id, "indexing")),
            "job_type": "indexing",
            "schema_version": 1,
            "created_at": now,
            "correlation_id": str(job_id),
            "data": {"message_id": str(message_id), "operation": "index"},
        }
        _floor_send(self.sqs, self.index_url, "indexing", [json.dumps(indexing)])
        self._execute(cur, "connections", (participants,))
        cur.fetchall()
        notification = {
            "category": "message",
            "title": "m0",
            "body": f"raw {i}",
            "conversation_id": str(conversation),
            "message_id": str(message_id),
            "data": {"conversation_id": str(conversation), "message_id": str(message_id)},
            "channels": None,
        }
        bodies = [
            json.dumps(
                {
                    "job_id": str(uuid.uuid5(job_id, f"notification/{user}")),
                    "job_type": "notification",
                    "schema_version": 1,
                    "created_at": now,
                    "correlation_id": str(job_id),
                    "data": {**notification, "user_id": str(user)},
                }
            )
            for user in recipients
        ]
        _floor_send(self.sqs, self.notify_url, "notification", bodies)
        self._execute(cur, "store", ("[]", datetime.now(UTC), job_id))
        self.conn.commit()


def _floor_send(sqs: Any, queue_url: str, job_type: str, bodies: list[str]) -> None:
    """SendMessageBatch calls of 10, one after another. The handler makes up to 8 at once
    (shared/services/queues.py), which pays against SQS's network latency; against the HTTP-layer stub
    (no latency) threads only add contention, so sequential calls are the faster floor (measured: at 1000
    participants a threaded floor took as long as the handler)."""
    attributes = {"JobType": {"DataType": "String", "StringValue": job_type}}
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(k), "MessageBody": body, "MessageAttributes": attributes}
            for k, body in enumerate(bodies[start : start + 10])
        ]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


# -------------------------------------------------------------------------------------------- import time

_PROBE = r"""
import sys, time, json
project = ("handlers", "shared", "infra")
mods = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
failed = []
t = time.perf_counter()
if mods is None:
    __import__(sys.argv[1])
else:
    for m in mods:
        try:
            __import__(m)
        except Exception as exc:  # a private or platform module that only loads through its parent: counted
            failed.append(f"{m}: {type(exc).__name__}")
elapsed = time.perf_counter() - t
loaded = [m for m in sys.modules if m.split(".")[0] not in project]
print(json.dumps({"seconds": elapsed, "modules": loaded, "failed": failed}))
"""


def import_time(module: str, runs: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POWERTOOLS_TRACE_DISABLED": "1"}
    handler_runs, library_runs, modules, unimportable = [], [], None, []
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
        unimportable = libs["failed"]
    h, lib = min(handler_runs), min(library_runs)
    print(
        f"{module:<34} handler {h * 1000:7.1f} ms   libraries alone {lib * 1000:7.1f} ms   "
        f"added {100 * (h - lib) / lib:5.1f}%   (median {statistics.median(handler_runs) * 1000:.1f} / "
        f"{statistics.median(library_runs) * 1000:.1f} ms)"
        + (f"   {len(unimportable)} library module(s) not importable alone" if unimportable else "")
    )


if __name__ == "__main__":
    main()
