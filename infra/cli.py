"""The ``switchboard`` command: ``demo``, ``schema``, ``db upgrade``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SCHEMA_DIR = Path("docs/schemas")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Switchboard: chat background jobs on AWS"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("demo", help="run the pipeline in-process on embedded PostgreSQL + moto and show it")

    schema = commands.add_parser("schema", help="write the job contracts as JSON Schema files")
    schema.add_argument(
        "--out", type=Path, default=DEFAULT_SCHEMA_DIR, help="directory (default: docs/schemas)"
    )
    schema.add_argument("--check", action="store_true", help="fail if the files on disk are out of date")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply migrations (DATABASE_URL or DB_SECRET_ARN)")
    upgrade.add_argument("--revision", default="head")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from infra.demo import run_demo

        run_demo()
        return 0
    if args.command == "schema":
        return _schema(args.out, check=args.check)
    if args.command == "db" and args.db_command == "upgrade":
        from shared.db.engine import get_engine
        from shared.db.migrate import upgrade as run_upgrade

        run_upgrade(get_engine(), args.revision)
        print(f"database at revision {args.revision}")
        return 0
    parser.error("unknown command")
    return 2


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


if __name__ == "__main__":
    sys.exit(main())
