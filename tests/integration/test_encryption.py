"""Encryption at rest (docs/contracts.md §5 encryption) against PostgreSQL and moto's KMS: the envelope
(keys.py), tampering, the encryption job (EncryptionFunction), send-message sealing inline, shredding."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from infra.moto_frames import posted_frames
from shared.aws import AwsClients
from shared.config import get_settings
from shared.db.models import (
    Conversation,
    EncryptionKey,
    InAppNotification,
    JobFailure,
    JobInbox,
    Message,
    MessageSearch,
)
from shared.errors import EncryptionKeyUnavailable, SealedContentRefused
from shared.services.crypto import repository
from shared.services.crypto.keys import DATA_KEYS, KeyRing
from shared.services.crypto.service import rotate_conversation_key, shred_conversation
from tests.conftest import queue_messages
from tests.integration.test_search import add_message
from tests.world import job

SECRET = "the eagle lands at midnight"


@pytest.fixture
def kms_calls(aws):
    """Every KMS operation the code makes (by name), counted."""
    calls: list[str] = []
    client = AwsClients().kms()

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-parameter-build.kms", record, unique_id="tests.kms_calls")
    yield calls
    client.meta.events.unregister("before-parameter-build.kms", unique_id="tests.kms_calls")


@pytest.fixture
def keys(aws, db, monkeypatch) -> Iterator[KeyRing]:
    monkeypatch.setenv("ENCRYPTION_KEY_ARN", aws.attributes[("EncryptionKey", "Arn")])
    get_settings.cache_clear()
    DATA_KEYS.clear()
    yield KeyRing(AwsClients(), get_settings())
    DATA_KEYS.clear()
    get_settings.cache_clear()


@pytest.fixture
def encryption(function):
    DATA_KEYS.clear()
    return function("EncryptionFunction")


def seal(db, keys: KeyRing, message_id: uuid.UUID) -> Any:
    """Seal a plaintext message in place (as the encrypt operation does); returns the row."""
    with Session(db) as session, session.begin():
        row = repository.sealed_message(session, message_id)
        sealed = keys.seal(session, row.conversation_id, row.id, row.content)
        repository.store_sealed(
            session, row.id, sealed.ciphertext, sealed.nonce, sealed.key_version, sealed.algorithm
        )
    return message_row(db, message_id)


def open_message(db, keys: KeyRing, message_id: uuid.UUID) -> str:
    with Session(db) as session:
        return keys.open(session, repository.sealed_message(session, message_id))


def message_row(db, message_id) -> Any:
    with db.connect() as conn:
        return conn.execute(select(Message).where(Message.id == message_id)).one()


def set_columns(db, message_id, **values: Any) -> None:
    with db.begin() as conn:
        conn.execute(update(Message).where(Message.id == message_id).values(**values))


def key_rows(world, conversation) -> list[Any]:
    return world.rows(
        select(EncryptionKey)
        .where(EncryptionKey.conversation_id == conversation)
        .order_by(EncryptionKey.key_version)
    )


def encrypted_pair(world, db) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    return alice, bob, conversation


# --- the envelope --------------------------------------------------------------------------------------


def test_a_sealed_message_holds_no_plaintext_and_opens_to_it(world, db, keys):
    alice, _, conversation = encrypted_pair(world, db)
    message = add_message(world, conversation, alice, SECRET)
    row = seal(db, keys, message)
    assert row.content is None
    assert SECRET.encode() not in row.content_ciphertext
    assert (len(row.content_nonce), row.encryption_key_version, row.encryption_algorithm) == (
        12,
        1,
        "aes-256-gcm",
    )
    [key] = key_rows(world, conversation)
    assert (key.key_version, key.messages_sealed, key.retired_at) == (1, 1, None)
    assert open_message(db, keys, message) == SECRET


def test_one_kms_call_seals_a_thousand_messages_of_one_conversation(world, db, keys, kms_calls):
    _, _, conversation = encrypted_pair(world, db)
    with Session(db) as session, session.begin():
        nonces = {keys.seal(session, conversation, uuid.uuid4(), "x").nonce for _ in range(1_000)}
    assert len(nonces) == 1_000
    assert kms_calls == ["GenerateDataKey"]


def test_a_version_seals_at_most_the_configured_number_then_a_new_one_is_made(world, db, keys, monkeypatch):
    monkeypatch.setenv("ENCRYPTION_MAX_MESSAGES_PER_KEY", "2")
    get_settings.cache_clear()
    limited = KeyRing(AwsClients(), get_settings())
    alice, _, conversation = encrypted_pair(world, db)
    messages = [add_message(world, conversation, alice, f"m{i}") for i in range(3)]
    versions = [seal(db, limited, m).encryption_key_version for m in messages]
    assert versions == [1, 1, 2]
    assert [(k.key_version, k.messages_sealed) for k in key_rows(world, conversation)] == [(1, 2), (2, 1)]
    assert [open_message(db, limited, m) for m in messages] == ["m0", "m1", "m2"]


def test_the_cache_is_bounded_and_expires(world, db, keys, monkeypatch, kms_calls):
    monkeypatch.setenv("ENCRYPTION_KEY_CACHE_SIZE", "1")
    get_settings.cache_clear()
    small = KeyRing(AwsClients(), get_settings())
    alice, bob = world.user("alice"), world.user("bob")
    first, second = (world.conversation([alice, bob], encrypted=True) for _ in range(2))
    m1, m2 = add_message(world, first, alice, "one"), add_message(world, second, alice, "two")
    seal(db, small, m1), seal(db, small, m2)
    assert len(DATA_KEYS) == 1
    assert open_message(db, small, m1) == "one"  # evicted: unwrapped again
    assert kms_calls == ["GenerateDataKey", "GenerateDataKey", "Decrypt"]
    monkeypatch.setenv("ENCRYPTION_KEY_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    DATA_KEYS.clear()
    uncached = KeyRing(AwsClients(), get_settings())
    open_message(db, uncached, m2), open_message(db, uncached, m2)
    assert kms_calls[3:] == ["Decrypt", "Decrypt"]
    assert "one" not in repr(DATA_KEYS) and "key=" not in repr(DATA_KEYS._keys)


def test_tampering_fails_closed_with_a_clear_reason(world, db, keys):
    alice, _, conversation = encrypted_pair(world, db)
    victim, other = (
        add_message(world, conversation, alice, SECRET),
        add_message(world, conversation, alice, "hi"),
    )
    sealed, donor = seal(db, keys, victim), seal(db, keys, other)

    def refused(**values: Any) -> str:
        set_columns(db, victim, **values)
        with pytest.raises(SealedContentRefused) as caught:
            open_message(db, keys, victim)
        set_columns(
            db,
            victim,
            content_ciphertext=sealed.content_ciphertext,
            content_nonce=sealed.content_nonce,
            encryption_key_version=sealed.encryption_key_version,
            encryption_algorithm=sealed.encryption_algorithm,
        )
        assert SECRET not in str(caught.value)
        return str(caught.value)

    flipped = bytearray(sealed.content_ciphertext)
    flipped[3] ^= 0x01
    assert "authentication failed" in refused(content_ciphertext=bytes(flipped))
    assert "authentication failed" in refused(content_nonce=donor.content_nonce)  # swapped nonce
    # the other message's ciphertext (and nonce) copied onto this one
    assert "authentication failed" in refused(
        content_ciphertext=donor.content_ciphertext, content_nonce=donor.content_nonce
    )
    assert "unknown algorithm" in refused(encryption_algorithm="aes-128-cbc")
    assert "nonce" in refused(content_nonce=b"short")
    # a wrong key version: another existing version fails authentication, a missing one has no key
    with Session(db) as session, session.begin():
        rotate_conversation_key(session, keys, conversation)
    assert "authentication failed" in refused(encryption_key_version=2)
    set_columns(db, victim, encryption_key_version=7)
    with pytest.raises(EncryptionKeyUnavailable, match="no such key version"):
        open_message(db, keys, victim)
    set_columns(db, victim, encryption_key_version=1)
    assert open_message(db, keys, victim) == SECRET  # restored: still opens


def test_a_wrapped_key_with_another_encryption_context_is_refused_by_kms(world, db, keys):
    alice, bob = world.user("alice"), world.user("bob")
    first, second = (world.conversation([alice, bob], encrypted=True) for _ in range(2))
    m1, m2 = add_message(world, first, alice, "one"), add_message(world, second, alice, "two")
    seal(db, keys, m1), seal(db, keys, m2)
    [wrapped] = world.rows(select(EncryptionKey.wrapped_key).where(EncryptionKey.conversation_id == first))
    with db.begin() as conn:  # conversation 1's wrapped key copied onto conversation 2
        conn.execute(
            update(EncryptionKey)
            .where(EncryptionKey.conversation_id == second)
            .values(wrapped_key=wrapped[0])
        )
    DATA_KEYS.clear()
    with pytest.raises(EncryptionKeyUnavailable, match="KMS refused"):
        open_message(db, keys, m2)


def test_shredding_deletes_the_wrapped_keys_and_the_content_never_opens_again(world, db, keys):
    alice, _, conversation = encrypted_pair(world, db)
    message = add_message(world, conversation, alice, SECRET)
    seal(db, keys, message)
    with Session(db) as session, session.begin():
        assert shred_conversation(session, conversation) == 1
    assert key_rows(world, conversation) == []
    with pytest.raises(EncryptionKeyUnavailable):
        open_message(db, keys, message)


# --- the encryption job (EncryptionFunction) -------------------------------------------------------------


def encryption_job(message_id, operation: str, **extra: Any) -> dict[str, Any]:
    return job("encryption", {"message_id": str(message_id), "operation": operation, **extra})


def test_encrypt_is_idempotent_and_replaces_the_plaintext_search_entry_by_a_blind_one(
    world, db, encryption, function, aws
):
    alice, _, conversation = encrypted_pair(world, db)
    message = add_message(world, conversation, alice, SECRET)
    with db.begin() as conn:
        conn.execute(
            insert(MessageSearch).values(
                message_id=message,
                conversation_id=conversation,
                created_at=message_row(db, message).created_at,
                document=func.to_tsvector("simple", SECRET),
                search_config="simple",
            )
        )
    encryption.send(encryption_job(message, "encrypt"))
    encryption.drain()
    first = message_row(db, message)
    assert first.content is None and first.content_ciphertext is not None
    [entry] = world.rows(select(MessageSearch).where(MessageSearch.message_id == message))
    assert entry.document is None and entry.search_config is None and entry.blind_tokens
    encryption.send(encryption_job(message, "encrypt"))  # again (another job id): left alone
    encryption.drain()
    again = message_row(db, message)
    assert (again.content_ciphertext, again.content_nonce) == (first.content_ciphertext, first.content_nonce)
    assert [k.messages_sealed for k in key_rows(world, conversation)] == [1]
    assert queue_messages(aws, "EncryptionDLQ") == []


def test_decrypt_restores_the_plaintext_once_the_conversation_turns_encryption_off(
    world, db, encryption, aws
):
    alice, _, conversation = encrypted_pair(world, db)
    message = add_message(world, conversation, alice, SECRET)
    encryption.send(encryption_job(message, "encrypt"))
    encryption.drain()
    encryption.send(encryption_job(message, "decrypt"))  # still encrypted: refused
    encryption.drain()
    [dead] = queue_messages(aws, "EncryptionDLQ")
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "conflict"
    with db.begin() as conn:
        conn.execute(
            update(Conversation).where(Conversation.id == conversation).values(encryption_enabled=False)
        )
    encryption.send(encryption_job(message, "decrypt"))
    encryption.drain()
    row = message_row(db, message)
    assert (row.content, row.content_ciphertext, row.encryption_key_version) == (SECRET, None, None)


def test_rotate_reseals_under_the_newest_version_and_retires_unused_ones(world, db, encryption, keys):
    alice, _, conversation = encrypted_pair(world, db)
    messages = [add_message(world, conversation, alice, f"m{i}") for i in range(2)]
    for message in messages:
        seal(db, keys, message)
    with Session(db) as session, session.begin():
        assert rotate_conversation_key(session, keys, conversation) == 2
    encryption.send(encryption_job(messages[0], "rotate"))
    encryption.drain()
    assert message_row(db, messages[0]).encryption_key_version == 2
    assert key_rows(world, conversation)[0].retired_at is None  # messages[1] still uses version 1
    encryption.send(encryption_job(messages[1], "rotate"))
    encryption.drain()
    versions = key_rows(world, conversation)
    assert [(v.key_version, v.retired_at is not None) for v in versions] == [(1, True), (2, False)]
    assert [open_message(db, keys, m) for m in messages] == ["m0", "m1"]


def test_a_tampered_message_is_dead_lettered_with_its_reason_and_no_content(world, db, encryption, keys, aws):
    alice, _, conversation = encrypted_pair(world, db)
    message = add_message(world, conversation, alice, SECRET)
    sealed = seal(db, keys, message)
    flipped = bytearray(sealed.content_ciphertext)
    flipped[0] ^= 0xFF
    set_columns(db, message, content_ciphertext=bytes(flipped))
    with db.begin() as conn:
        conn.execute(
            update(Conversation).where(Conversation.id == conversation).values(encryption_enabled=False)
        )
    encryption.send(encryption_job(message, "decrypt"))
    encryption.drain()
    [dead] = queue_messages(aws, "EncryptionDLQ")
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "sealed-content-refused"
    [failure] = world.rows(select(JobFailure))
    assert "authentication failed" in failure.detail and SECRET not in failure.detail
    assert message_row(db, message).content is None


def test_a_key_id_other_than_the_deployments_key_is_refused(world, db, encryption, aws):
    alice, _, conversation = encrypted_pair(world, db)
    message = add_message(world, conversation, alice, SECRET)
    encryption.send(encryption_job(message, "encrypt", key_id="arn:aws:kms:us-east-1:123456789012:key/other"))
    encryption.drain()
    [dead] = queue_messages(aws, "EncryptionDLQ")
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "invalid-job"
    assert message_row(db, message).content == SECRET


def test_the_encryption_function_is_the_encryption_queues_consumer(template):
    (event,) = template.functions["EncryptionFunction"].sqs_events
    assert event.queue_logical_id == "EncryptionQueue"
    key = template.resources["EncryptionKey"]
    assert key["Properties"]["EnableKeyRotation"] is True
    # only the two functions that seal and open content may use the key, and only to do that
    users = {
        logical_id
        for logical_id, fn in template.functions.items()
        for policy in fn.policies
        if isinstance(policy, dict)
        for statement in policy.get("Statement", [])
        if any(str(action).startswith("kms:") for action in _actions(statement))
    }
    assert users == {
        "EncryptionFunction",
        "SendMessageFunction",
        "IndexingFunction",  # the blind index's key derives from the conversation's data key
        "WebSocketSearchFunction",
        "BatchMessageFunction",  # a batch's content, sealed for a retry of its failed recipients
    }


def _actions(statement: dict[str, Any]) -> list[Any]:
    actions = statement.get("Action", [])
    return actions if isinstance(actions, list) else [actions]


# --- send-message in an encrypted conversation -----------------------------------------------------------


def test_send_message_seals_inline_and_no_plaintext_is_at_rest(function, world, db, aws, monkeypatch):
    send = function("SendMessageFunction")
    DATA_KEYS.clear()
    alice, bob, carol = world.user("alice", display_name="Alice"), world.user("bob"), world.user("carol")
    conversation = world.conversation([alice, bob, carol], encrypted=True)
    connection = world.connect(bob)  # bob is online, carol is not (a notification)
    data = world.send_message_data(conversation, alice, SECRET)
    body = job("send-message", data)
    send.send(body)
    send.drain()
    row = message_row(db, uuid.UUID(data["message_id"]))
    assert row.content is None and row.content_ciphertext is not None
    for inbox in world.rows(select(JobInbox)):
        assert SECRET not in json.dumps(inbox.effects_pending, default=str)
    [frame] = [f for f in posted_frames(connection) if f["type"] == "message.new"]
    assert frame["message"]["content"] == SECRET  # decrypted in memory for the frame
    [indexing] = queue_messages(aws, "IndexingQueue")  # indexed blind, from the stored message
    assert SECRET not in indexing["Body"]
    [notification] = queue_messages(aws, "NotificationQueue")
    notification_data = json.loads(notification["Body"])["data"]
    assert notification_data["body"] == "New message from Alice"
    assert SECRET not in notification["Body"]
    assert world.rows(select(InAppNotification)) == []


def test_the_pending_message_new_effect_holds_a_reference_not_the_content(world, db, keys):
    from shared.jobs import SEND_MESSAGE, SendMessageData
    from shared.services.messages.service import BroadcastNewMessage, send_message

    alice, _, conversation = encrypted_pair(world, db)
    data = SendMessageData.model_validate(world.send_message_data(conversation, alice, SECRET))
    with Session(db) as session, session.begin():
        effects = send_message(SEND_MESSAGE.new(data), session, keys)
    stored = json.dumps([effect.model_dump(mode="json") for effect in effects])
    assert SECRET not in stored
    [effect] = [e for e in effects if isinstance(e, BroadcastNewMessage)]  # and the indexing job's enqueue
    assert effect.sealed_message_id == data.message_id


# --- cleanup shreds -----------------------------------------------------------------------------------------


def test_cleanup_shreds_a_deleted_conversations_keys_before_purging_it(world, db, keys, function):
    alice, _, gone = encrypted_pair(world, db)
    kept = world.conversation([alice, world.user("carol")], encrypted=True)
    seal(db, keys, add_message(world, gone, alice, SECRET))
    survivor = add_message(world, kept, alice, "still here")
    seal(db, keys, survivor)
    with db.begin() as conn:
        conn.execute(
            update(Conversation)
            .where(Conversation.id == gone)
            .values(deleted_at=datetime.now(UTC) - timedelta(days=365))
        )
    cleaner = function("CleanupFunction")
    cleaner.send(job("cleanup", {"task": "deleted-conversations"}))
    cleaner.drain()
    assert key_rows(world, gone) == [] and world.messages(gone) == []
    assert [k.key_version for k in key_rows(world, kept)] == [1]
    assert open_message(db, keys, survivor) == "still here"


def test_a_pre_inserted_plaintext_row_is_sealed_when_send_message_completes_it(function, world, db, aws):
    send = function("SendMessageFunction")
    DATA_KEYS.clear()
    alice, _, conversation = encrypted_pair(world, db)
    data = world.send_message_data(conversation, alice, SECRET)
    with db.begin() as conn:  # the chat API wrote it first, in plaintext, as `sending`
        conn.execute(
            insert(Message).values(
                id=uuid.UUID(data["message_id"]),
                conversation_id=conversation,
                sender_id=alice,
                seq=1,
                content=SECRET,
                status="sending",
            )
        )
    send.send(job("send-message", data))
    send.drain()
    row = message_row(db, uuid.UUID(data["message_id"]))
    assert (row.status, row.content, row.encryption_key_version) == ("sent", None, 1)
    assert queue_messages(aws, "SendMessageDLQ") == []
