"""External effects of a job, performed after its transaction commits (DESIGN §4 step 2).

A service returns effects instead of calling AWS inside the transaction. The runner stores them with the
inbox row (JSON in ``job_inbox.effects_pending``), performs them after commit, and keeps the ones that
failed for the redelivery, so a retry redoes only what was not done. Effects are independent of each other:
one failing does not stop the others (a notification channel that is throttled does not hold back email).

An effect is a pydantic model with a unique ``kind`` and a ``perform(job, session)`` method that returns
follow-up effects. Subclasses register themselves; services may define their own next to their logic."""

from __future__ import annotations

import uuid
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.orm import Session

from shared.jobs import JOB_MODELS, JobType, NotificationData, child_job_id, new_job
from shared.services.broadcast import broadcast
from shared.services.queues import send_jobs


class Effect(BaseModel):
    """Base of every post-commit effect."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    registry: ClassVar[dict[str, type[Effect]]] = {}

    kind: str

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.model_fields["kind"].default
        if not isinstance(kind, str):
            raise TypeError(f"{cls.__name__} needs a literal default for `kind`")
        if Effect.registry.get(kind, cls) is not cls:
            raise TypeError(f"effect kind {kind!r} is registered twice")
        Effect.registry[kind] = cls
        _adapter.cache_clear()

    def perform(self, job: Any, session: Session) -> list[Effect]:
        """Do the effect; return follow-up effects. Raise to leave it pending for the redelivery."""
        raise NotImplementedError


@cache
def _adapter() -> TypeAdapter[list[Any]]:
    union: Any = Union[tuple(Effect.registry.values())]  # noqa: UP007 - built from the registry at run time
    return TypeAdapter(list[Annotated[union, Field(discriminator="kind")]])


def dump_effects(effects: list[Effect]) -> list[dict[str, Any]]:
    return [effect.model_dump(mode="json") for effect in effects]


def load_effects(payload: list[dict[str, Any]]) -> list[Effect]:
    """Effects stored by :func:`dump_effects` (every kind's module must have been imported)."""
    return list(_adapter().validate_python(payload)) if payload else []


def perform_effects(
    effects: list[Effect], job: Any, session: Session
) -> tuple[list[Effect], Exception | None]:
    """Perform every effect (and the follow-ups of those that succeed); returns the effects still pending and
    the first error."""
    queue, pending, first_error = list(effects), [], None
    while queue:
        effect = queue.pop(0)
        try:
            queue.extend(effect.perform(job, session))
        except Exception as exc:  # noqa: BLE001 - kept pending and returned to the runner, which retries the job
            pending.append(effect)
            first_error = first_error or exc
    return pending, first_error


class OfflineNotification(BaseModel):
    """A notification for each of ``recipient_ids`` that no connection reached (``user_id`` is filled in)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    recipient_ids: list[uuid.UUID]
    notification: dict[str, Any]


class Broadcast(Effect):
    """Post ``frames`` to every live connection of ``user_ids``; optionally notify the ones not reached."""

    kind: Literal["broadcast"] = "broadcast"
    user_ids: list[uuid.UUID]
    frames: list[dict[str, Any]]
    notify_offline: OfflineNotification | None = None

    def perform(self, job: Any, session: Session) -> list[Effect]:
        result = broadcast(session, self.user_ids, self.frames)
        offline = self.notify_offline
        if offline is None:
            return []
        unreached = [user_id for user_id in offline.recipient_ids if user_id not in result.reached_user_ids]
        if not unreached:
            return []
        jobs = [
            new_job(
                JobType.NOTIFICATION,
                NotificationData.model_validate({**offline.notification, "user_id": user_id}),
                job_id=child_job_id(job.job_id, "notification", user_id),
                correlation_id=job.correlation_id or str(job.job_id),
            ).model_dump(mode="json")
            for user_id in unreached
        ]
        return [EnqueueJobs(job_type=JobType.NOTIFICATION, jobs=jobs)]


class EnqueueJobs(Effect):
    """Send jobs (already built, with deterministic ids) to their queue."""

    kind: Literal["enqueue"] = "enqueue"
    job_type: JobType
    jobs: list[dict[str, Any]] = Field(min_length=1)

    def perform(self, job: Any, session: Session) -> list[Effect]:
        model = JOB_MODELS[self.job_type]
        send_jobs([model.model_validate(body) for body in self.jobs])
        return []
