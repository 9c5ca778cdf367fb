"""Attachments of send-message (docs/contracts.md §5): only the sender's own, unattached, undeleted uploads
are linked to the message; anything else fails the whole job permanently (``unknown-entity``) and links
nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from shared.db.models import Attachment, JobFailure
from tests.conftest import queue_messages, ws_frames
from tests.world import job

pytestmark = pytest.mark.integration


@pytest.fixture
def send(function):
    return function("SendMessageFunction")


def _attachment(
    db: Engine, uploaded_by: uuid.UUID | None = None, message_id: uuid.UUID | None = None
) -> uuid.UUID:
    """An attachment row as the chat API writes it; without ``uploaded_by``, as rows written before it."""
    attachment_id = uuid.uuid4()
    values: dict[str, Any] = {
        "id": attachment_id,
        "storage_key": f"uploads/{attachment_id}",
        "content_type": "image/png",
        "size_bytes": 1024,
        "message_id": message_id,
    }
    if uploaded_by is not None:
        values["uploaded_by"] = uploaded_by
    with db.begin() as conn:
        conn.execute(insert(Attachment).values(**values))
    return attachment_id


def _linked_to(world, attachment_id: uuid.UUID) -> uuid.UUID | None:
    [row] = world.rows(select(Attachment.message_id).where(Attachment.id == attachment_id))
    return row.message_id


def _refused(send, world, aws, data: dict[str, Any]) -> str:
    """Send ``data``; assert it was dead-lettered as unknown-entity, nothing written; return the detail."""
    body = job("send-message", data)
    send.send(body)
    _, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    assert world.message(data["message_id"]) is None
    [dead] = queue_messages(aws, "SendMessageDLQ")
    assert json.loads(dead["Body"]) == body
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "unknown-entity"
    [failure] = world.rows(select(JobFailure))
    assert failure.reason == "unknown-entity"
    assert dead["MessageAttributes"]["ErrorMessage"]["StringValue"] == failure.detail
    return str(failure.detail)


def test_the_senders_own_upload_is_linked_to_the_message(send, world, db):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    bob_phone = world.connect(bob)
    photo = _attachment(db, uploaded_by=alice)
    data = world.send_message_data(conversation, alice, attachment_ids=[str(photo)])
    send.send(job("send-message", data))
    _, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    assert _linked_to(world, photo) == uuid.UUID(data["message_id"])
    [frame] = ws_frames(bob_phone)
    assert frame["message"]["attachment_ids"] == [str(photo)]


def test_another_participants_upload_cannot_be_claimed(send, world, db, aws):
    # Given bob's unattached upload in a conversation alice is also in
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    mine, bobs = _attachment(db, uploaded_by=alice), _attachment(db, uploaded_by=bob)
    # When alice sends a message naming her own attachment and bob's
    data = world.send_message_data(conversation, alice, attachment_ids=[str(mine), str(bobs)])
    detail = _refused(send, world, aws, data)
    # Then the job fails as a whole: neither attachment is linked, and the reason names counts, not ids
    assert (_linked_to(world, mine), _linked_to(world, bobs)) == (None, None)
    assert "1 of 2 attachment(s)" in detail
    assert str(bob) not in detail and str(bobs) not in detail


def test_an_upload_without_a_recorded_uploader_cannot_be_claimed(send, world, db, aws):
    # Rows written before attachments.uploaded_by existed have no uploader: nobody can link them any more.
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    legacy = _attachment(db)
    _refused(send, world, aws, world.send_message_data(conversation, alice, attachment_ids=[str(legacy)]))
    assert _linked_to(world, legacy) is None


def test_an_upload_attached_to_another_message_cannot_be_claimed_even_by_its_uploader(send, world, db, aws):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    first = world.send_message_data(conversation, alice)
    send.send(job("send-message", first))
    send.poll_once()
    photo = _attachment(db, uploaded_by=alice, message_id=uuid.UUID(first["message_id"]))
    _refused(send, world, aws, world.send_message_data(conversation, alice, attachment_ids=[str(photo)]))
    assert _linked_to(world, photo) == uuid.UUID(first["message_id"])
