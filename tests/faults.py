"""Failure injection through the seams the code is given, never by patching its modules: SQLAlchemy's
``before_cursor_execute`` event on the engine the functions use, and botocore's ``before-call`` event on the
AWS clients they use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event


@contextmanager
def failing_statements(
    engine: Engine, error: Callable[[], Exception], *, when: Callable[[Any], bool]
) -> Iterator[None]:
    """Every statement on ``engine`` whose parameters satisfy ``when(parameters)`` raises ``error()``."""

    def before_cursor_execute(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if when(parameters):
            raise error()

    event.listen(engine, "before_cursor_execute", before_cursor_execute)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", before_cursor_execute)


def mentions(value: Any) -> Callable[[Any], bool]:
    """A ``when`` for :func:`failing_statements`: the statement's parameters include ``value``."""

    def check(parameters: Any) -> bool:
        values = parameters.values() if isinstance(parameters, dict) else parameters
        return any(p == value or (isinstance(p, list | tuple) and value in p) for p in values or ())

    return check


@contextmanager
def failing_calls(
    client: Any, operation: str, error: Callable[[], Exception], *, times: int | None = None
) -> Iterator[list[int]]:
    """Calls of ``operation`` (e.g. ``"PostToConnection"``) on ``client`` raise ``error()`` — the first
    ``times`` of them, or all. Yields a one-element list counting the failed calls."""
    failed = [0]
    event_name = f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}"

    def before_call(**kwargs: Any) -> None:
        if times is None or failed[0] < times:
            failed[0] += 1
            raise error()

    client.meta.events.register(event_name, before_call)
    try:
        yield failed
    finally:
        client.meta.events.unregister(event_name, before_call)
