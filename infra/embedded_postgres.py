"""An embedded PostgreSQL server (pgserver ships the binaries on PyPI: no Docker, no system install)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def start_embedded_postgres(data_dir: Path, *, keep: bool = True) -> Any:
    """Start (or reuse) a server whose data lives in ``data_dir``; ``.get_uri()`` is its URL and
    ``.cleanup()`` stops it (and deletes the data when ``keep`` is False). Runs as an unprivileged user when
    started as root."""
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit("embedded PostgreSQL needs the local extras: pip install -e '.[local]'") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir: without XDG_RUNTIME_DIR it uses /tmp, and warns
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        return pgserver.get_server(  # type: ignore[attr-defined]
            data_dir, cleanup_mode="stop" if keep else "delete"
        )


@contextmanager
def embedded_postgres(data_dir: Path, *, keep: bool = True) -> Iterator[str]:
    """:func:`start_embedded_postgres` as a context manager yielding the URL."""
    server = start_embedded_postgres(data_dir, keep=keep)
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
