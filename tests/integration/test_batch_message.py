"""batch-message fan-out (docs/contracts.md §5, §6): a ledger row per recipient, one chunk per invocation,
send-message jobs with stable ids, continuations with DelaySeconds, frames to the sender, cancel."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any, ClassVar

import boto3
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from infra.seed import add_users
from shared import aws as shared_aws
from shared.db.models import BatchJob, ConversationParticipant, JobFailure, Message, MessageBatch
from shared.services.batches import cancel_batch, repository
from shared.services.batches.service import direct_conversation_id
from tests.conftest import ws_frames
from tests.faults import failing_calls
from tests.integration.test_statements import counting
from tests.world import World, job

pytestmark = pytest.mark.integration


@pytest.fixture
def fan_out(function, monkeypatch):
    monkeypatch.setenv("BATCH_SETTLE_CHECK_SECONDS", "0")  # continuations after the last chunk: no wait
    return function("BatchMessageFunction")


@pytest.fixture
def send(function, fan_out):
    return function("SendMessageFunction")


def _batch_job(sender: uuid.UUID, recipients: list[Any], **data: Any) -> dict[str, Any]:
    return job(
        "batch-message",
        {
            "batch_id": str(data.pop("batch_id", uuid.uuid4())),
            "sender_id": str(sender),
            "content": "the office is closed on Friday",
            "recipient_ids": [str(r) for r in recipients],
            **data,
        },
    )


def _counts(db, batch_id: Any) -> repository.Counts:
    with Session(db) as session:
        counts = repository.counts(session, uuid.UUID(str(batch_id)))
    assert counts is not None
    return counts


def _ledger(world: World, batch_id: Any) -> dict[uuid.UUID, tuple[str, str | None]]:
    rows = world.rows(select(BatchJob).where(BatchJob.batch_id == uuid.UUID(str(batch_id))))
    return {row.recipient_id: (row.status, row.error) for row in rows}


def _run_to_completion(fan_out, send, rounds: int = 20) -> None:
    for _ in range(rounds):
        handled = fan_out.drain(max_batches=1) + send.drain()
        if not handled:
            return


def _delays(sent: list[dict[str, Any]]) -> list[int]:
    return [entry.get("DelaySeconds", 0) for call in sent for entry in call["Entries"]]


class SqsCalls:
    """SendMessageBatch calls the functions make (their parameters), recorded on the container's client."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.client = shared_aws.client("sqs")

    def __enter__(self) -> list[dict[str, Any]]:
        self.client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", self._record)
        return self.calls

    def __exit__(self, *exc: object) -> None:
        self.client.meta.events.unregister("before-parameter-build.sqs.SendMessageBatch", self._record)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(params)


def test_each_recipient_gets_one_message_in_a_direct_conversation_found_or_created(fan_out, send, world, db):
    # Given alice, who already has a direct conversation with bob but none with carol
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    with_bob = world.conversation([alice, bob])
    body = _batch_job(alice, [bob, carol])
    # When her batch runs to its end
    fan_out.send(body)
    _run_to_completion(fan_out, send)
    # Then bob's message is in their conversation, carol's in a new direct one of the two of them
    [to_bob] = world.messages(with_bob)
    assert to_bob.content == "the office is closed on Friday" and to_bob.sender_id == alice
    created = direct_conversation_id(alice, carol)
    [to_carol] = world.messages(created)
    members = {
        row.user_id
        for row in world.rows(
            select(ConversationParticipant).where(ConversationParticipant.conversation_id == created)
        )
    }
    assert members == {alice, carol}
    # and the batch is complete, every count derived from its rows and written to its row
    counts = _counts(db, body["data"]["batch_id"])
    assert (counts.status, counts.total, counts.sent, counts.failed, counts.pending, counts.queued) == (
        "completed",
        2,
        2,
        0,
        0,
        0,
    )
    [batch] = world.rows(select(MessageBatch))
    assert (batch.sent, batch.status) == (2, "completed") and batch.completed_at is not None
    assert to_carol.id != to_bob.id


def test_unknown_and_deleted_recipients_are_counted_failed_with_a_reason_and_the_batch_goes_on(
    fan_out, send, world, db
):
    alice, bob, gone = world.user("alice"), world.user("bob"), world.user("gone", deleted=True)
    stranger = uuid.uuid4()
    body = _batch_job(alice, [stranger, gone, alice, bob], chunk_size=2)
    fan_out.send(body)
    _run_to_completion(fan_out, send)
    assert _ledger(world, body["data"]["batch_id"]) == {
        stranger: ("failed", "unknown-recipient"),
        gone: ("failed", "unknown-recipient"),
        alice: ("failed", "sender-is-recipient"),
        bob: ("sent", None),
    }
    counts = _counts(db, body["data"]["batch_id"])
    assert (counts.status, counts.sent, counts.failed) == ("completed_with_failures", 1, 3)


def test_one_chunk_per_invocation_and_the_continuation_waits_chunk_delay_seconds(fan_out, world, aws):
    alice = world.user("alice")
    recipients = [world.user(f"r{i}") for i in range(5)]
    body = _batch_job(alice, recipients, chunk_size=2, chunk_delay_seconds=30)
    fan_out.send(body)
    with SqsCalls() as calls:
        fan_out.poll_once()
    # one chunk: two send-message jobs in one SendMessageBatch call, then the continuation, delayed
    send_calls = [c for c in calls if c["QueueUrl"] == aws.queue_urls["SendMessageQueue"]]
    continuation_calls = [c for c in calls if c["QueueUrl"] == aws.queue_urls["BatchMessageQueue"]]
    assert [len(c["Entries"]) for c in send_calls] == [2]
    assert _delays(continuation_calls) == [30]
    [entry] = continuation_calls[0]["Entries"]
    continuation = json.loads(entry["MessageBody"])
    assert continuation["data"]["cursor"] == 2 and continuation["job_id"] != body["job_id"]
    assert _ledger(world, body["data"]["batch_id"])[recipients[0]] == ("queued", None)
    assert _ledger(world, body["data"]["batch_id"])[recipients[4]] == ("pending", None)
    sqs = boto3.client("sqs", region_name="us-east-1")
    attributes = sqs.get_queue_attributes(
        QueueUrl=aws.queue_urls["BatchMessageQueue"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


def test_sqs_calls_are_one_per_ten_sends_plus_one_continuation_per_chunk(fan_out, world, db, aws):
    alice = world.user("alice")
    recipients = [world.user(f"r{i}") for i in range(45)]
    fan_out.send(_batch_job(alice, recipients, chunk_size=25))
    with SqsCalls() as calls:
        fan_out.drain(max_batches=2)  # the two chunks
    sends = [c for c in calls if c["QueueUrl"] == aws.queue_urls["SendMessageQueue"]]
    assert sum(len(c["Entries"]) for c in sends) == 45
    assert len(sends) == 3 + 2  # ceil(25/10) + ceil(20/10)
    assert len([c for c in calls if c["QueueUrl"] == aws.queue_urls["BatchMessageQueue"]]) == 2


def test_a_redelivered_chunk_enqueues_nobody_twice(fan_out, send, world, db):
    alice = world.user("alice")
    recipients = [world.user(f"r{i}") for i in range(3)]
    body = _batch_job(alice, recipients, chunk_size=3)
    # the first delivery commits, but SQS refuses the sends: the job is retried, its sends still pending
    fan_out.send(body)
    refused = ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessageBatch")
    with failing_calls(shared_aws.client("sqs"), "SendMessageBatch", lambda: refused, times=1):
        _, response = fan_out.poll_once()
    assert len(response["batchItemFailures"]) == 1
    # the same chunk delivered twice more (a redelivery, a producer's resend)
    fan_out.send(body, body)
    _run_to_completion(fan_out, send)
    sent = world.rows(select(Message).where(Message.sender_id == alice))
    assert sorted(m.conversation_id for m in sent) == sorted(
        direct_conversation_id(alice, r) for r in recipients
    )
    counts = _counts(db, body["data"]["batch_id"])
    assert (counts.status, counts.sent) == ("completed", 3)


def test_a_second_first_job_for_a_started_batch_changes_nothing(fan_out, world, db):
    alice, bob = world.user("alice"), world.user("bob")
    body = _batch_job(alice, [bob], chunk_size=1)
    again = _batch_job(alice, [bob], chunk_size=1, batch_id=body["data"]["batch_id"])
    fan_out.send(body)
    fan_out.poll_once()
    with SqsCalls() as calls:
        fan_out.send(again)
        fan_out.poll_once()
        fan_out.poll_once()  # the resend, and the first job's own continuation (a check: bob is not sent yet)
    assert [c for c in calls if c["QueueUrl"] != fan_out.queue_url] == []  # no send-message job
    bodies = [json.loads(e["MessageBody"]) for c in calls for e in c["Entries"]]
    continuation_of_again = str(uuid.uuid5(uuid.UUID(again["job_id"]), "continuation"))
    assert bodies and all(b["job_id"] != continuation_of_again for b in bodies)  # only the first job's chain


def test_entries_sqs_keeps_refusing_are_counted_failed(fan_out, world, db, aws):
    alice = world.user("alice")
    recipients = [world.user(f"r{i}") for i in range(3)]
    body = _batch_job(alice, recipients, chunk_size=3)
    client = shared_aws.client("sqs")

    class Ok:
        status_code = 200
        headers: ClassVar[dict[str, str]] = {}

    last: dict[str, Any] = {}

    def remember(params: dict[str, Any], **_: Any) -> None:
        last.update(params)

    def refuse_first_entry(**_: Any) -> Any:
        if last["QueueUrl"] != aws.queue_urls["SendMessageQueue"]:
            return None
        entries = last["Entries"]
        return Ok(), {
            "Successful": [{"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "x"} for e in entries[1:]],
            "Failed": [{"Id": entries[0]["Id"], "SenderFault": True, "Code": "InvalidParameterValue"}],
        }

    fan_out.send(body)
    client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", remember)
    client.meta.events.register("before-call.sqs.SendMessageBatch", refuse_first_entry)
    try:
        _, response = fan_out.poll_once()
    finally:
        client.meta.events.unregister("before-call.sqs.SendMessageBatch", refuse_first_entry)
        client.meta.events.unregister("before-parameter-build.sqs.SendMessageBatch", remember)
    assert response == {"batchItemFailures": []}
    statuses = sorted(_ledger(world, body["data"]["batch_id"]).values(), key=str)
    assert statuses == [("failed", "enqueue-failed"), ("queued", None), ("queued", None)]


def test_statements_per_chunk_do_not_grow_with_its_size(fan_out, world, db):
    counts: list[int] = []
    for size in (2, 300):
        with db.begin() as conn:
            recipients = add_users(conn, [f"r{i}" for i in range(size)])
        alice = world.user("alice")
        if counts:
            fan_out.sqs.purge_queue(QueueUrl=fan_out.queue_url)  # the previous batch's continuation
        fan_out.send(_batch_job(alice, recipients, chunk_size=size))
        with counting(db) as statements:
            _, response = fan_out.poll_once()
        assert response == {"batchItemFailures": []}
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
    assert counts[0] <= 14


def test_the_sender_gets_a_progress_frame_per_chunk_and_one_completed_frame(fan_out, send, world, db):
    alice = world.user("alice")
    device = world.connect(alice)
    recipients = [world.user(f"r{i}") for i in range(4)]
    body = _batch_job(alice, recipients, chunk_size=2)
    fan_out.send(body)
    fan_out.poll_once()
    fan_out.poll_once()
    progress = [f for f in ws_frames(device) if f["type"] == "batch.progress"]
    assert [f["batch"]["queued"] for f in progress] == [2, 4]
    assert set(progress[0]["batch"]) >= {
        "id",
        "status",
        "total",
        "pending",
        "queued",
        "sent",
        "failed",
        "percent",
    }
    assert progress[0]["batch"]["pending"] == 2
    _run_to_completion(fan_out, send)
    completed = [f for f in ws_frames(device) if f["type"] == "batch.completed"]
    assert len(completed) == 1
    assert completed[0]["batch"] | {"started_at": None, "finished_at": None} == {
        "id": body["data"]["batch_id"],
        "status": "completed",
        "total": 4,
        "pending": 0,
        "queued": 0,
        "sent": 4,
        "failed": 0,
        "cancelled": 0,
        "percent": 100.0,
        "started_at": None,
        "finished_at": None,
    }


def test_a_cancelled_batch_stops_and_counts_its_pending_recipients_cancelled(fan_out, send, world, db):
    from shared.bootstrap import dependencies

    alice = world.user("alice")
    device = world.connect(alice)
    recipients = [world.user(f"r{i}") for i in range(5)]
    body = _batch_job(alice, recipients, chunk_size=2)
    fan_out.send(body)
    fan_out.poll_once()  # first chunk: 2 queued
    view = cancel_batch(dependencies(), uuid.UUID(body["data"]["batch_id"]))
    assert view is not None and (view["status"], view["cancelled"], view["queued"]) == ("cancelled", 3, 2)
    with SqsCalls() as calls:
        _run_to_completion(fan_out, send)
    # the continuation stopped: nobody else was enqueued; the two already queued were still sent
    assert all(c["QueueUrl"] != fan_out.queue_url for c in calls)
    counts = _counts(db, body["data"]["batch_id"])
    assert (counts.status, counts.sent, counts.cancelled, counts.pending) == ("cancelled", 2, 3, 0)
    assert [f["batch"]["status"] for f in ws_frames(device) if f["type"] == "batch.completed"] == [
        "cancelled"
    ]
    # cancelling again changes nothing
    again = cancel_batch(dependencies(), uuid.UUID(body["data"]["batch_id"]))
    assert again is not None and again["cancelled"] == 3
    assert cancel_batch(dependencies(), uuid.uuid4()) is None


def test_a_batch_whose_sender_does_not_exist_is_dead_lettered(fan_out, world, db):
    bob = world.user("bob")
    fan_out.send(_batch_job(uuid.uuid4(), [bob]))
    _, response = fan_out.poll_once()
    assert response == {"batchItemFailures": []}
    [failure] = world.rows(select(JobFailure))
    assert (failure.job_type, failure.reason) == ("batch-message", "unknown-entity")
    assert world.rows(select(MessageBatch)) == []


def test_recipients_without_an_outcome_are_counted_failed_after_the_settle_timeout(fan_out, world, db):
    alice, bob = world.user("alice"), world.user("bob")
    body = _batch_job(alice, [bob])
    fan_out.send(body)
    fan_out.poll_once()  # the only chunk: bob queued; his send-message job is never processed
    batch_id = uuid.UUID(body["data"]["batch_id"])
    assert _counts(db, batch_id).status == "running"
    with db.begin() as conn:
        conn.execute(
            update(MessageBatch)
            .where(MessageBatch.id == batch_id)
            .values(enqueued_at=MessageBatch.enqueued_at - timedelta(hours=2))
        )
    fan_out.poll_once()  # the check after the timeout
    assert _ledger(world, batch_id) == {bob: ("failed", "no-outcome")}
    assert _counts(db, batch_id).status == "completed_with_failures"


def test_send_message_settles_its_ledger_row_and_never_writes_the_batch_row(fan_out, send, world, db):
    alice, bob = world.user("alice"), world.user("bob")
    body = _batch_job(alice, [bob])
    fan_out.send(body)
    fan_out.poll_once()
    [before] = world.rows(select(MessageBatch))
    send.drain()
    [after] = world.rows(select(MessageBatch))
    assert after == before  # the batch row is written only by the batch function
    assert _ledger(world, body["data"]["batch_id"]) == {bob: ("sent", None)}
