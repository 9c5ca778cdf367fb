"""Retrying a batch's failed recipients (docs/contracts.md §5 batch-message, ``retry_failed``): only they are
sent again, under job ids of their own, with the batch's content sealed at rest and cleared once no retry can
need it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from shared import aws as shared_aws
from shared import config as config_module
from shared.aws import AwsClients
from shared.bootstrap import dependencies
from shared.db.models import BatchJob, Conversation, JobInbox, MessageBatch, User
from shared.errors import DependencyThrottled
from shared.jobs import BatchMessageData
from shared.services.batches import BatchNotRetryable, cancel_batch, forget_finished_content, retry_failed
from shared.services.batches.sealing import open_content
from shared.services.batches.service import direct_conversation_id, message_id, send_job_id
from tests.conftest import ws_frames
from tests.faults import failing_calls
from tests.integration.test_batch_message import SqsCalls, _batch_job, _counts, _run_to_completion
from tests.world import World, job

pytestmark = pytest.mark.integration

CONTENT = "the office is closed on Friday"


@pytest.fixture
def fan_out(function, monkeypatch):
    monkeypatch.setenv("BATCH_SETTLE_CHECK_SECONDS", "0")  # continuations after the last chunk: no wait
    return function("BatchMessageFunction")


@pytest.fixture
def send(function, fan_out):
    return function("SendMessageFunction")


def _ledger(world: World, batch_id: uuid.UUID) -> dict[tuple[uuid.UUID, int], tuple[str, str | None]]:
    """Every row of the batch, superseded ones too: (recipient, attempt) -> (status, error)."""
    rows = world.rows(select(BatchJob).where(BatchJob.batch_id == batch_id))
    return {(row.recipient_id, row.attempt): (row.status, row.error) for row in rows}


def _batch_row(world: World, batch_id: uuid.UUID) -> Any:
    [row] = world.rows(select(MessageBatch).where(MessageBatch.id == batch_id))
    return row


def _sent_jobs(calls: list[dict[str, Any]], queue_url: str) -> list[dict[str, Any]]:
    return [json.loads(e["MessageBody"]) for c in calls if c["QueueUrl"] == queue_url for e in c["Entries"]]


def _revive(db, user_id: uuid.UUID) -> None:
    with db.begin() as conn:
        conn.execute(update(User).where(User.id == user_id).values(deleted_at=None))


def _finished_with_one_failure(fan_out, send, world, db) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, str]:
    """alice's batch to bob (sent) and gone (deleted: failed), run to its end; gone is then revived.
    Returns (batch_id, alice, gone, alice's connection)."""
    alice, bob, gone = world.user("alice"), world.user("bob"), world.user("gone", deleted=True)
    device = world.connect(alice)
    body = _batch_job(alice, [bob, gone])
    fan_out.send(body)
    _run_to_completion(fan_out, send)
    batch_id = uuid.UUID(body["data"]["batch_id"])
    assert _counts(db, batch_id).status == "completed_with_failures"
    _revive(db, gone)
    return batch_id, alice, gone, device


def test_a_retry_sends_exactly_the_failed_recipients_and_the_counts_end_right(fan_out, send, world, db, aws):
    # Given a finished batch: bob sent, gone and a stranger failed (unknown); gone has since come back
    alice, bob, gone = world.user("alice"), world.user("bob"), world.user("gone", deleted=True)
    stranger = uuid.uuid4()
    device = world.connect(alice)
    body = _batch_job(alice, [bob, gone, stranger], chunk_size=2)
    fan_out.send(body)
    _run_to_completion(fan_out, send)
    batch_id = uuid.UUID(body["data"]["batch_id"])
    first = _counts(db, batch_id)
    assert (first.status, first.sent, first.failed) == ("completed_with_failures", 1, 2)
    _revive(db, gone)
    # When an operator retries its failed recipients
    view = retry_failed(dependencies(), batch_id, chunk_size=1)
    # Then the batch runs again over just those two (its snapshot says so at once)
    assert view is not None
    assert (view["status"], view["total"], view["sent"], view["failed"], view["pending"]) == (
        "running",
        3,
        1,
        0,
        2,
    )
    with SqsCalls() as calls:
        _run_to_completion(fan_out, send)
    # only gone got a send-message job (the stranger failed again without one), under the retry's own job id
    [resent] = _sent_jobs(calls, aws.queue_urls["SendMessageQueue"])
    assert resent["data"]["recipient_ids"] == [str(gone)]
    assert resent["job_id"] == str(send_job_id(batch_id, gone, 1)) != str(send_job_id(batch_id, gone))
    assert resent["data"]["message_id"] == str(message_id(batch_id, gone))
    # and the counts end right: total unchanged, bob still counted once
    counts = _counts(db, batch_id)
    assert (counts.status, counts.total, counts.sent, counts.failed, counts.pending, counts.queued) == (
        "completed_with_failures",
        3,
        2,
        1,
        0,
        0,
    )
    assert _ledger(world, batch_id) == {
        (bob, 0): ("sent", None),
        (gone, 0): ("retried", "unknown-recipient"),
        (stranger, 0): ("retried", "unknown-recipient"),
        (gone, 1): ("sent", None),
        (stranger, 1): ("failed", "unknown-recipient"),
    }
    row = _batch_row(world, batch_id)
    assert (row.attempts, row.sent, row.failed, row.status) == (1, 2, 1, "completed_with_failures")
    assert [m.content for m in world.messages(direct_conversation_id(alice, gone))] == [CONTENT]
    assert len(world.messages(direct_conversation_id(alice, bob))) == 1  # bob was not sent again
    # and alice saw the retry's progress and a second batch.completed with the final summary
    frames = ws_frames(device)
    completed = [f["batch"] for f in frames if f["type"] == "batch.completed"]
    assert [(c["sent"], c["failed"], c["percent"]) for c in completed] == [(1, 2, 100.0), (2, 1, 100.0)]
    first_completed, last_completed = (i for i, f in enumerate(frames) if f["type"] == "batch.completed")
    retry_progress = [
        f["batch"] for f in frames[first_completed:last_completed] if f["type"] == "batch.progress"
    ]
    assert retry_progress and all(p["status"] == "running" and p["total"] == 3 for p in retry_progress)


def test_a_recipient_whose_send_was_dead_lettered_is_sent_by_the_retry_not_swallowed_by_the_inbox(
    fan_out, send, world, db
):
    # Given bob's send-message job dead-lettered (his conversation was deleted when it ran)
    alice, bob = world.user("alice"), world.user("bob")
    body = _batch_job(alice, [bob])
    batch_id = uuid.UUID(body["data"]["batch_id"])
    fan_out.send(body)
    fan_out.poll_once()
    conversation = direct_conversation_id(alice, bob)
    with db.begin() as conn:
        conn.execute(
            update(Conversation).where(Conversation.id == conversation).values(deleted_at=datetime.now(UTC))
        )
    _run_to_completion(fan_out, send)
    assert _ledger(world, batch_id) == {(bob, 0): ("failed", "send-message-failed")}
    # When the cause is fixed and the batch retried
    with db.begin() as conn:
        conn.execute(update(Conversation).where(Conversation.id == conversation).values(deleted_at=None))
    retry_failed(dependencies(), batch_id)
    _run_to_completion(fan_out, send)
    # Then bob gets the message, once, and the batch completes without failures
    [delivered] = world.messages(conversation)
    assert (delivered.id, delivered.content) == (message_id(batch_id, bob), CONTENT)
    counts = _counts(db, batch_id)
    assert (counts.status, counts.sent, counts.failed) == ("completed", 1, 0)


def test_a_redelivered_retry_chunk_enqueues_nobody_twice(fan_out, send, world, db, aws):
    batch_id, alice, gone, _ = _finished_with_one_failure(fan_out, send, world, db)
    with SqsCalls() as calls:
        retry_failed(dependencies(), batch_id)
    [head] = _sent_jobs(calls, fan_out.queue_url)
    assert (head["data"]["attempt"], head["data"]["cursor"], head["data"].get("content")) == (1, 0, None)
    # the retry's first chunk commits but SQS refuses its sends (retried), and it is delivered twice more
    refused = ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessageBatch")
    with failing_calls(shared_aws.client("sqs"), "SendMessageBatch", lambda: refused, times=1):
        _, response = fan_out.poll_once()
    assert len(response["batchItemFailures"]) == 1
    fan_out.send(head, head)
    with SqsCalls() as calls:
        _run_to_completion(fan_out, send)
    resent = _sent_jobs(calls, aws.queue_urls["SendMessageQueue"])
    assert [job["job_id"] for job in resent] == [str(send_job_id(batch_id, gone, 1))]
    assert len(world.messages(direct_conversation_id(alice, gone))) == 1
    counts = _counts(db, batch_id)
    assert (counts.status, counts.sent, counts.failed) == ("completed", 2, 0)


def test_a_late_success_of_the_first_attempt_counts_and_the_recipient_gets_one_message(
    fan_out, send, world, db
):
    # Given bob counted failed (no outcome in time) while his first send-message job was still queued
    alice, bob = world.user("alice"), world.user("bob")
    body = _batch_job(alice, [bob])
    batch_id = uuid.UUID(body["data"]["batch_id"])
    fan_out.send(body)
    fan_out.poll_once()
    with db.begin() as conn:
        conn.execute(
            update(MessageBatch)
            .where(MessageBatch.id == batch_id)
            .values(enqueued_at=MessageBatch.enqueued_at - timedelta(hours=2))
        )
    fan_out.poll_once()
    assert _counts(db, batch_id).status == "completed_with_failures"
    # When the batch is retried and both jobs (the late first one, the retry's) finally run
    retry_failed(dependencies(), batch_id)
    _run_to_completion(fan_out, send)
    # Then bob has one message, and the retry's row is counted sent (the superseded one moved nowhere)
    assert len(world.messages(direct_conversation_id(alice, bob))) == 1
    assert _ledger(world, batch_id) == {(bob, 0): ("retried", "no-outcome"), (bob, 1): ("sent", None)}
    counts = _counts(db, batch_id)
    assert (counts.status, counts.sent, counts.failed, counts.total) == ("completed", 1, 0, 1)


def test_a_job_of_an_earlier_attempt_stops(fan_out, send, world, db, aws):
    batch_id, alice, gone, _ = _finished_with_one_failure(fan_out, send, world, db)
    retry_failed(dependencies(), batch_id)
    fan_out.sqs.purge_queue(QueueUrl=fan_out.queue_url)  # the retry's own job: not run here
    stale = _batch_job(alice, [gone], batch_id=batch_id, cursor=0)  # attempt 0's continuation, late
    fan_out.send(stale)
    with SqsCalls() as calls:
        _, response = fan_out.poll_once()
    assert response == {"batchItemFailures": []} and calls == []
    assert _ledger(world, batch_id)[(gone, 1)] == ("pending", None)


@pytest.mark.parametrize("state", ["running", "cancelled", "no-failed-recipients", "content-not-kept"])
def test_a_batch_that_cannot_be_retried_is_refused_and_left_unchanged(state, fan_out, send, world, db):
    alice, bob, gone = world.user("alice"), world.user("bob"), world.user("gone", deleted=True)
    body = _batch_job(alice, [bob] if state == "no-failed-recipients" else [bob, gone], chunk_size=1)
    batch_id = uuid.UUID(body["data"]["batch_id"])
    fan_out.send(body)
    if state == "running":
        fan_out.poll_once()
    else:
        if state == "cancelled":
            fan_out.poll_once()
            cancel_batch(dependencies(), batch_id)
        _run_to_completion(fan_out, send)
    if state == "content-not-kept":  # cleaned up
        with Session(db) as session:
            assert forget_finished_content(session, [batch_id]) == 1
            session.commit()
    before = _batch_row(world, batch_id), _ledger(world, batch_id)
    with pytest.raises(BatchNotRetryable) as refused:
        retry_failed(dependencies(), batch_id)
    assert refused.value.reason == state
    assert (_batch_row(world, batch_id), _ledger(world, batch_id)) == before


def test_a_retry_whose_job_sqs_refuses_changes_nothing_and_can_be_asked_again(fan_out, send, world, db):
    batch_id, _, _, _ = _finished_with_one_failure(fan_out, send, world, db)
    before = _batch_row(world, batch_id), _ledger(world, batch_id)
    refused = ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessageBatch")
    with (
        failing_calls(shared_aws.client("sqs"), "SendMessageBatch", lambda: refused),
        pytest.raises(DependencyThrottled),
    ):
        retry_failed(dependencies(), batch_id)
    assert (_batch_row(world, batch_id), _ledger(world, batch_id)) == before
    view = retry_failed(dependencies(), batch_id)
    assert view is not None and view["status"] == "running"
    _run_to_completion(fan_out, send)
    assert _counts(db, batch_id).status == "completed"


def test_a_retry_with_bad_pacing_is_refused_before_anything_changes(fan_out, send, world, db):
    batch_id, _, _, _ = _finished_with_one_failure(fan_out, send, world, db)
    before = _batch_row(world, batch_id), _ledger(world, batch_id)
    with pytest.raises(ValidationError, match="chunk_size"):
        retry_failed(dependencies(), batch_id, chunk_size=0)
    with pytest.raises(ValidationError, match="chunk_delay_seconds"):
        retry_failed(dependencies(), batch_id, chunk_delay_seconds=901)
    assert (_batch_row(world, batch_id), _ledger(world, batch_id)) == before


def test_an_unknown_batch_is_none(fan_out):
    assert retry_failed(dependencies(), uuid.uuid4()) is None


def test_the_content_is_sealed_at_rest_and_opens_only_as_its_own_batch(fan_out, world, db):
    alice, bob = world.user("alice"), world.user("bob")
    body = _batch_job(alice, [bob])
    batch_id = uuid.UUID(body["data"]["batch_id"])
    fan_out.send(body)
    fan_out.poll_once()
    with db.connect() as conn:
        stored = conn.execute(
            text("SELECT message_batches::text FROM message_batches WHERE id = :id"), {"id": batch_id}
        ).scalar_one()
    assert CONTENT not in stored and CONTENT.encode().hex() not in stored
    row = _batch_row(world, batch_id)
    assert row.content_ciphertext and len(row.content_nonce) == 12 and row.content_wrapped_key
    assert open_content(AwsClients(), row) == CONTENT
    # the same sealed columns under another batch's id do not open
    from shared.errors import EncryptionKeyUnavailable, SealedContentRefused

    with pytest.raises((EncryptionKeyUnavailable, SealedContentRefused)):
        open_content(AwsClients(), SimpleNamespace(**(row._asdict() | {"id": uuid.uuid4()})))


def test_a_retrys_pending_sends_hold_no_plaintext(fan_out, send, world, db):
    batch_id, _, _, _ = _finished_with_one_failure(fan_out, send, world, db)
    with SqsCalls() as calls:
        retry_failed(dependencies(), batch_id)
    [head] = _sent_jobs(calls, fan_out.queue_url)
    refused = ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessageBatch")
    with failing_calls(shared_aws.client("sqs"), "SendMessageBatch", lambda: refused, times=1):
        fan_out.poll_once()  # committed, its sends still pending in the inbox
    pending = [row.effects_pending for row in world.rows(select(JobInbox)) if row.effects_pending]
    assert pending and CONTENT not in json.dumps(pending)
    fan_out.send(head)  # its redelivery opens the content and sends
    _run_to_completion(fan_out, send)
    assert _counts(db, batch_id).status == "completed"


def test_sends_whose_content_does_not_open_are_counted_failed(fan_out, send, world, db):
    batch_id, _, gone, _ = _finished_with_one_failure(fan_out, send, world, db)
    with db.begin() as conn:  # tampered with at rest
        conn.execute(
            update(MessageBatch).where(MessageBatch.id == batch_id).values(content_nonce=b"\x00" * 12)
        )
    retry_failed(dependencies(), batch_id)
    with SqsCalls() as calls:
        _run_to_completion(fan_out, send)
    assert all(c["QueueUrl"] == fan_out.queue_url for c in calls)  # no send-message job
    assert _ledger(world, batch_id)[(gone, 1)] == ("failed", "content-unavailable")
    assert _counts(db, batch_id).status == "completed_with_failures"


@pytest.mark.parametrize("ending", ["completed", "cancelled", "retried-to-completion"])
def test_the_content_is_cleared_once_no_retry_can_need_it(ending, fan_out, send, world, db):
    alice, bob, gone = world.user("alice"), world.user("bob"), world.user("gone", deleted=True)
    recipients = [bob] if ending == "completed" else [bob, gone]
    body = _batch_job(alice, recipients, chunk_size=1)
    batch_id = uuid.UUID(body["data"]["batch_id"])
    fan_out.send(body)
    if ending == "cancelled":
        fan_out.poll_once()
        cancel_batch(dependencies(), batch_id)
    _run_to_completion(fan_out, send)
    if ending == "retried-to-completion":
        assert _batch_row(world, batch_id).content_ciphertext is not None  # kept: it has failures
        _revive(db, gone)
        retry_failed(dependencies(), batch_id)
        _run_to_completion(fan_out, send)
    row = _batch_row(world, batch_id)
    assert row.status == ("cancelled" if ending == "cancelled" else "completed")
    assert (row.content_ciphertext, row.content_nonce, row.content_wrapped_key, row.content_kms_key_id) == (
        None,
        None,
        None,
        None,
    )


def test_cleanup_clears_the_content_of_batches_finished_long_enough_ago_in_bounded_rounds(
    fan_out, send, function, world, db, monkeypatch
):
    alice = world.user("alice")
    gone = world.user("gone", deleted=True)
    batches = []
    for _ in range(3):
        body = _batch_job(alice, [gone])
        fan_out.send(body)
        _run_to_completion(fan_out, send)
        batches.append(uuid.UUID(body["data"]["batch_id"]))
    with db.begin() as conn:  # two finished long ago, one just now
        conn.execute(
            update(MessageBatch)
            .where(MessageBatch.id.in_(batches[:2]))
            .values(completed_at=datetime.now(UTC) - timedelta(days=40))
        )
    monkeypatch.setenv("CLEANUP_BATCH_SIZE", "1")  # one batch per round: the rounds are bounded
    monkeypatch.setenv("CLEANUP_BATCH_CONTENT_RETENTION_DAYS", "30")
    config_module.get_settings.cache_clear()
    cleaner = function("CleanupFunction")

    def kept() -> dict[uuid.UUID, bool]:
        return {b: _batch_row(world, b).content_ciphertext is not None for b in batches}

    cleaner.send(job("cleanup", {"task": "all", "dry_run": True}))
    assert cleaner.drain() >= 1
    assert kept() == dict.fromkeys(batches, True)
    cleaner.send(job("cleanup", {"task": "all"}))
    assert cleaner.drain() >= 1
    assert kept() == {batches[0]: False, batches[1]: False, batches[2]: True}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"content": None}, "content is required"),
        ({"attempt": 1, "cursor": 0}, "carries no content"),
        ({"attempt": 1, "content": None}, "has a cursor"),
        ({"attempt": -1}, "greater than or equal to 0"),
    ],
)
def test_a_retry_job_carries_no_content_and_a_first_job_needs_it(data, error):
    base = {
        "batch_id": uuid.uuid4(),
        "sender_id": uuid.uuid4(),
        "content": CONTENT,
        "recipient_ids": [uuid.uuid4()],
    }
    with pytest.raises(ValidationError, match=error):
        BatchMessageData.model_validate(base | data)
    retry = BatchMessageData.model_validate(base | {"content": None, "attempt": 1, "cursor": 0})
    assert retry.content is None
