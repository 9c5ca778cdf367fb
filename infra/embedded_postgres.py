"""An embedded PostgreSQL server: no Docker, no database to set up.

Two ways to get the server binaries, with the same behaviour (data in the given directory, a Unix socket and
no TCP port, trust authentication, user and database ``postgres``; started as root, the server runs as an
unprivileged user):

- PyPI's ``pgserver``, which ships them (the ``local`` extras install it where it has wheels: CPython 3.11
  and 3.12);
- otherwise the PostgreSQL server installed on the machine (``initdb``, ``pg_ctl``, ``postgres``): the
  directory named by ``SWITCHBOARD_POSTGRES_BIN``, else the one holding ``pg_ctl`` on PATH, else the newest
  ``/usr/lib/postgresql/<major>/bin`` (Debian and Ubuntu: ``apt-get install postgresql``). Setting
  ``SWITCHBOARD_POSTGRES_BIN`` uses those binaries even where pgserver is installed.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

BIN_ENV = "SWITCHBOARD_POSTGRES_BIN"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
# as root, the server runs as this user (Debian's package creates it), or as pgserver's (created if need be)
SERVER_USERS = ("postgres", "pgserver")
SOCKET_NAME = ".s.PGSQL.5432"  # the URL names no port: libpq's and pg8000's default
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS
HOW_TO_GET_ONE = (
    "pgserver (CPython 3.11 or 3.12: pip install -e '.[local]'), or the machine's PostgreSQL server "
    f"(apt-get install postgresql; or {BIN_ENV}=<the directory of its initdb and pg_ctl>); or set "
    "DATABASE_URL to a database to use instead"
)


class EmbeddedServer(Protocol):
    def get_uri(self) -> str: ...

    def cleanup(self) -> None: ...


class NoServerBinaries(RuntimeError):
    pass


def start_embedded_postgres(data_dir: Path, *, keep: bool = True) -> EmbeddedServer:
    """Start (or reuse) a server whose data lives in ``data_dir``; ``.get_uri()`` is its URL and
    ``.cleanup()`` stops it (and deletes the data when ``keep`` is False)."""
    if not os.environ.get(BIN_ENV):
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime dir: without XDG_RUNTIME_DIR it uses /tmp, and warns
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            try:
                pgserver = importlib.import_module("pgserver")
            except ImportError:
                pass
            else:
                data_dir.mkdir(parents=True, exist_ok=True)
                cleanup_mode = "stop" if keep else "delete"
                server: EmbeddedServer = pgserver.get_server(data_dir, cleanup_mode=cleanup_mode)
                return server
    try:
        bindir = find_server_binaries()
    except NoServerBinaries as exc:
        raise SystemExit(str(exc)) from exc
    return SystemPostgres(bindir, data_dir, keep=keep)


@contextmanager
def embedded_postgres(data_dir: Path, *, keep: bool = True) -> Iterator[str]:
    """:func:`start_embedded_postgres` as a context manager yielding the URL."""
    server = start_embedded_postgres(data_dir, keep=keep)
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


# --- the machine's PostgreSQL -------------------------------------------------------------------------------


def find_server_binaries() -> Path:
    """The directory of the machine's ``initdb``, ``pg_ctl`` and ``postgres`` (see the module docstring)."""
    named = os.environ.get(BIN_ENV)
    if named:
        if not _has_server_binaries(Path(named)):
            missing = ", ".join(SERVER_BINARIES)
            raise NoServerBinaries(f"{BIN_ENV}={named} holds no {missing}: {HOW_TO_GET_ONE}")
        return Path(named)
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major_of_dir, reverse=True)
    candidates += versions
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    raise NoServerBinaries(f"embedded PostgreSQL needs server binaries: {HOW_TO_GET_ONE}")


class SystemPostgres:
    """A server run from the machine's binaries on ``data_dir`` (initialised on first use); reused if one is
    already running there."""

    def __init__(self, bindir: Path, data_dir: Path, *, keep: bool = True) -> None:
        self.bindir = bindir
        self.data_dir = data_dir.expanduser().resolve()
        self.keep = keep
        self._user = _server_user()
        self._own_socket_dir: Path | None = None
        self._stopped = False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _let_user_reach(self.data_dir, self._user)
        self._init_data_dir()
        self.socket_dir = self._running_socket_dir() or self._start()
        atexit.register(self.cleanup)

    def get_uri(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.socket_dir}"

    def cleanup(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.cleanup)
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop")
        if self._own_socket_dir is not None:
            shutil.rmtree(self._own_socket_dir, ignore_errors=True)
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # --- parts -------------------------------------------------------------------------------------------

    def _init_data_dir(self) -> None:
        version_file = self.data_dir / "PG_VERSION"
        binaries = self._major_version()
        if version_file.exists():
            data = version_file.read_text(encoding="utf-8").strip()
            if data != binaries:
                raise SystemExit(
                    f"{self.data_dir} holds a PostgreSQL {data} cluster and the server here is PostgreSQL "
                    f"{binaries} ({self.bindir}): start with empty data (switchboard dev --fresh), or point "
                    f"{BIN_ENV} at PostgreSQL {data}'s binaries"
                )
            return
        if any(self.data_dir.iterdir()):
            raise SystemExit(f"{self.data_dir} is neither empty nor a PostgreSQL data directory")
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8")

    def _running_socket_dir(self) -> Path | None:
        """The socket directory of a server already running on the data (postmaster.pid, line 5)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
            pid = int(lines[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4] else None
        return socket_dir if socket_dir is not None and (socket_dir / SOCKET_NAME).exists() else None

    def _start(self) -> Path:
        socket_dir = self.data_dir
        if len(str(socket_dir / SOCKET_NAME)) > MAX_SOCKET_PATH:
            socket_dir = self._own_socket_dir = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
            if self._user is not None:
                os.chown(socket_dir, self._user.pw_uid, self._user.pw_gid)
        options = f"-h '' -k {shlex.quote(str(socket_dir))}"
        if not self.keep:  # throwaway data (tests): no durability needed
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = self.data_dir / "log"
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-l", str(log), "-o", options, "start")
        except subprocess.CalledProcessError as exc:
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start on {self.data_dir}:\n{tail}") from exc
        return socket_dir

    def _major_version(self) -> str:
        out = subprocess.run(  # noqa: S603 - the server binaries found above, fixed arguments
            [str(self.bindir / "postgres"), "--version"], check=True, capture_output=True, text=True
        ).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", out)
        if not match:
            raise RuntimeError(f"{self.bindir / 'postgres'} --version: {out!r}")
        return match.group(1)

    def _run(self, program: str, *args: str) -> None:
        """Run a server program (as the server's user when we are root). Output goes to a file, not a pipe:
        ``pg_ctl start`` leaves the server holding its stdout."""
        user: dict[str, Any] = {}
        if self._user is not None:
            user = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as output:
            try:
                subprocess.run(  # noqa: S603 - a server binary found above, our own arguments
                    [str(self.bindir / program), *args],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    **user,
                )
            except subprocess.CalledProcessError as exc:
                output.seek(0)
                exc.add_note(output.read()[-2000:])
                raise


def _has_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in SERVER_BINARIES)


def _major_of_dir(bindir: Path) -> tuple[int, str]:
    name = bindir.parent.name
    return (int(name), name) if name.isdigit() else (0, name)


def _server_user() -> pwd.struct_passwd | None:
    """None when not root (the server runs as us); as root, an unprivileged user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run([useradd, "--system", SERVER_USERS[-1]], check=True, capture_output=True)  # noqa: S603
    return pwd.getpwnam(SERVER_USERS[-1])


def _let_user_reach(data_dir: Path, user: pwd.struct_passwd) -> None:
    """Give ``user`` the data directory, and the right to traverse (not list) the directories above it."""
    for parent in data_dir.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
    if data_dir.stat().st_uid != user.pw_uid:
        for directory, _, files in os.walk(data_dir):
            os.chown(directory, user.pw_uid, user.pw_gid)
            for name in files:
                os.chown(Path(directory, name), user.pw_uid, user.pw_gid)
    data_dir.chmod(0o700)
