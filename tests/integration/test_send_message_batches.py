"""Batch progress from send-message jobs (docs/contracts.md §5): a job counts once, whatever the path (sent or
dead-lettered) and however often it is delivered, and only when its sender is the batch's own sender."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from shared.db.models import JobFailure, MessageBatch
from shared.jobs import SEND_MESSAGE
from shared.services.messages import record_dead_letter
from tests.integration.test_statements import counting
from tests.world import World, job

pytestmark = pytest.mark.integration


@pytest.fixture
def send(function):
    return function("SendMessageFunction")


def _batch(db: Engine, sender_id: uuid.UUID, total: int) -> uuid.UUID:
    batch_id = uuid.uuid4()
    with db.begin() as conn:
        conn.execute(insert(MessageBatch).values(id=batch_id, sender_id=sender_id, total=total, queued=total))
    return batch_id


def _progress(world: World, batch_id: uuid.UUID) -> tuple[int, int, bool]:
    """(sent, failed, settled) derived from the batch's ledger: send-message writes only its own row, never
    the batch's (its counts are refreshed by the batch function, tests/integration/test_batch_message.py)."""
    from shared.services.batches import repository

    with Session(world.engine) as session:
        counts = repository.counts(session, batch_id)
    assert counts is not None
    return counts.sent, counts.failed, counts.sent + counts.failed >= counts.total


def _redeliver(send: Any, body: dict[str, Any], attempt: str) -> None:
    """The same body again under a fresh deduplication id (a redelivery, or a redrive from the DLQ)."""
    send.send(json.dumps(body), group_id=attempt)
    _, response = send.poll_once()
    assert response == {"batchItemFailures": []}


@pytest.mark.parametrize("path", ["sent", "dead-lettered"])
def test_a_job_whose_sender_is_not_the_batch_sender_never_moves_the_batch(send, world, db, path):
    # Given alice's batch
    alice, bob, carol, mallory = world.user(), world.user(), world.user(), world.user()
    batch_id = _batch(db, alice, total=2)
    if path == "sent":
        # bob sends, successfully, in his own conversation, naming alice's batch
        data = world.send_message_data(world.conversation([bob, carol]), bob, batch_id=str(batch_id))
    else:
        # mallory, no participant, sends into alice's conversation naming alice's batch: dead-lettered
        data = world.send_message_data(world.conversation([alice, bob]), mallory, batch_id=str(batch_id))
    send.send(job("send-message", data))
    _, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    assert len(world.rows(select(JobFailure))) == (1 if path == "dead-lettered" else 0)
    # Then alice's batch has not moved
    assert _progress(world, batch_id) == (0, 0, False)


def test_a_dead_lettered_job_delivered_again_counts_as_failed_once(send, world, db):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    batch_id = _batch(db, alice, total=2)
    body = job(
        "send-message",
        world.send_message_data(conversation, alice, reply_to_id=str(uuid.uuid4()), batch_id=str(batch_id)),
    )
    send.send(body)
    send.poll_once()
    _redeliver(send, body, "redelivery")
    _redeliver(send, body, "redrive")
    assert len(world.rows(select(JobFailure))) == 3
    assert _progress(world, batch_id) == (0, 1, False)


def test_a_dead_lettered_job_that_succeeds_when_redriven_counts_once_as_sent(send, world, db):
    # Given alice's job replying to a message that does not exist yet: dead-lettered, counted as failed
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    batch_id = _batch(db, alice, total=1)
    original = world.send_message_data(conversation, bob)
    reply = job(
        "send-message",
        world.send_message_data(
            conversation, alice, reply_to_id=original["message_id"], batch_id=str(batch_id)
        ),
    )
    send.send(reply)
    send.poll_once()
    assert _progress(world, batch_id) == (0, 1, True)
    # When the message it replies to arrives and the job is redriven
    send.send(job("send-message", original))
    send.poll_once()
    _redeliver(send, reply, "redrive")
    # Then the job is counted once, as sent
    assert world.message(reply["data"]["message_id"]).status == "sent"
    assert _progress(world, batch_id) == (1, 0, True)


def test_a_sent_job_is_not_counted_again_as_failed_if_it_is_dead_lettered_later(send, world, db):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    batch_id = _batch(db, alice, total=2)
    body = job("send-message", world.send_message_data(conversation, alice, batch_id=str(batch_id)))
    send.send(body)
    send.poll_once()
    assert _progress(world, batch_id) == (1, 0, False)
    # The runner's dead-letter hook for the same job (e.g. a permanent failure of a post-commit effect)
    with Session(db) as session, session.begin():
        record_dead_letter(SEND_MESSAGE.parse(json.dumps(body)), session)
    assert _progress(world, batch_id) == (1, 0, False)


def test_each_counted_job_leaves_one_row_naming_its_recipient_and_message(send, world, db):
    from shared.db.models import BatchJob

    alice, bob, carol = world.user(), world.user(), world.user()
    batch_id = _batch(db, alice, total=3)
    to_bob = job(
        "send-message",
        world.send_message_data(world.conversation([alice, bob]), alice, batch_id=str(batch_id)),
    )
    to_carol = job(
        "send-message",
        world.send_message_data(
            world.conversation([alice, carol]), alice, recipient_ids=[str(carol)], batch_id=str(batch_id)
        ),
    )
    unknown = job(
        "send-message",
        world.send_message_data(world.conversation([alice, bob]), alice, batch_id=str(batch_id)),
    )
    unknown["data"]["conversation_id"] = str(uuid.uuid4())
    send.send(to_bob, to_carol, unknown)
    send.drain()
    rows = {
        str(row.job_id): (row.recipient_id, str(row.message_id), row.status)
        for row in world.rows(select(BatchJob).where(BatchJob.batch_id == batch_id))
    }
    assert rows == {
        to_bob["job_id"]: (bob, to_bob["data"]["message_id"], "sent"),
        to_carol["job_id"]: (carol, to_carol["data"]["message_id"], "sent"),
        # the recipient of a job that failed before its conversation was found is not known
        unknown["job_id"]: (None, unknown["data"]["message_id"], "failed"),
    }
    assert _progress(world, batch_id) == (2, 1, True)


def test_statements_per_batched_send_do_not_grow_with_its_attachments(send, world, db):
    from shared.db.models import Attachment

    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    batch_id = _batch(db, alice, total=2)
    counts = []
    for how_many in (1, 32):
        attachment_ids = [uuid.uuid4() for _ in range(how_many)]
        with db.begin() as conn:
            conn.execute(
                insert(Attachment),
                [
                    {
                        "id": a,
                        "storage_key": f"k/{a}",
                        "content_type": "image/png",
                        "size_bytes": 1,
                        "uploaded_by": alice,
                    }
                    for a in attachment_ids
                ],
            )
        data = world.send_message_data(
            conversation, alice, attachment_ids=[str(a) for a in attachment_ids], batch_id=str(batch_id)
        )
        send.send(job("send-message", data))
        with counting(db) as statements:
            _, response = send.poll_once()
        assert response == {"batchItemFailures": []}
        counts.append(len(statements))
    assert counts[0] == counts[1]
    assert _progress(world, batch_id) == (2, 0, True)
