"""The unit of work: one transaction, rolled back unless explicitly committed (cosmicpython's pattern), and
the one place database errors are classified for the job runner."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.orm import Session

from shared.errors import DatabaseUnavailable, InvalidData

# SQLSTATEs that mean "this job's data", not "the database": the same job would fail again. A unique
# violation (23505) is left out on purpose: here it is a concurrent writer's race, which a retry resolves.
_BAD_INPUT_STATES = frozenset({"23502", "23503", "23514"})


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of a database error (pg8000 puts the server's fields in ``args[0]``)."""
    orig = getattr(exc, "orig", None)
    fields = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], dict) else {}
    code = fields.get("C")
    return code if isinstance(code, str) else None


def classify(exc: BaseException) -> Exception | None:
    """The job error a database error stands for, or None to leave it as it is (transient by default).

    The new error's message names the SQLSTATE only: a driver's message may quote the row's values."""
    if isinstance(exc, PendingRollbackError):
        # A statement on a session whose connection already failed: the connection is gone.
        return DatabaseUnavailable("database unavailable (the connection failed earlier in this transaction)")
    if isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return DatabaseUnavailable(f"database unavailable (SQLSTATE {sqlstate(exc) or 'none'})")
    state = sqlstate(exc) if isinstance(exc, DBAPIError) else None
    if state is not None and (state.startswith("22") or state in _BAD_INPUT_STATES):
        return InvalidData(f"the database refused the job's data (SQLSTATE {state})")
    return None


class UnitOfWork:
    """``with UnitOfWork(sessions) as uow: ...; uow.commit()`` — leaving the block without ``commit()`` rolls
    back. ``sessions`` is the session factory the function was given.

    Database errors leave it classified (:func:`classify`): connection-level ones as
    :class:`DatabaseUnavailable` (transient), data errors as :class:`InvalidData` (permanent). The session
    is closed on the way out whatever happened, so a unit of work never outlives a failed connection."""

    session: Session

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self._sessions = sessions

    def __enter__(self) -> Self:
        self.session = self._sessions()
        return self

    def commit(self) -> None:
        try:
            self.session.commit()
        except DBAPIError as exc:
            classified = classify(exc)
            if classified is None:
                raise
            raise classified from exc

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.session.rollback()
        except DBAPIError:
            # The connection is already broken; closing the session below returns it to the pool invalidated.
            if exc is None:
                raise
        finally:
            self.session.close()
        classified = classify(exc) if exc is not None else None
        if classified is not None and classified is not exc:
            raise classified from exc
