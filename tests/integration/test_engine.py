"""The engine: DATABASE_URL or a Secrets Manager secret (RDS JSON shape), created on first use."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from sqlalchemy import text

from shared.config import Settings
from shared.db.engine import build_engine, normalize_url
from shared.errors import ConfigurationError

pytestmark = pytest.mark.integration


def _secret_for(database_url: str) -> dict[str, object]:
    url = normalize_url(database_url)
    socket = url.query.get("unix_sock")
    host = str(socket).rsplit("/", 1)[0] if socket else url.host
    return {
        "username": url.username or "postgres",
        "password": url.password or "",
        "host": host,
        "port": int(str(socket).rsplit(".", 1)[1]) if socket else (url.port or 5432),
        "dbname": url.database or "postgres",
        "engine": "postgres",
    }


def test_engine_reads_credentials_from_a_secrets_manager_secret(aws, database_url, engine):
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name="db", SecretString=json.dumps(_secret_for(database_url)))["ARN"]
    from_secret = build_engine(Settings(db_secret_arn=arn))
    try:
        with from_secret.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        from_secret.dispose()


def test_a_secret_without_credentials_is_a_clear_configuration_error(aws):
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    arn = secrets.create_secret(Name="bad", SecretString=json.dumps({"host": "db"}))["ARN"]
    with pytest.raises(ConfigurationError, match="username, password, host"):
        build_engine(Settings(db_secret_arn=arn))


def test_no_database_settings_is_a_clear_configuration_error():
    with pytest.raises(ConfigurationError, match="DATABASE_URL or DB_SECRET_ARN"):
        build_engine(Settings(database_url=None, db_secret_arn=None))


def test_libpq_style_socket_urls_become_pg8000_unix_sockets():
    url = normalize_url("postgresql://postgres:@/postgres?host=/tmp/pg")
    assert url.drivername == "postgresql+pg8000"
    assert url.query["unix_sock"] == "/tmp/pg/.s.PGSQL.5432"


def test_nothing_connects_at_import():
    import subprocess
    import sys

    code = (
        "import socket\n"
        "def refuse(*a, **k): raise AssertionError('network at import')\n"
        "socket.socket.connect = refuse\n"
        "import handlers.send_message, handlers.delivery_confirmation\n"
        "print('ok')\n"
    )
    env = {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_connections_carry_the_statement_timeout_and_utc(database_url):
    fresh = build_engine(Settings(database_url=database_url))
    raw = fresh.raw_connection()  # a new connection: the connect hook has just run
    try:
        raw.rollback()  # what the pool does on every return must not undo the session settings
        cursor = raw.cursor()
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone() == ["10s"]
        cursor.execute("SHOW TimeZone")
        assert cursor.fetchone() == ["UTC"]
    finally:
        raw.close()
        fresh.dispose()


def test_a_connection_that_died_while_idle_is_replaced_before_use(database_url, engine, monkeypatch):
    """One ping per idle connection, not per checkout: a connection killed while idle longer than
    PING_AFTER_IDLE_SECONDS is discarded at checkout, and the caller gets a fresh one."""
    import shared.db.engine as engine_module

    pooled = build_engine(Settings(database_url=database_url, db_pool_size=1))
    try:
        with pooled.connect() as conn:
            first_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.begin() as other:  # another engine's connection kills the idle one
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        with pooled.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != first_pid
    finally:
        pooled.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(database_url, monkeypatch):
    engine = build_engine(Settings(database_url=database_url, db_pool_size=1))
    pings: list[object] = []
    ping = engine.dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted_ping)
    try:
        for _ in range(3):
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        assert pings == []
        import shared.db.engine as engine_module

        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_commit_is_one_simple_query_and_commits(database_url):
    from shared.db import driver

    engine = build_engine(Settings(database_url=database_url, db_pool_size=1))
    try:
        with engine.begin() as conn:
            assert isinstance(conn.connection.dbapi_connection, driver.Connection)
            conn.execute(text("CREATE TEMP TABLE committed_here (x int) ON COMMIT PRESERVE ROWS"))
            conn.execute(text("INSERT INTO committed_here VALUES (1)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM committed_here")).scalar_one() == 1
    finally:
        engine.dispose()
