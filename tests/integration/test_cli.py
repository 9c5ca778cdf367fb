"""The `switchboard` command: schema files, database migrations, cleanup jobs for the local stack."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from infra.cli import main
from infra.dev_demo import stack_client
from shared.config import get_settings
from shared.db import engine as engine_module
from shared.db.engine import normalize_url
from shared.jobs import CLEANUP

pytestmark = pytest.mark.integration


def test_schema_writes_one_file_per_job_type_and_check_passes_on_them(tmp_path, capsys):
    assert main(["schema", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "send-message.schema.json" in names and "job.schema.json" in names and len(names) == 8
    assert json.loads((tmp_path / "cleanup.schema.json").read_text())["properties"]["job_type"]
    assert main(["schema", "--out", str(tmp_path), "--check"]) == 0


def test_schema_check_fails_on_stale_files(tmp_path, capsys):
    main(["schema", "--out", str(tmp_path)])
    (tmp_path / "indexing.schema.json").write_text("{}")
    assert main(["schema", "--out", str(tmp_path), "--check"]) == 1
    assert "indexing.schema.json" in capsys.readouterr().err


def test_db_upgrade_migrates_an_empty_database_to_head(engine, database_url, monkeypatch, capsys):
    name = f"cli_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalize_url(database_url).set(database=name)
    try:
        monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
        monkeypatch.delenv("DB_SECRET_ARN", raising=False)
        get_settings.cache_clear()
        engine_module.get_engine.cache_clear()
        assert main(["db", "upgrade"]) == 0
        assert "database at revision head" in capsys.readouterr().out
        fresh = create_engine(url)
        tables = set(inspect(fresh).get_table_names())
        assert {"users", "messages", "message_deliveries", "job_inbox", "job_failures"} <= tables
        fresh.dispose()
        assert main(["db", "upgrade"]) == 0  # idempotent
    finally:
        engine_module.get_engine().dispose()
        engine_module.get_engine.cache_clear()
        get_settings.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    """A moto server with the cleanup queue and the `dev.json` a running `switchboard dev` would write."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    info: dict[str, Any] = {"aws_endpoint_url": f"http://{host}:{port}", "region": "us-east-1"}
    sqs = stack_client(info, "sqs")
    url = sqs.create_queue(QueueName="switchboard-local-CleanupQueue")["QueueUrl"]
    info["queues"] = {"cleanup": {"url": url, "dlq_url": url}}
    (tmp_path / "dev.json").write_text(json.dumps(info))
    try:
        yield tmp_path, sqs
    finally:
        server.stop()


def test_cleanup_sends_a_valid_cleanup_job_to_the_stack_and_prints_its_id(dev_stack, capsys):
    data_dir, sqs = dev_stack
    assert main(["cleanup", "--data-dir", str(data_dir), "--task", "old-messages", "--dry-run"]) == 0
    assert main(["cleanup", "--data-dir", str(data_dir), "--hard-delete", "--retention-days", "30"]) == 0
    printed = capsys.readouterr().out.split()
    url = json.loads((data_dir / "dev.json").read_text())["queues"]["cleanup"]["url"]
    bodies = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    jobs = sorted((CLEANUP.parse(m["Body"]) for m in bodies), key=lambda j: printed.index(str(j.job_id)))
    assert [str(j.job_id) for j in jobs] == printed and len(printed) == 2
    assert [(j.job_type, j.data.task, j.data.dry_run, j.data.hard_delete) for j in jobs] == [
        ("cleanup", "old-messages", True, False),
        ("cleanup", "all", False, True),
    ]
    assert jobs[0].data.retention_days is None and jobs[1].data.retention_days == 30


def test_cleanup_refuses_an_invalid_job_and_a_stack_that_is_not_running(dev_stack, tmp_path, capsys):
    data_dir, _ = dev_stack
    assert main(["cleanup", "--data-dir", str(data_dir), "--retention-days", "0"]) == 2
    assert "not a valid cleanup job" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="start the stack first"):
        main(["cleanup", "--data-dir", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit):
        main(["cleanup", "--data-dir", str(data_dir), "--task", "everything"])
