"""delivery-confirmation through DeliveryConfirmationFunction."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from shared.db.models import JobFailure, MessageRead
from tests.conftest import queue_messages, ws_frames
from tests.world import job

pytestmark = pytest.mark.integration


@pytest.fixture
def conversation_with_messages(function, world):
    """alice sent two messages to bob and carol (through SendMessageFunction)."""
    send = function("SendMessageFunction")
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    conversation = world.conversation([alice, bob, carol])
    first, second = world.send_message_data(conversation, alice), world.send_message_data(conversation, alice)
    send.send(job("send-message", first), job("send-message", second))
    send.poll_once()
    return {
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "conversation": conversation,
        "messages": [first["message_id"], second["message_id"]],
    }


@pytest.fixture
def confirm(function, conversation_with_messages):
    return function("DeliveryConfirmationFunction")


def receipt(recipient, status, *, at=None, **target):
    return job(
        "delivery-confirmation",
        {
            "recipient_id": str(recipient),
            "status": status,
            "confirmed_at": (at or datetime.now(UTC)).isoformat(),
            **target,
        },
    )


def test_delivered_receipt_updates_the_delivery_and_tells_the_sender(
    confirm, conversation_with_messages, world
):
    c = conversation_with_messages
    alice_device = world.connect(c["alice"])
    confirm.send(receipt(c["bob"], "delivered", message_ids=[c["messages"][0]]))
    _, response = confirm.poll_once()
    assert response == {"batchItemFailures": []}
    delivery = world.deliveries(c["messages"][0])[c["bob"]]
    assert (delivery.status, delivery.delivered_at is not None, delivery.read_at) == ("delivered", True, None)
    # carol has not confirmed: the message as a whole is still "sent"
    assert world.message(c["messages"][0]).status == "sent"
    [frame] = ws_frames(alice_device)
    assert frame == {
        "type": "message.status",
        "message_id": c["messages"][0],
        "recipient_id": str(c["bob"]),
        "status": "delivered",
        "at": frame["at"],
        "message_status": "sent",
    }


def test_aggregate_status_follows_the_slowest_recipient(confirm, conversation_with_messages, world):
    c = conversation_with_messages
    alice_device = world.connect(c["alice"])
    message = c["messages"][0]
    confirm.send(receipt(c["bob"], "read", message_ids=[message]))
    confirm.poll_once()
    confirm.send(receipt(c["carol"], "delivered", message_ids=[message]))
    confirm.poll_once()
    assert world.message(message).status == "delivered"
    confirm.send(receipt(c["carol"], "read", message_ids=[message]))
    confirm.poll_once()
    assert world.message(message).status == "read"
    statuses = [(f["recipient_id"], f["status"], f["message_status"]) for f in ws_frames(alice_device)]
    assert statuses == [
        (str(c["bob"]), "read", "sent"),
        (str(c["carol"]), "delivered", "delivered"),
        (str(c["carol"]), "read", "read"),
    ]


def test_read_sets_delivered_at_and_writes_message_reads(confirm, conversation_with_messages, world):
    c = conversation_with_messages
    at = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    confirm.send(receipt(c["bob"], "read", at=at, message_ids=c["messages"]))
    confirm.poll_once()
    for message in c["messages"]:
        delivery = world.deliveries(message)[c["bob"]]
        assert (delivery.status, delivery.delivered_at, delivery.read_at) == ("read", at, at)
    reads = world.rows(select(MessageRead.message_id, MessageRead.user_id, MessageRead.read_at))
    assert sorted((str(r.message_id), r.user_id, r.read_at) for r in reads) == sorted(
        (m, c["bob"], at) for m in c["messages"]
    )


def test_a_receipt_never_downgrades(confirm, conversation_with_messages, world):
    c = conversation_with_messages
    alice_device = world.connect(c["alice"])
    message = c["messages"][0]
    read_at = datetime.now(UTC)
    confirm.send(receipt(c["bob"], "read", at=read_at, message_ids=[message]))
    confirm.poll_once()
    # A late "delivered" (standard queues do not order) arrives after the read
    confirm.send(receipt(c["bob"], "delivered", at=read_at + timedelta(seconds=5), message_ids=[message]))
    _, response = confirm.poll_once()
    assert response == {"batchItemFailures": []}
    delivery = world.deliveries(message)[c["bob"]]
    assert (delivery.status, delivery.read_at) == ("read", read_at)
    assert [f["status"] for f in ws_frames(alice_device)] == ["read"]


def test_read_up_to_marks_everything_up_to_and_including_the_message(
    confirm, conversation_with_messages, world
):
    c = conversation_with_messages
    confirm.send(receipt(c["bob"], "read", read_up_to=c["messages"][1]))
    confirm.poll_once()
    assert [world.deliveries(m)[c["bob"]].status for m in c["messages"]] == ["read", "read"]
    assert [world.deliveries(m)[c["carol"]].status for m in c["messages"]] == ["pending", "pending"]


def test_read_up_to_stops_at_the_named_message(confirm, conversation_with_messages, world):
    c = conversation_with_messages
    confirm.send(receipt(c["bob"], "read", read_up_to=c["messages"][0]))
    confirm.poll_once()
    assert [world.deliveries(m)[c["bob"]].status for m in c["messages"]] == ["read", "pending"]


@pytest.mark.parametrize(
    ("who", "target", "reason"),
    [
        ("outsider", "message_ids", "not-a-recipient"),
        ("sender", "message_ids", "not-a-recipient"),
        ("bob", "unknown_message", "not-a-recipient"),
        ("outsider", "read_up_to", "not-a-recipient"),
        ("bob", "unknown_read_up_to", "unknown-entity"),
    ],
)
def test_only_a_recipient_may_confirm(confirm, conversation_with_messages, world, aws, who, target, reason):
    c = conversation_with_messages
    confirmer = world.user("mallory") if who == "outsider" else c["alice"] if who == "sender" else c["bob"]
    targets = {
        "message_ids": {"message_ids": c["messages"]},
        "unknown_message": {"message_ids": [c["messages"][0], str(uuid.uuid4())]},
        "read_up_to": {"read_up_to": c["messages"][1]},
        "unknown_read_up_to": {"read_up_to": str(uuid.uuid4())},
    }[target]
    body = receipt(confirmer, "read", **targets)
    confirm.send(body)
    _, response = confirm.poll_once()
    assert response == {"batchItemFailures": []}
    # nothing was written, not even for the valid message in the list
    assert {d.status for m in c["messages"] for d in world.deliveries(m).values()} == {"pending"}
    [dead] = queue_messages(aws, "DeliveryConfirmationDLQ")
    assert json.loads(dead["Body"]) == body
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == reason
    assert [f.reason for f in world.rows(select(JobFailure))] == [reason]


def test_confirming_twice_changes_nothing_the_second_time(confirm, conversation_with_messages, world):
    c = conversation_with_messages
    alice_device = world.connect(c["alice"])
    confirm.send(receipt(c["bob"], "delivered", message_ids=c["messages"]))
    confirm.poll_once()
    confirm.send(receipt(c["bob"], "delivered", message_ids=c["messages"]))
    _, response = confirm.poll_once()
    assert response == {"batchItemFailures": []}
    assert len(ws_frames(alice_device)) == 2  # one per message, from the first receipt only
