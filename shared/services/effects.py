"""External effects of a job, performed after its transaction commits (DESIGN §4 step 2).

A service returns effects instead of calling AWS inside the transaction. The runner stores them with the
inbox row, performs them after commit and keeps whatever failed for the redelivery, so a retry redoes only
what was not done. Effects are plain data (JSON in ``job_inbox.effects_pending``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.orm import Session

from shared.jobs import JOB_MODELS, JobType, NotificationData, child_job_id, new_job
from shared.services.broadcast import broadcast
from shared.services.queues import send_jobs


class _Effect(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)


class OfflineNotification(BaseModel):
    """A notification for each of ``recipient_ids`` that no connection reached (``user_id`` is filled in)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    recipient_ids: list[uuid.UUID]
    notification: dict[str, Any]


class Broadcast(_Effect):
    """Post ``frames`` to every live connection of ``user_ids``; optionally notify the offline ones."""

    kind: Literal["broadcast"] = "broadcast"
    user_ids: list[uuid.UUID]
    frames: list[dict[str, Any]]
    notify_offline: OfflineNotification | None = None


class EnqueueJobs(_Effect):
    """Send jobs (already built, with deterministic ids) to their queue."""

    kind: Literal["enqueue"] = "enqueue"
    job_type: JobType
    jobs: list[dict[str, Any]]


Effect = Annotated[Broadcast | EnqueueJobs, Field(discriminator="kind")]
EffectsAdapter: TypeAdapter[list[Effect]] = TypeAdapter(list[Effect])


def perform_effects(
    effects: list[Effect], job: Any, session: Session
) -> tuple[list[Effect], Exception | None]:
    """Perform ``effects`` in order; returns those still pending (the failed one and everything after it,
    plus follow-ups) and the first error. A broadcast with ``notify_offline`` is followed by the notification
    jobs for the users it did not reach."""
    queue: list[Effect] = list(effects)
    while queue:
        effect = queue[0]
        try:
            follow_ups = _perform(effect, job, session)
        except Exception as exc:  # noqa: BLE001 - returned to the runner, which retries the job
            return queue, exc
        queue = follow_ups + queue[1:]
    return [], None


def _perform(effect: Effect, job: Any, session: Session) -> list[Effect]:
    if isinstance(effect, EnqueueJobs):
        model = JOB_MODELS[effect.job_type]
        send_jobs([model.model_validate(body) for body in effect.jobs])
        return []
    result = broadcast(session, effect.user_ids, effect.frames)
    offline = effect.notify_offline
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
