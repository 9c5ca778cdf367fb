"""The unit of work: one transaction, rolled back unless explicitly committed (cosmicpython's pattern)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from shared.errors import DatabaseUnavailable


class UnitOfWork:
    """``with UnitOfWork(sessions) as uow: ...; uow.commit()`` — leaving the block without ``commit()`` rolls
    back. ``sessions`` is the session factory the function was given.

    Connection-level database errors leave it as :class:`DatabaseUnavailable` (transient)."""

    session: Session

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self._sessions = sessions

    def __enter__(self) -> Self:
        self.session = self._sessions()
        return self

    def commit(self) -> None:
        try:
            self.session.commit()
        except (OperationalError, InterfaceError) as exc:
            raise DatabaseUnavailable("commit failed: database unavailable") from exc

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.session.rollback()
        finally:
            self.session.close()
        if isinstance(exc, OperationalError | InterfaceError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        ):
            raise DatabaseUnavailable("database unavailable") from exc
