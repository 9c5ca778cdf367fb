"""infra/embedded_postgres.py run on the machine's PostgreSQL server (what it does where pgserver does not
install, CPython 3.13 among them): skipped where the machine has none (pgserver then serves the tests)."""

from __future__ import annotations

from pathlib import Path

import pg8000.dbapi
import pytest

from infra.embedded_postgres import (
    BIN_ENV,
    NoServerBinaries,
    SystemPostgres,
    embedded_postgres,
    find_server_binaries,
    start_embedded_postgres,
)
from shared.db.engine import normalize_url


@pytest.fixture
def bindir(monkeypatch: pytest.MonkeyPatch) -> Path:
    try:
        found = find_server_binaries()
    except NoServerBinaries:
        pytest.skip("no PostgreSQL server on this machine")
    monkeypatch.setenv(BIN_ENV, str(found))  # the machine's server even where pgserver is installed
    return found


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    parsed = normalize_url(url)
    socket = parsed.query["unix_sock"]
    connection = pg8000.dbapi.connect(user="postgres", database="postgres", unix_sock=socket)
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        connection.commit()
        return rows
    finally:
        connection.close()


def test_a_throwaway_server_answers_on_a_socket_in_its_data_and_is_deleted_after(
    bindir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "pg"
    with embedded_postgres(data, keep=False) as url:
        assert url == f"postgresql://postgres:@/postgres?host={data}"
        assert query(url, "SHOW fsync") == [("off",)]  # nothing to keep: no durability paid for
        assert query(url, "SHOW listen_addresses") == [("",)]  # no TCP port
    assert not data.exists()


def test_a_kept_server_keeps_its_data_across_restarts_and_is_reused_while_running(
    bindir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "pg"
    server = start_embedded_postgres(data)
    assert isinstance(server, SystemPostgres)
    try:
        query(server.get_uri(), "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        again = start_embedded_postgres(data)  # a second handle: the running server, not a second one
        assert again.get_uri() == server.get_uri()
        assert query(server.get_uri(), "SHOW fsync") == [("on",)]
    finally:
        server.cleanup()
    assert not (data / "postmaster.pid").exists()
    with embedded_postgres(data) as url:
        assert query(url, "SELECT n FROM kept") == [(7,)]
    assert (data / "PG_VERSION").exists()


def test_data_of_another_postgresql_major_version_is_a_clear_error(bindir: Path, tmp_path: Path) -> None:
    data = tmp_path / "pg"
    data.mkdir()
    (data / "PG_VERSION").write_text("9\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"PostgreSQL 9 cluster .* --fresh"):
        start_embedded_postgres(data)


def test_without_server_binaries_the_error_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(BIN_ENV, str(tmp_path))
    with pytest.raises(SystemExit, match="apt-get install postgresql"):
        start_embedded_postgres(tmp_path / "pg")
