"""The job runner (docs/contracts.md §3), exercised through the real handlers: partial batches, idempotency,
post-commit effects, classification of failures, backoff and the DLQ."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import create_engine, func, select

from shared import bootstrap
from shared.db.models import JobFailure, JobInbox, Message
from shared.errors import TransientJobError
from tests.conftest import WEBSOCKET_ENDPOINT, queue_messages, ws_frames
from tests.faults import failing_calls, failing_statements, mentions
from tests.world import job

pytestmark = pytest.mark.integration


@pytest.fixture
def send(function):
    return function("SendMessageFunction")


def _make_visible(send, event):
    """Let time pass: the backoff delay is over for every record of ``event``."""
    for record in event["Records"]:
        send.sqs.change_message_visibility(
            QueueUrl=send.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
        )


def test_one_invalid_body_in_a_batch_of_ten_is_dead_lettered_and_nothing_is_retried(send, world, aws):
    # Given ten jobs in ten conversations, the seventh not even JSON
    bodies = []
    for i in range(10):
        alice, bob = world.user(), world.user()
        conversation = world.conversation([alice, bob])
        bodies.append(json.dumps(job("send-message", world.send_message_data(conversation, alice, f"m{i}"))))
    bodies[6] = '{"job_id": "not json'
    send.send(*bodies[:6])
    send.send(bodies[6], group_id="poison")
    send.send(*bodies[7:])
    # When the batch is processed
    event, response = send.poll_once()
    # Then nine are processed, nothing is retried, the poison body is in the DLQ, intact, with its error
    assert len(event["Records"]) == 10
    assert response == {"batchItemFailures": []}
    assert world.rows(select(func.count()).select_from(Message))[0][0] == 9
    [dead] = queue_messages(aws, "SendMessageDLQ")
    assert dead["Body"] == bodies[6]
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["ErrorClass"] == "InvalidJob"
    assert attributes["ErrorReason"] == "invalid-job"
    assert attributes["JobType"] == "send-message"
    assert attributes["Attempt"] == "1"
    assert "not JSON" in attributes["ErrorMessage"]
    [failure] = world.rows(select(JobFailure))
    assert (failure.reason, failure.permanent, failure.job_id) == ("invalid-job", True, None)
    assert queue_messages(aws, "SendMessageQueue") == []


@pytest.mark.parametrize(
    ("mutate", "reason", "error_class"),
    [
        (lambda b: {**b, "schema_version": 2}, "unsupported-schema-version", "UnsupportedSchemaVersion"),
        (lambda b: {**b, "job_type": "indexing"}, "invalid-job", "InvalidJob"),
        (lambda b: {**b, "data": {**b["data"], "content": ""}}, "invalid-job", "InvalidJob"),
        (lambda b: {**b, "data": {**b["data"], "content": "x" * 16385}}, "invalid-job", "InvalidJob"),
        (lambda b: {**b, "data": {**b["data"], "sender_id": "nobody"}}, "invalid-job", "InvalidJob"),
        (lambda b: {k: v for k, v in b.items() if k != "job_id"}, "invalid-job", "InvalidJob"),
        (lambda b: [b], "invalid-job", "InvalidJob"),
    ],
)
def test_bad_input_is_a_permanent_failure_with_a_clear_error(send, world, aws, mutate, reason, error_class):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    body = mutate(job("send-message", world.send_message_data(conversation, alice)))
    send.send(json.dumps(body), group_id="bad")
    _, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    [dead] = queue_messages(aws, "SendMessageDLQ")
    assert json.loads(dead["Body"]) == body
    assert dead["MessageAttributes"]["ErrorClass"]["StringValue"] == error_class
    [failure] = world.rows(select(JobFailure))
    assert failure.reason == reason
    assert "xxxxxxxx" not in failure.detail  # the offending content is never echoed


def test_database_unavailable_fails_every_record_commits_nothing_and_redelivery_succeeds(
    send, world, monkeypatch, db
):
    # Given three jobs
    conversations = []
    for _ in range(3):
        alice, bob = world.user(), world.user()
        conversations.append(world.conversation([alice, bob]))
        send.send(job("send-message", world.send_message_data(conversations[-1], alice)))
    # When the database is unreachable
    dead_engine = create_engine("postgresql+pg8000://nobody@127.0.0.1:9/none", connect_args={"timeout": 1})
    bootstrap.use(engine=dead_engine)
    event, response = send.poll_once()
    # Then every record is reported failed and nothing is committed
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(
        r["messageId"] for r in event["Records"]
    )
    bootstrap.use(engine=db)
    assert world.rows(select(func.count()).select_from(Message))[0][0] == 0
    # And the records are held back (backoff) rather than redelivered at once
    again, _ = send.poll_once()
    assert again["Records"] == []
    # When the database is back and the backoff has passed, all succeed on redelivery
    _make_visible(send, event)
    redelivered, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    assert {r["attributes"]["ApproximateReceiveCount"] for r in redelivered["Records"]} == {"2"}
    assert world.rows(select(func.count()).select_from(Message))[0][0] == 3


def test_fifo_failure_in_one_conversation_does_not_hold_back_another(send, world, db):
    alice, bob = world.user(), world.user()
    stuck, flowing = world.conversation([alice, bob]), world.conversation([alice, bob])
    stuck_jobs = [job("send-message", world.send_message_data(stuck, alice, f"s{i}")) for i in range(2)]
    flowing_jobs = [job("send-message", world.send_message_data(flowing, bob, f"f{i}")) for i in range(2)]
    send.send(stuck_jobs[0], flowing_jobs[0], stuck_jobs[1], flowing_jobs[1])
    # Every statement about the stuck conversation fails
    with failing_statements(db, lambda: TransientJobError("injected"), when=mentions(stuck)):
        event, response = send.poll_once()
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    by_id = {r["messageId"]: json.loads(r["body"])["job_id"] for r in event["Records"]}
    assert {by_id[m] for m in failed} == {j["job_id"] for j in stuck_jobs}
    assert [m.content for m in world.messages(flowing)] == ["f0", "f1"]
    assert world.messages(stuck) == []


def test_post_commit_effects_are_redone_without_redoing_the_transaction(send, world, aws):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    bob_device = world.connect(bob)
    data = world.send_message_data(conversation, alice)
    send.send(job("send-message", data))
    # First delivery: committed, indexing enqueued, the post to Bob's device failed -> retried
    unavailable = ClientError({"Error": {"Code": "InternalServerErrorException"}}, "PostToConnection")
    api = bootstrap.dependencies().aws.websocket(WEBSOCKET_ENDPOINT)
    with failing_calls(api, "PostToConnection", lambda: unavailable, times=1) as failed:
        event, response = send.poll_once()
    assert failed == [1]
    assert len(response["batchItemFailures"]) == 1
    assert len(world.messages(conversation)) == 1
    [inbox] = world.rows(select(JobInbox))
    assert [e["kind"] for e in inbox.effects_pending] == ["message.new"]
    assert inbox.completed_at is None
    # Redelivery: only the broadcast is redone
    _make_visible(send, event)
    _, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    assert len(world.messages(conversation)) == 1
    assert [f["type"] for f in ws_frames(bob_device)] == ["message.new"]
    assert len(queue_messages(aws, "IndexingQueue")) == 1
    [inbox] = world.rows(select(JobInbox))
    assert (inbox.effects_pending, inbox.completed_at is not None) == ([], True)


def test_transient_failure_on_the_last_receive_is_recorded_before_sqs_dead_letters_it(
    send, world, monkeypatch, db
):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "1")
    from shared.config import get_settings

    get_settings.cache_clear()
    body = job("send-message", world.send_message_data(conversation, alice))
    send.send(body)
    with failing_statements(db, lambda: TransientJobError("still down"), when=mentions(conversation)):
        _, response = send.poll_once()
    assert len(response["batchItemFailures"]) == 1
    [failure] = world.rows(select(JobFailure))
    assert (failure.permanent, failure.reason, str(failure.job_id)) == (
        False,
        "retries-exhausted",
        body["job_id"],
    )


def test_sqs_moves_a_record_failing_past_max_receive_count_to_the_dlq_with_its_body(send, world, aws, db):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    body = job("send-message", world.send_message_data(conversation, alice))
    send.send(body)
    max_receive = int(aws.function_environment(send.spec)["MAX_RECEIVE_COUNT"])
    with failing_statements(db, lambda: RuntimeError("a bug"), when=mentions(conversation)):
        for _ in range(max_receive):
            event, response = send.poll_once()
            assert len(response["batchItemFailures"]) == 1
            _make_visible(send, event)
        event, _ = send.poll_once()
    assert event["Records"] == []
    [dead] = queue_messages(aws, "SendMessageDLQ")
    assert json.loads(dead["Body"]) == body


def test_records_are_not_started_when_the_deadline_is_near(send, world, monkeypatch):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    send.send(job("send-message", world.send_message_data(conversation, alice)))
    monkeypatch.setenv("DEADLINE_MARGIN_MS", str(10**9))
    from shared.config import get_settings

    get_settings.cache_clear()
    _, response = send.poll_once()
    assert len(response["batchItemFailures"]) == 1
    assert world.messages(conversation) == []
    assert world.rows(select(JobFailure)) == []
    # Not penalised with backoff: visible again at once
    monkeypatch.setenv("DEADLINE_MARGIN_MS", "0")
    get_settings.cache_clear()
    again, response = send.poll_once()
    assert len(again["Records"]) == 1 and response == {"batchItemFailures": []}


def test_dead_lettering_keeps_the_original_message_attributes(send, world, aws):
    sqs = boto3.client("sqs", region_name="us-east-1")
    sqs.send_message(
        QueueUrl=send.queue_url,
        MessageBody="nonsense",
        MessageGroupId="g",
        MessageDeduplicationId="d1",
        MessageAttributes={"TraceParent": {"DataType": "String", "StringValue": "00-abc-def-01"}},
    )
    send.poll_once()
    [dead] = queue_messages(aws, "SendMessageDLQ")
    assert dead["Body"] == "nonsense"
    assert dead["MessageAttributes"]["TraceParent"]["StringValue"] == "00-abc-def-01"
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "invalid-job"


def test_a_unit_of_work_rolls_back_unless_committed(db, world):
    from sqlalchemy.orm import sessionmaker

    from shared.db.models import User
    from shared.db.uow import UnitOfWork

    user = uuid.uuid4()
    with UnitOfWork(sessionmaker(db)) as uow:
        uow.session.add(User(id=user, display_name="ghost"))
        uow.session.flush()
    assert world.rows(select(User).where(User.id == user)) == []
    with UnitOfWork(sessionmaker(db)) as uow:
        uow.session.add(User(id=user, display_name="real"))
        uow.commit()
    assert len(world.rows(select(User).where(User.id == user))) == 1
