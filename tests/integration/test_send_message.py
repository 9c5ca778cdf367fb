"""send-message through SendMessageFunction: real PostgreSQL, moto SQS and API Gateway management API."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select

from shared.db.models import JobFailure, JobInbox, Message, MessageBatch
from tests.conftest import queue_messages, ws_frames
from tests.world import job

pytestmark = pytest.mark.integration


@pytest.fixture
def send(function):
    return function("SendMessageFunction")


def test_message_is_persisted_sent_with_next_seq_and_one_pending_delivery_per_recipient(send, world):
    # Given a group of three
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    conversation = world.conversation([alice, bob, carol])
    first, second = (
        world.send_message_data(conversation, alice),
        world.send_message_data(conversation, bob, "hi"),
    )
    # When two messages are sent
    send.send(job("send-message", first), job("send-message", second))
    _, response = send.poll_once()
    # Then both are sent, numbered 1 and 2, with a pending delivery for each recipient
    assert response == {"batchItemFailures": []}
    messages = world.messages(conversation)
    assert [(str(m.id), m.seq, m.status) for m in messages] == [
        (first["message_id"], 1, "sent"),
        (second["message_id"], 2, "sent"),
    ]
    assert messages[0].sent_at is not None
    deliveries = world.deliveries(first["message_id"])
    assert set(deliveries) == {bob, carol}
    assert {d.status for d in deliveries.values()} == {"pending"}


def test_indexing_job_is_enqueued_for_the_message(send, world, aws):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    data = world.send_message_data(conversation, alice)
    send.send(job("send-message", data))
    send.poll_once()
    bodies = [json.loads(m["Body"]) for m in queue_messages(aws, "IndexingQueue")]
    assert [(b["job_type"], b["data"]) for b in bodies] == [
        ("indexing", {"message_id": data["message_id"], "operation": "index"})
    ]


def test_message_new_reaches_every_connection_of_every_participant_and_offline_recipients_get_notified(
    send, world, aws
):
    # Given alice on two devices, bob online, carol offline
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    conversation = world.conversation([alice, bob, carol])
    alice_phone, alice_laptop, bob_phone = world.connect(alice), world.connect(alice), world.connect(bob)
    data = world.send_message_data(conversation, alice, "dinner at 8?")
    # When alice sends
    send.send(job("send-message", data))
    send.poll_once()
    # Then every live connection gets message.new (the sender's other devices too)
    for connection in (alice_phone, alice_laptop, bob_phone):
        frames = ws_frames(connection)
        assert [f["type"] for f in frames] == ["message.new"]
        message = frames[0]["message"]
        assert message["id"] == data["message_id"]
        assert message["content"] == "dinner at 8?"
        assert message["seq"] == 1
        assert set(message) >= {
            "id",
            "conversation_id",
            "sender_id",
            "seq",
            "content",
            "content_type",
            "created_at",
        }
    # And only carol, with no live connection, gets a notification job
    notifications = [json.loads(m["Body"]) for m in queue_messages(aws, "NotificationQueue")]
    assert [n["data"]["user_id"] for n in notifications] == [str(carol)]
    assert notifications[0]["data"]["title"] == "alice"
    assert notifications[0]["data"]["message_id"] == data["message_id"]


def test_same_job_twice_commits_once(send, world, db):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    body = job("send-message", world.send_message_data(conversation, alice))
    send.send(body)
    send.poll_once()
    # Redelivered after the first delivery was processed (FIFO dedup would drop it inside 5 minutes: use a
    # fresh dedup id by sending it under another group to simulate a redelivery past the window).
    send.send(json.dumps(body), group_id="redelivery")
    _, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    assert len(world.messages(conversation)) == 1
    assert world.rows(select(func.count()).select_from(JobInbox))[0][0] == 1


def test_same_message_id_under_two_job_ids_is_one_message(send, world):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    data = world.send_message_data(conversation, alice)
    send.send(job("send-message", data), job("send-message", data))
    _, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    messages = world.messages(conversation)
    assert len(messages) == 1 and messages[0].seq == 1
    assert set(world.deliveries(data["message_id"])) == {bob}


def test_message_pre_inserted_as_sending_by_the_chat_api_becomes_sent(send, world, db):
    from sqlalchemy import insert

    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    data = world.send_message_data(conversation, alice)
    with db.begin() as conn:
        conn.execute(
            insert(Message).values(
                id=uuid.UUID(data["message_id"]),
                conversation_id=conversation,
                sender_id=alice,
                seq=1,
                content="hello",
                status="sending",
            )
        )
    send.send(job("send-message", data))
    send.poll_once()
    message = world.message(data["message_id"])
    assert (message.status, message.seq) == ("sent", 1)
    assert set(world.deliveries(data["message_id"])) == {bob}


def test_message_id_reused_in_another_conversation_is_a_permanent_conflict(send, world, aws):
    alice, bob = world.user(), world.user()
    first, second = world.conversation([alice, bob]), world.conversation([alice, bob])
    data = world.send_message_data(first, alice)
    send.send(job("send-message", data))
    send.poll_once()
    send.send(job("send-message", {**data, "conversation_id": str(second)}))
    _, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    failures = world.rows(select(JobFailure.reason))
    assert [f.reason for f in failures] == ["conflict"]
    assert len(queue_messages(aws, "SendMessageDLQ")) == 1


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("sender-not-participant", "not-a-participant"),
        ("sender-left", "not-a-participant"),
        ("unknown-conversation", "unknown-entity"),
        ("recipient-not-participant", "not-a-participant"),
        ("unknown-reply-to", "unknown-entity"),
        ("unknown-attachment", "unknown-entity"),
    ],
)
def test_rejected_send_is_dead_lettered_with_its_reason_and_writes_nothing(send, world, aws, case, reason):
    alice, bob, mallory = world.user("alice"), world.user("bob"), world.user("mallory")
    conversation = world.conversation([alice, bob])
    data = world.send_message_data(conversation, alice)
    if case == "sender-not-participant":
        data["sender_id"] = str(mallory)
    elif case == "sender-left":
        world.leave(conversation, alice)
    elif case == "unknown-conversation":
        data["conversation_id"] = str(uuid.uuid4())
    elif case == "recipient-not-participant":
        data["recipient_ids"] = [str(bob), str(mallory)]
    elif case == "unknown-reply-to":
        data["reply_to_id"] = str(uuid.uuid4())
    elif case == "unknown-attachment":
        data["attachment_ids"] = [str(uuid.uuid4())]
    body = job("send-message", data)
    send.send(body)
    _, response = send.poll_once()
    # Then nothing is retried, nothing is written, the body is in the DLQ with its reason
    assert response == {"batchItemFailures": []}
    assert world.messages(conversation) == []
    [dead] = queue_messages(aws, "SendMessageDLQ")
    assert json.loads(dead["Body"]) == body
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == reason
    assert dead["MessageAttributes"]["JobType"]["StringValue"] == "send-message"
    [failure] = world.rows(select(JobFailure))
    assert (failure.reason, failure.permanent, str(failure.job_id)) == (reason, True, body["job_id"])
    assert data.get("content", "") not in failure.detail


def test_explicit_recipient_ids_limit_the_deliveries(send, world):
    alice, bob, carol = world.user(), world.user(), world.user()
    conversation = world.conversation([alice, bob, carol])
    data = world.send_message_data(conversation, alice, recipient_ids=[str(bob)])
    send.send(job("send-message", data))
    send.poll_once()
    assert set(world.deliveries(data["message_id"])) == {bob}


def test_batch_progress_advances_for_sent_and_dead_lettered_messages(send, world, db):
    from sqlalchemy import insert

    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    batch_id = uuid.uuid4()
    with db.begin() as conn:
        conn.execute(insert(MessageBatch).values(id=batch_id, sender_id=alice, total=2, queued=2))
    good = world.send_message_data(conversation, alice, batch_id=str(batch_id))
    # Permanently refused (it replies to no message of the conversation): it counts as failed. Jobs of other
    # senders never count (tests/integration/test_send_message_batches.py).
    bad = world.send_message_data(conversation, alice, reply_to_id=str(uuid.uuid4()), batch_id=str(batch_id))
    send.send(job("send-message", good), job("send-message", bad))
    send.poll_once()
    # counted in the batch's ledger (send-message never writes the batch row: the batch function refreshes it)
    from sqlalchemy.orm import Session

    from shared.services.batches import repository

    with Session(db) as session:
        counts = repository.counts(session, batch_id)
    assert counts is not None and (counts.sent, counts.failed, counts.total) == (1, 1, 2)
