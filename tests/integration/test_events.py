"""Every sample event under events/ runs through its handler (the same files `sam local invoke -e` takes)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"
ALICE = uuid.UUID("11111111-1111-4111-8111-111111111111")
BOB = uuid.UUID("22222222-2222-4222-8222-222222222222")
CONVERSATION = uuid.UUID("cccccccc-cccc-4ccc-8ccc-cccccccccccc")
# Events run in this order: confirmations refer to the messages the send-message event creates.
ORDER = ["send_message.json", "delivery_confirmation.json"]


def test_every_event_file_is_covered():
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(ORDER)


def test_every_event_runs_through_its_handler(function, template, db):
    from sqlalchemy import insert

    from shared.db.models import Conversation, ConversationParticipant, User

    with db.begin() as conn:
        conn.execute(
            insert(User), [{"id": ALICE, "display_name": "Alice"}, {"id": BOB, "display_name": "Bob"}]
        )
        conn.execute(insert(Conversation).values(id=CONVERSATION, kind="direct"))
        conn.execute(
            insert(ConversationParticipant),
            [{"conversation_id": CONVERSATION, "user_id": u} for u in (ALICE, BOB)],
        )
    handlers = {spec.module.rsplit(".", 1)[-1]: logical_id for logical_id, spec in template.functions.items()}
    for name in ORDER:
        event = json.loads((EVENTS / name).read_text())
        harness = function(handlers[name.removesuffix(".json")])
        response = harness.invoke(event)
        assert response == {"batchItemFailures": []}, name
        from sqlalchemy import func, select

        from shared.db.models import JobFailure, JobInbox

        with db.connect() as conn:
            assert conn.execute(select(func.count()).select_from(JobFailure)).scalar_one() == 0, name
            job_ids = {uuid.UUID(json.loads(r["body"])["job_id"]) for r in event["Records"]}
            done = conn.execute(select(JobInbox.job_id).where(JobInbox.job_id.in_(job_ids))).scalars().all()
            assert set(done) == job_ids, name
