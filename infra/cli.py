"""The ``switchboard`` command: ``demo``, ``dev``, ``cleanup``, ``schema``, ``db upgrade``, ``ops``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SCHEMA_DIR = Path("docs/schemas")
DEFAULT_OPENAPI_PATH = Path("docs/openapi.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Switchboard: chat background jobs on AWS"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="play a scripted conversation and show what clients receive")
    demo.add_argument(
        "--stack",
        action="store_true",
        help="through a running `switchboard dev` (real WebSocket clients) instead of in-process",
    )
    demo.add_argument("--data-dir", type=Path, default=Path(".switchboard"))

    dev = commands.add_parser(
        "dev", help="run everything locally: PostgreSQL, moto, pollers, WebSocket gateway"
    )
    dev.add_argument("--data-dir", type=Path, default=Path(".switchboard"), help="state kept across restarts")
    dev.add_argument("--fresh", action="store_true", help="start from an empty database")
    dev.add_argument("--demo", action="store_true", help="play the two-client demo once the stack is up")
    dev.add_argument(
        "--once", action="store_true", help="stop after startup (and the demo) instead of serving"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--aws-port", type=int, default=4566, help="moto server (0: any free port)")
    dev.add_argument("--websocket-port", type=int, default=3001, help="WebSocket gateway (0: any free port)")
    dev.add_argument("--management-port", type=int, default=3002, help="@connections API (0: any free port)")
    dev.add_argument(
        "--management-api-port", type=int, default=3003, help="management API, SigV4 (0: any free port)"
    )
    dev.add_argument("--log-level", default="INFO")

    cleanup = commands.add_parser(
        "cleanup", help="send a cleanup job to the running `switchboard dev` (docs/contracts.md §5)"
    )
    cleanup.add_argument(
        "--task",
        default="all",
        choices=["all", "old-messages", "deleted-conversations", "expired-attachments"],
    )
    cleanup.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    cleanup.add_argument(
        "--hard-delete", action="store_true", help="also purge messages soft-deleted past the grace period"
    )
    cleanup.add_argument("--retention-days", type=int, default=None, help="instead of CLEANUP_RETENTION_DAYS")
    cleanup.add_argument("--data-dir", type=Path, default=Path(".switchboard"))

    schema = commands.add_parser("schema", help="write the job contracts as JSON Schema files")
    schema.add_argument(
        "--out", type=Path, default=DEFAULT_SCHEMA_DIR, help="directory (default: docs/schemas)"
    )
    schema.add_argument("--check", action="store_true", help="fail if the files on disk are out of date")

    openapi = commands.add_parser("openapi", help="write the management API's OpenAPI document")
    openapi.add_argument("--out", type=Path, default=DEFAULT_OPENAPI_PATH, help="default: docs/openapi.json")
    openapi.add_argument("--check", action="store_true", help="fail if the file on disk is out of date")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply migrations (DATABASE_URL or DB_SECRET_ARN)")
    upgrade.add_argument("--revision", default="head")

    from infra.ops import cli as ops_cli

    ops_cli.add_parser(commands)

    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.stack:
            from infra.dev_demo import load_info, play

            play(load_info(args.data_dir))
            return 0
        from infra.demo import run_demo

        run_demo()
        return 0
    if args.command == "dev":
        from infra.dev import DevOptions, run_dev

        options = DevOptions(
            data_dir=args.data_dir,
            fresh=args.fresh,
            host=args.host,
            aws_port=args.aws_port,
            websocket_port=args.websocket_port,
            management_port=args.management_port,
            management_api_port=args.management_api_port,
            log_level=args.log_level,
        )
        return run_dev(options, demo=args.demo, once=args.once)
    if args.command == "cleanup":
        return _cleanup(args)
    if args.command == "ops":
        return ops_cli.run(args)
    if args.command == "schema":
        return _schema(args.out, check=args.check)
    if args.command == "openapi":
        return _openapi(args.out, check=args.check)
    if args.command == "db" and args.db_command == "upgrade":
        from shared.db.engine import get_engine
        from shared.db.migrations import upgrade as run_upgrade

        run_upgrade(get_engine(), args.revision)
        print(f"database at revision {args.revision}")
        return 0
    parser.error("unknown command")
    return 2


def _cleanup(args: argparse.Namespace) -> int:
    """Send a cleanup job to the local stack's CleanupQueue (as the daily schedule does); print its id."""
    from pydantic import ValidationError

    from infra.dev_demo import load_info, send_job

    data: dict[str, object] = {"task": args.task, "dry_run": args.dry_run, "hard_delete": args.hard_delete}
    if args.retention_days is not None:
        data["retention_days"] = args.retention_days
    try:
        job_id = send_job(load_info(args.data_dir), "cleanup", data, correlation_id="switchboard-cli")
    except ValidationError as exc:
        print(f"not a valid cleanup job: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    print(job_id)
    return 0


def _schema(directory: Path, *, check: bool) -> int:
    import json

    from shared.jobs import json_schemas, write_schemas

    if check:
        stale = [
            name
            for name, schema in json_schemas().items()
            if not (directory / name).exists()
            or json.loads((directory / name).read_text(encoding="utf-8")) != schema
        ]
        if stale:
            print(
                f"out of date under {directory}: {', '.join(sorted(stale))}; run: switchboard schema",
                file=sys.stderr,
            )
            return 1
        print(f"{directory}: up to date")
        return 0
    for path in write_schemas(directory):
        print(path)
    return 0


def _openapi(path: Path, *, check: bool) -> int:
    from shared.services.management.api import openapi_document, write_openapi

    if check:
        if not path.exists() or path.read_text(encoding="utf-8") != openapi_document():
            print(f"{path} is out of date; run: switchboard openapi", file=sys.stderr)
            return 1
        print(f"{path}: up to date")
        return 0
    print(write_openapi(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
