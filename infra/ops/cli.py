"""``switchboard ops ...``: health, failures, redrive, redrives, enqueue and the dashboard.

Output is Rich (tables and a progress bar; well kept, pure Python, no curses, and it degrades to plain text
when stdout is not a terminal). Exit codes follow the monitoring-plugin convention so a cron job or a
synthetic check can use ``ops health`` as is: 0 healthy / done, 1 degraded or partly failed, 2 unhealthy,
3 the API could not answer (unreachable, refused, 4xx).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infra.ops.client import ManagementClient, ManagementError, deployed_endpoint, local_endpoint

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
TERMINAL = frozenset({"completed", "cancelled", "canceled", "failed"})
CHUNK = 1000  # POST /jobs/{job_type} takes 1..1000 jobs (§8)


def add_parser(commands: Any) -> None:
    """Register ``ops`` and its subcommands on the top-level ``switchboard`` subparsers."""
    ops = commands.add_parser("ops", help="operate a stack: health, failures, redrive, enqueue, dashboard")
    sub = ops.add_subparsers(dest="ops_command", required=True)

    target = argparse.ArgumentParser(add_help=False)
    where = target.add_argument_group("which stack (default: the local stack)")
    where.add_argument("--stack", help="a deployed stack: its ManagementUrl output, your AWS credentials")
    where.add_argument("--url", help="the management API's URL, instead of reading the stack's outputs")
    where.add_argument("--region", help="for --stack/--url (default: from the URL or your AWS config)")
    where.add_argument("--local", action="store_true", help="the running `switchboard dev` (the default)")
    where.add_argument("--data-dir", type=Path, default=Path(".switchboard"), help="the local stack's dir")

    health = sub.add_parser("health", parents=[target], help="queues, DLQs and database; exit 0/1/2")
    health.add_argument("--json", action="store_true", help="print the API's JSON")

    failures = sub.add_parser("failures", parents=[target], help="failure groups, latest first")
    _add_filters(failures, redrive=False)
    failures.add_argument(
        "--include-redriven", action="store_true", help="also count failures redriven since"
    )
    failures.add_argument("--json", action="store_true", help="print the API's JSON")

    redrive = sub.add_parser("redrive", parents=[target], help="move dead-lettered jobs back (dry run first)")
    _add_filters(redrive, redrive=True)
    redrive.add_argument("--max-messages", type=_positive, help="move at most this many")
    redrive.add_argument("--max-per-second", type=_positive, help="rate limit of the move")
    redrive.add_argument("--yes", "-y", action="store_true", help="do not ask after the dry run")
    redrive.add_argument("--dry-run", action="store_true", help="only count what would move")
    redrive.add_argument("--no-wait", action="store_true", help="start it and return its id")

    redrives = sub.add_parser("redrives", parents=[target], help="list redrives, or show/cancel one")
    redrives.add_argument("redrive_id", nargs="?", help="show this one")
    redrives.add_argument("--cancel", action="store_true", help="cancel REDRIVE_ID")
    redrives.add_argument("--json", action="store_true", help="print the API's JSON")

    enqueue = sub.add_parser("enqueue", parents=[target], help="send jobs from a JSON or JSONL file")
    enqueue.add_argument("file", type=Path, help='a JSON array, {"jobs": [...]}, or JSON Lines; - for stdin')
    enqueue.add_argument("--job-type", help="send every job to this job type's queue (default: each job's)")

    dashboard = sub.add_parser("dashboard", parents=[target], help="a local web page (127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=0, help="default: any free port")
    dashboard.add_argument("--no-browser", action="store_true", help="print the URL, do not open it")


def _add_filters(parser: argparse.ArgumentParser, *, redrive: bool) -> None:
    parser.add_argument("--job-type", required=redrive, help="e.g. send-message")
    parser.add_argument("--error-class", help="e.g. UnknownEntity")
    if redrive:
        parser.add_argument("--reason", help="e.g. unknown-entity")
        parser.add_argument("--job-id", action="append", dest="job_ids", help="only these jobs (repeatable)")
    parser.add_argument("--since", help="RFC 3339 time, e.g. 2026-01-31T00:00:00Z")
    parser.add_argument("--until", help="RFC 3339 time")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    """Run one ``ops`` subcommand; operator-facing errors print one line on stderr and exit 3."""
    from rich.console import Console

    console, errors = Console(), Console(stderr=True)
    try:
        client = ManagementClient(_endpoint(args))
        if args.ops_command == "dashboard":
            from infra.ops.dashboard import serve

            return serve(client, port=args.port, open_browser=not args.no_browser, out=console.print)
        command = {
            "health": _health,
            "failures": _failures,
            "redrive": _redrive,
            "redrives": _redrives,
            "enqueue": _enqueue,
        }[args.ops_command]
        return command(client, args, console)
    except ManagementError as exc:
        errors.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        return UNKNOWN


def _endpoint(args: argparse.Namespace) -> Any:
    if args.local and (args.stack or args.url):
        raise ManagementError("--local and --stack/--url are exclusive")
    if args.stack or args.url:
        return deployed_endpoint(stack=args.stack, url=args.url, region=args.region)
    return local_endpoint(args.data_dir)


def age(seconds: Any) -> str:
    """``3725`` -> ``1h 2m``; blank for no message."""
    if seconds is None:
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def when(value: Any) -> str:
    """An RFC 3339 time as ``2026-11-29 09:00:00`` UTC (narrower than the API's form); as given if not one."""
    from datetime import UTC, datetime

    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return (parsed.astimezone(UTC) if parsed.tzinfo else parsed).strftime("%Y-%m-%d %H:%M:%S")


STATUS_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "bold red"}


def _health(client: ManagementClient, args: argparse.Namespace, console: Any) -> int:
    report = client.health()
    status = str(report.get("status", "unknown"))
    if args.json:
        console.print_json(data=report)
    else:
        console.print(f"status: [{STATUS_STYLE.get(status, 'white')}]{status}[/]")
        console.print(_database_line(report.get("database")))
        console.print(_queue_table(report.get("queues") or {}))
        for job_type, queue in sorted((report.get("queues") or {}).items()):
            for problem in queue.get("problems") or []:
                console.print(f"[yellow]{job_type}:[/] {problem}", highlight=False)
    return {"healthy": OK, "degraded": WARNING}.get(status, CRITICAL)


def _database_line(database: Any) -> str:
    if not isinstance(database, dict):
        return "database: ?"
    if "reachable" in database and not database["reachable"]:
        return "database: [bold red]unreachable[/]"
    if "at_head" in database:
        at_head = "at head" if database["at_head"] else f"[red]not at head {database.get('head')}[/]"
        return f"database: reachable, schema {database.get('revision')} ({at_head})"
    return "database: " + ", ".join(f"{k}={v}" for k, v in sorted(database.items()))


def _queue_table(queues: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="queues", title_justify="left")
    table.add_column("job type")
    for column in ("visible", "in flight", "delayed", "oldest", "DLQ", "DLQ oldest"):
        table.add_column(column, justify="right")
    table.add_column("consumer")
    table.add_column("status")
    for job_type, queue in sorted(queues.items()):
        dlq = queue.get("dlq") or {}
        dlq_visible = dlq.get("visible") or 0
        status = str(queue.get("status") or "")
        table.add_row(
            job_type,
            _count(queue.get("visible")),
            _count(queue.get("in_flight")),
            _count(queue.get("delayed")),
            age(queue.get("oldest_age_seconds")),
            f"[red]{dlq_visible}[/]" if dlq_visible else _count(dlq.get("visible")),
            age(dlq.get("oldest_age_seconds")),
            str(queue.get("event_source") or "-"),
            f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]" if status else "-",
        )
    return table


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def _failure_groups(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Groups, the most recently seen first (what an operator looks at first)."""
    return sorted(body.get("groups") or [], key=lambda g: str(g.get("last_seen") or ""), reverse=True)


def _failures(client: ManagementClient, args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    body = client.failures(
        job_type=args.job_type,
        error_class=args.error_class,
        since=args.since,
        until=args.until,
        include_redriven="true" if args.include_redriven else None,
    )
    if args.json:
        console.print_json(data=body)
        return OK
    groups = _failure_groups(body)
    table = Table(title="failures (latest first)", title_justify="left")
    for column in ("job type", "error class", "reason", "count", "first seen (UTC)", "last seen (UTC)"):
        table.add_column(column, justify="right" if column == "count" else "left", no_wrap=True)
    table.add_column("latest error", overflow="fold", ratio=1)
    table.add_column("sample jobs", no_wrap=True)
    for group in groups:
        samples = [str(s) for s in group.get("sample_job_ids") or []]
        table.add_row(
            str(group.get("job_type")),
            str(group.get("error_class")),
            str(group.get("reason")),
            str(group.get("count")),
            when(group.get("first_seen")),
            when(group.get("last_seen")),
            str(group.get("latest_detail") or ""),
            "\n".join(samples[:3]) + (f"\n(+{len(samples) - 3})" if len(samples) > 3 else ""),
        )
    if groups:
        console.print(table)
    else:
        console.print("no failures recorded for this filter")
    depths = body.get("dlq_depth") or {}
    if depths:
        console.print("DLQ depth: " + ", ".join(f"{k}={v}" for k, v in sorted(depths.items())))
    return OK


def redrive_request(args: argparse.Namespace, *, dry_run: bool) -> dict[str, Any]:
    """The ``POST /redrive`` body of §8 from the command line (no filter: the native whole-DLQ move)."""
    filters = {
        "error_class": args.error_class,
        "reason": args.reason,
        "since": args.since,
        "until": args.until,
        "job_ids": args.job_ids,
    }
    request: dict[str, Any] = {"job_type": args.job_type, "dry_run": dry_run}
    chosen = {k: v for k, v in filters.items() if v}
    if chosen:
        request["filter"] = chosen
    if args.max_messages:
        request["max_messages"] = args.max_messages
    if args.max_per_second:
        request["max_per_second"] = args.max_per_second
    return request


def _redrive(client: ManagementClient, args: argparse.Namespace, console: Any) -> int:
    dry = client.redrive(redrive_request(args, dry_run=True))
    matched = dry.get("matched")
    scope = "matching the filter" if "filter" in redrive_request(args, dry_run=True) else "in the DLQ"
    console.print(f"dry run ({dry.get('mode', '?')}): [bold]{matched}[/] {args.job_type} messages {scope}")
    if args.dry_run:
        return OK
    if matched == 0:
        console.print("nothing to redrive")
        return OK
    if not args.yes and not _confirm(f"redrive {matched} messages to the {args.job_type} queue?", console):
        console.print("not redriven")
        return WARNING
    started = client.redrive(redrive_request(args, dry_run=False))
    redrive_id = str(started["redrive_id"])
    console.print(f"redrive {redrive_id} started ({started.get('mode', '?')})")
    if args.no_wait:
        return OK
    try:
        final = _follow(client, started, matched if isinstance(matched, int) else None, console)
    except KeyboardInterrupt:
        console.print(
            f"stopped watching; the redrive goes on: `switchboard ops redrives {redrive_id}` "
            "(add --cancel to stop it)"
        )
        return WARNING
    console.print(
        f"redrive {redrive_id} {final.get('status')}: moved {final.get('moved', 0)}, kept "
        f"{final.get('kept', 0)}, failed {final.get('failed', 0)}"
        + (f" ({final['failure_reason']})" if final.get("failure_reason") else "")
    )
    done = str(final.get("status", "")).lower() == "completed" and not final.get("failed")
    return OK if done else WARNING


def _confirm(question: str, console: Any) -> bool:
    """Ask; no answer (stdin closed, as in a script without --yes) is a no."""
    from rich.prompt import Confirm

    try:
        return bool(Confirm.ask(question, console=console, default=False))
    except EOFError:
        console.print("no answer (stdin is closed): pass --yes to redrive without asking")
        return False


def _follow(
    client: ManagementClient, state: dict[str, Any], total: int | None, console: Any, interval: float = 0.5
) -> dict[str, Any]:
    """Poll ``GET /redrives/{id}`` under a progress bar until the redrive ends; its last state."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("redriving", total=total)
        for current in _states(client, state, interval):
            state = current
            total = _total(state) or total
            progress.update(
                task,
                completed=int(state.get("moved") or 0),
                total=total,
                description=f"redriving ({str(state.get('status', '?')).lower()})",
            )
    return state


def _states(client: ManagementClient, state: dict[str, Any], interval: float) -> Iterator[dict[str, Any]]:
    yield state
    while str(state.get("status", "")).lower() not in TERMINAL:
        time.sleep(interval)
        state = client.redrive_status(str(state["redrive_id"]))
        yield state


def _total(state: dict[str, Any]) -> int | None:
    """What this redrive will move, when the API says: ``to_move`` (native: ListMessageMoveTasks'
    ApproximateNumberOfMessagesToMove, counted when the task started), else ``matched`` (selective)."""
    for key in ("to_move", "matched"):
        if isinstance(state.get(key), int):
            return int(state[key])
    return None


def _redrives(client: ManagementClient, args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    if args.cancel and not args.redrive_id:
        raise ManagementError("--cancel needs the REDRIVE_ID to cancel")
    if args.redrive_id:
        show = client.cancel_redrive if args.cancel else client.redrive_status
        rows = [show(args.redrive_id)]
    else:
        rows = client.redrives()
    if args.json:
        console.print_json(data=rows if not args.redrive_id else rows[0])
        return OK
    table = Table(title="redrives", title_justify="left")
    keys = ("redrive_id", "job_type", "mode", "dry_run", "status", "matched", "moved", "kept", "failed")
    for key in keys:
        table.add_column(key.replace("_", " "), no_wrap=key == "redrive_id")
    table.add_column("by", overflow="fold")
    table.add_column("created (UTC)")
    for row in rows:
        cells = ["" if row.get(k) is None else str(row.get(k)) for k in keys]
        table.add_row(*cells, str(row.get("principal") or ""), when(row.get("created_at")))
    console.print(table if rows else "no redrives")
    return OK


def load_jobs(path: Path) -> list[dict[str, Any]]:
    """Jobs from a JSON array, a ``{"jobs": [...]}`` object, one job object, or JSON Lines."""
    text = sys.stdin.read() if str(path) == "-" else _read(path)
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
        jobs = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    jobs.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ManagementError(f"{path}, line {number}: not JSON ({exc.msg})") from exc
    if whole is not None:
        jobs = whole.get("jobs", [whole]) if isinstance(whole, dict) else whole
    if not isinstance(jobs, list) or not jobs:
        raise ManagementError(f'{path}: no jobs (expected a JSON array, {{"jobs": [...]}} or JSON Lines)')
    for index, job in enumerate(jobs, start=1):
        if not isinstance(job, dict):
            raise ManagementError(f"{path}: job {index} is not a JSON object")
    return jobs


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManagementError(f"cannot read {path}: {exc.strerror}") from exc


def _enqueue(client: ManagementClient, args: argparse.Namespace, console: Any) -> int:
    """Post the file's jobs per job type in chunks of 1000; one row per job, numbered as in the file."""
    from rich.table import Table

    jobs = load_jobs(args.file)
    by_type: dict[str, list[int]] = {}  # job type -> positions in the file (1-based)
    for position, job in enumerate(jobs, start=1):
        job_type = args.job_type or job.get("job_type")
        if not isinstance(job_type, str) or not job_type:
            raise ManagementError(f"job {position} has no job_type: give --job-type")
        by_type.setdefault(job_type, []).append(position)
    table = Table(title="enqueued", title_justify="left")
    for column in ("#", "job type", "job id", "status", "error"):
        table.add_column(column, overflow="fold")
    counts = {"queued": 0, "rejected": 0}
    for job_type, positions in by_type.items():
        for start in range(0, len(positions), CHUNK):
            chunk = positions[start : start + CHUNK]
            results = client.enqueue(job_type, [jobs[p - 1] for p in chunk])
            for offset, result in enumerate(results):
                status = str(result.get("status"))
                counts[status] = counts.get(status, 0) + 1
                style = "green" if status == "queued" else "red"
                table.add_row(
                    str(chunk[int(result.get("index", offset))]),
                    job_type,
                    str(result.get("job_id") or "-"),
                    f"[{style}]{status}[/]",
                    " ".join(str(result[k]) for k in ("code", "error") if result.get(k)),
                )
    console.print(table)
    console.print(f"{counts['queued']} queued, {counts['rejected']} rejected of {len(jobs)}")
    return OK if counts["queued"] == len(jobs) else WARNING
