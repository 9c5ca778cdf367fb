"""Wiring: the dependencies a function hands down to the runner and its services (cosmicpython's bootstrap).

Services never build their own sessions or AWS clients; they receive a :class:`Dependencies`. A function gets
the container's from :func:`dependencies` on each invocation (cheap: settings, engine and clients are cached
for the container's life, and nothing connects until first used). Tests and local tools swap the database
or the AWS clients with :func:`use`, the one seam for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.aws import AwsClients
from shared.config import Settings, get_settings
from shared.db.engine import get_engine
from shared.db.uow import UnitOfWork


@dataclass(frozen=True)
class Dependencies:
    settings: Settings
    sessions: sessionmaker[Session]
    aws: AwsClients

    def unit_of_work(self) -> UnitOfWork:
        """A new unit of work on this function's database."""
        return UnitOfWork(self.sessions)


@dataclass
class _Overrides:
    engine: Engine | None = None
    aws: AwsClients | None = None


_overrides = _Overrides()


def dependencies() -> Dependencies:
    """This container's dependencies, with whatever :func:`use` put in place."""
    return Dependencies(
        settings=get_settings(),
        sessions=_sessions(_overrides.engine or get_engine()),
        aws=_overrides.aws or AwsClients(),
    )


def use(*, engine: Engine | None = None, aws: AwsClients | None = None) -> None:
    """Run the functions of this process against ``engine`` and ``aws`` (None: the container's defaults)."""
    _overrides.engine = engine
    _overrides.aws = aws


@contextmanager
def using_aws(aws: AwsClients) -> Iterator[None]:
    """Run the block with ``aws`` as the AWS clients (the database in place stays), then put back what was."""
    previous = _overrides.aws
    _overrides.aws = aws
    try:
        yield
    finally:
        _overrides.aws = previous


@lru_cache(maxsize=4)
def _sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
