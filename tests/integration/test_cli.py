"""The `switchboard` command: schema files and database migrations."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from infra.cli import main
from shared.config import get_settings
from shared.db import engine as engine_module
from shared.db.engine import normalize_url

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
