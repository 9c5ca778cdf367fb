"""Notification jobs for many users are built from one validated template: the same jobs, bodies and ids
as validating each one would give."""

from __future__ import annotations

import uuid

import pytest

from shared.jobs import NOTIFICATION, SEND_MESSAGE, NotificationData, SendMessageData
from shared.runtime.effects import EffectKinds
from shared.services.messages import EFFECT_KINDS
from shared.services.messages.service import NotifyOffline
from shared.services.notifications.jobs import notification_jobs

TEMPLATE = {
    "category": "message",
    "title": "Alice",
    "body": "Lunch at 12:30?",
    "conversation_id": str(uuid.uuid4()),
    "message_id": str(uuid.uuid4()),
    "data": {"conversation_id": "c", "message_id": "m"},
}


def parent_job():
    return SEND_MESSAGE.new(
        SendMessageData(
            message_id=uuid.uuid4(), conversation_id=uuid.uuid4(), sender_id=uuid.uuid4(), content="hi"
        ),
        correlation_id="corr-1",
    )


def test_every_job_equals_the_job_validated_on_its_own():
    parent, users = parent_job(), [uuid.uuid4() for _ in range(5)]
    jobs = notification_jobs(TEMPLATE, users, parent)
    for user_id, job in zip(users, jobs, strict=True):
        expected = NOTIFICATION.new(
            NotificationData.model_validate({**TEMPLATE, "user_id": user_id}),
            job_id=parent.child_job_id("notification", user_id),
            correlation_id="corr-1",
            created_at=job.created_at,
        )
        assert job.model_dump_json() == expected.model_dump_json()
        # and the body parses as the notification consumer will parse it
        assert NOTIFICATION.parse(job.model_dump_json()).data.user_id == user_id
    assert len({job.job_id for job in jobs}) == len(users)


def test_no_users_no_jobs():
    assert notification_jobs(TEMPLATE, [], parent_job()) == []


def test_an_invalid_template_fails_before_any_job_is_built():
    with pytest.raises(ValueError, match="title"):
        notification_jobs({**TEMPLATE, "title": ""}, [uuid.uuid4(), uuid.uuid4()], parent_job())


def test_a_pending_notify_offline_effect_survives_storage():
    effect = NotifyOffline(user_ids=[uuid.uuid4(), uuid.uuid4()], notification=TEMPLATE)
    kinds: EffectKinds = EFFECT_KINDS
    assert kinds.load(kinds.dump([effect])) == [effect]


def test_a_notify_offline_effect_needs_users():
    with pytest.raises(ValueError, match="user_ids"):
        NotifyOffline(user_ids=[], notification=TEMPLATE)
