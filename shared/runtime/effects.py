"""External effects of a job, performed after its transaction commits (docs/contracts.md §3).

A service returns effects instead of calling AWS inside the transaction. The runner stores them with the
inbox row (JSON in ``job_inbox.effects_pending``), performs them after commit, and keeps the ones that
failed for the redelivery, so a retry redoes only what was not done. Effects are independent of each other:
one failing does not stop the others (a notification channel that is throttled does not hold back email).

An effect is a pydantic model with a unique ``kind`` and a ``perform(job, session, deps)`` method that returns
follow-up effects. The kinds a consumer may store are registered explicitly with :class:`EffectKinds`."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from shared.jobs import Job

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies


class Effect(BaseModel):
    """Base of every post-commit effect; a subclass sets ``kind`` to a unique literal default."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    kind: str


    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        """Do the effect; return follow-up effects. Raise to leave it pending for the redelivery."""
        raise NotImplementedError


class EffectKinds:
    """The effect kinds one consumer may store and reload: every effect its service returns, and the
    follow-ups those return."""

    def __init__(self, *kinds: type[Effect]) -> None:
        self._by_kind: dict[str, type[Effect]] = {}
        for kind_class in kinds:
            kind = kind_class.model_fields["kind"].default
            if not isinstance(kind, str):
                raise TypeError(f"{kind_class.__name__} needs a literal default for `kind`")
            if self._by_kind.setdefault(kind, kind_class) is not kind_class:
                raise TypeError(f"effect kind {kind!r} is registered twice")

    @cached_property
    def _adapter(self) -> TypeAdapter[list[Any]]:
        union: Any = Union[tuple(self._by_kind.values())]  # noqa: UP007 - built from the registered kinds
        return TypeAdapter(list[Annotated[union, Field(discriminator="kind")]])

    def dump(self, effects: list[Effect]) -> list[dict[str, Any]]:
        """Effects as JSON for ``job_inbox.effects_pending``; an unregistered kind is a wiring bug."""
        for effect in effects:
            if self._by_kind.get(effect.kind) is not type(effect):
                raise TypeError(f"effect kind {effect.kind!r} is not registered with this consumer")
        return [effect.model_dump(mode="json") for effect in effects]

    def load(self, payload: list[dict[str, Any]]) -> list[Effect]:
        """Effects stored by :meth:`dump`."""
        return list(self._adapter.validate_python(payload)) if payload else []


def perform_effects(
    effects: list[Effect], job: Job[Any], session: Session, deps: Dependencies
) -> tuple[list[Effect], Exception | None]:
    """Perform every effect (and the follow-ups of those that succeed); returns the effects still pending and
    the first error."""
    queue, pending, first_error = list(effects), [], None
    while queue:
        effect = queue.pop(0)
        try:
            queue.extend(effect.perform(job, session, deps))
        except SQLAlchemyError:
            # The session is unusable now: no further effect may run on it, and nothing can be recorded. The
            # unit of work rolls back and classifies the error; every effect stays pending for the retry.
            raise
        except Exception as exc:  # noqa: BLE001 - kept pending and returned to the runner, which retries the job
            pending.append(effect)
            first_error = first_error or exc
    return pending, first_error
