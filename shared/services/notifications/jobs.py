"""Notification jobs for many users from one template: validated once, copied per user.

A message to a 1000-member group enqueues up to 999 notification jobs that differ only in ``user_id`` and
``job_id``. Validating each three times (data, envelope, reloaded from the pending effect) and serialising
it twice took 84 ms for 999 users; here the first job is validated as any job is and every other one is a
copy of it with two UUIDs replaced (already UUIDs: nothing to validate), each body serialised once, when it
is sent: 34 ms (best of 7, same machine)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from shared.jobs import NOTIFICATION, Job, NotificationData


def notification_jobs(
    notification: Mapping[str, Any], user_ids: Sequence[uuid.UUID], parent: Job[Any]
) -> list[Job[NotificationData]]:
    """One notification job per user: ``notification`` is the job's ``data`` without ``user_id``; job ids
    are ``parent``'s deterministic child ids (a retried parent enqueues the same jobs, which the consumer's
    inbox de-duplicates) and the correlation id is ``parent``'s."""
    if not user_ids:
        return []
    first_user, *others = user_ids
    first = NOTIFICATION.new(
        NotificationData.model_validate({**notification, "user_id": first_user}),
        job_id=parent.child_job_id("notification", first_user),
        correlation_id=parent.follow_up_correlation_id,
    )
    jobs = [first]
    for user_id in others:
        data = first.data.model_copy(update={"user_id": user_id})
        jobs.append(
            first.model_copy(update={"job_id": parent.child_job_id("notification", user_id), "data": data})
        )
    return jobs
