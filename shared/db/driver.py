"""pg8000, as the engine connects with it: one round trip per COMMIT instead of three.

pg8000's own ``commit()`` sends COMMIT through the extended protocol and waits for the answer to each of
Parse, Describe and Execute; a statement without parameters can go as a simple query, one round trip. Two
commits per job make that four round trips per job. Imported only when the engine is built."""

from __future__ import annotations

from typing import Any

import pg8000.legacy


class Connection(pg8000.legacy.Connection):  # type: ignore[misc] # pg8000 ships no type information
    """pg8000's DBAPI connection (the one SQLAlchemy's pg8000 dialect drives) with COMMIT as a simple query;
    errors surface exactly as from pg8000's own commit (``DatabaseError`` with the server's fields)."""

    def commit(self) -> None:
        self.execute_simple("commit")


def connect(*args: Any, **kwargs: Any) -> Connection:
    """``pg8000.connect``, returning :class:`Connection`."""
    return Connection(*args, **kwargs)
