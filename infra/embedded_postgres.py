"""An embedded PostgreSQL server (pgserver ships the binaries on PyPI: no Docker, no system install)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def embedded_postgres(data_dir: Path, *, keep: bool = True) -> Iterator[str]:
    """Start (or reuse) a server whose data lives in ``data_dir``; yields its URL. ``keep=False`` deletes the
    data when done. pgserver runs as an unprivileged user when started as root."""
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit("embedded PostgreSQL needs the local extras: pip install -e '.[local]'") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(  # type: ignore[attr-defined]
        data_dir, cleanup_mode="stop" if keep else "delete"
    )
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
