"""What an adversarial run of the runner found, each pinned by a test: secrets and content in logs, a dead
session reused after the database dropped mid-effect, two copies of a job performing its effects twice, FIFO
records skipped after a failure coming back without backoff, failures that left no trace, clocks from the
future."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pg8000.dbapi
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import create_engine, select, text

from infra.lambda_shapes import LocalLambdaContext, body_event, queue_arn
from shared import bootstrap
from shared.db.models import JobFailure, JobInbox, MessageDelivery, MessageRead
from tests.conftest import WEBSOCKET_ENDPOINT, queue_messages, ws_frames
from tests.faults import failing_calls, failing_statements, mentions
from tests.world import job

pytestmark = pytest.mark.integration

SECRET = "the-secret-plans-for-tuesday"
PHONE = "+15555550123"


@pytest.fixture
def send(function):
    return function("SendMessageFunction")


def _all_logs(capsys, caplog) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err + " ".join(str(record.__dict__) for record in caplog.records)


def test_failing_jobs_never_log_message_content_or_contact_data(
    send, function, world, db, aws, capsys, caplog
):
    alice, bob = world.user("alice"), world.user("bob", phone=PHONE, email="bob@example.com")
    conversation = world.conversation([alice, bob])
    caplog.set_level("INFO")  # what production emits (LOG_LEVEL INFO): every library's INFO and up, ours too
    # 1. The database refuses the row, and its error quotes it ("Failing row contains (... content ...)")
    with db.begin() as conn:
        conn.execute(text(f"ALTER TABLE messages ADD CONSTRAINT no_secrets CHECK (content <> '{SECRET}')"))
    try:
        send.send(job("send-message", world.send_message_data(conversation, alice, SECRET)))
        assert send.poll_once()[1] == {"batchItemFailures": []}  # a data error is permanent
    finally:
        with db.begin() as conn:
            conn.execute(text("ALTER TABLE messages DROP CONSTRAINT no_secrets"))
    [failure] = world.rows(select(JobFailure))
    assert (failure.reason, failure.error_class) == ("invalid-data", "InvalidData")
    assert SECRET not in failure.detail
    # 2. A bug whose own message quotes the content
    with failing_statements(db, lambda: RuntimeError(f"cannot handle {SECRET}"), when=mentions(conversation)):
        send.send(job("send-message", world.send_message_data(conversation, alice, SECRET)))
        assert len(send.poll_once()[1]["batchItemFailures"]) == 1
    # 3. SMS refused with a provider message that quotes the phone number
    notifier = function("NotificationFunction")
    refused = ClientError(
        {"Error": {"Code": "InternalError", "Message": f"cannot deliver to {PHONE}"}}, "Publish"
    )
    with failing_calls(bootstrap.dependencies().aws.sns(), "Publish", lambda: refused):
        notifier.send(
            job(
                "notification",
                {
                    "user_id": str(bob),
                    "category": "system",
                    "title": "t",
                    "body": SECRET,
                    "channels": ["sms"],
                },
            )
        )
        assert len(notifier.poll_once()[1]["batchItemFailures"]) == 1
    # 4. The database fails on the row that holds the phone number (SQLAlchemy's error text quotes parameters)
    with failing_statements(
        db, lambda: pg8000.dbapi.DatabaseError({"C": "XX000", "M": "internal error"}), when=mentions(PHONE)
    ):
        notifier.send(
            job(
                "notification",
                {"user_id": str(bob), "category": "system", "title": "t", "body": "b", "channels": ["sms"]},
            )
        )
        assert len(notifier.poll_once()[1]["batchItemFailures"]) == 1
    logged = _all_logs(capsys, caplog)
    assert "job failed, will retry" in logged and "job dead-lettered" in logged
    for needle in (SECRET, PHONE.lstrip("+")):
        where = logged.find(needle)
        assert where < 0, logged[max(0, where - 300) : where + 100]
    assert PHONE not in logged and PHONE.lstrip("+") not in logged


def test_a_database_that_drops_mid_effect_is_database_unavailable_and_the_job_completes_later(
    send, world, db, caplog
):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    gone = world.connect(bob, "bob-gone")
    data = world.send_message_data(conversation, alice)
    send.send(job("send-message", data))
    api = bootstrap.dependencies().aws.websocket(WEBSOCKET_ENDPOINT)
    gone_error = ClientError(
        {"Error": {"Code": "GoneException"}, "ResponseMetadata": {"HTTPStatusCode": 410}}, "PostToConnection"
    )
    # The post answers 410, and the connection drops as the gone connection is deleted
    with (
        failing_calls(api, "PostToConnection", lambda: gone_error),
        failing_statements(db, lambda: pg8000.dbapi.InterfaceError("network error"), when=mentions(gone)),
        caplog.at_level("WARNING"),
    ):
        event, response = send.poll_once()
    assert len(response["batchItemFailures"]) == 1
    [retried] = [r for r in caplog.records if r.getMessage() == "job failed, will retry"]
    assert retried.__dict__["error_class"] == "DatabaseUnavailable"
    # The message itself is committed; on redelivery the effect completes
    assert len(world.messages(conversation)) == 1
    for record in event["Records"]:
        send.sqs.change_message_visibility(
            QueueUrl=send.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
        )
    assert send.poll_once()[1] == {"batchItemFailures": []}
    [inbox] = world.rows(select(JobInbox))
    assert (inbox.effects_pending, inbox.completed_at is not None) == ([], True)


def test_two_concurrent_copies_of_a_job_perform_its_effects_once(send, world, aws):
    # Given many jobs, each delivered twice at the same moment to two workers
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    device = world.connect(bob)
    rounds = 25
    for _ in range(rounds):
        body = json.dumps(job("send-message", world.send_message_data(conversation, alice)))
        barrier = threading.Barrier(2)
        responses: list[dict[str, Any]] = []

        def worker(
            body: str = body, barrier: threading.Barrier = barrier, responses: list[Any] = responses
        ) -> None:
            event = body_event(body, queue_arn(send.queue_url), group_id=str(conversation))
            barrier.wait()
            responses.append(send.handler(event, LocalLambdaContext()))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(response == {"batchItemFailures": []} for response in responses)
    # Then every effect happened once: one frame per message, one indexing job per message
    frames = [f for f in ws_frames(device) if f["type"] == "message.new"]
    assert len(frames) == rounds
    assert len({f["message"]["id"] for f in frames}) == rounds
    assert len(queue_messages(aws, "IndexingQueue", max_messages=100)) == rounds


def test_fifo_records_skipped_after_a_failure_come_back_with_the_failures_backoff(
    send, world, db, monkeypatch
):
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    bodies = [job("send-message", world.send_message_data(conversation, alice, f"m{i}")) for i in range(3)]
    send.send(*bodies)
    with failing_statements(db, lambda: ConnectionError("injected"), when=mentions(conversation)):
        event, response = send.poll_once()
    assert len(event["Records"]) == 3 and len(response["batchItemFailures"]) == 3
    # None of the three is visible at once: the two skipped ones wait with the one that failed
    again, _ = send.poll_once()
    assert again["Records"] == []


def test_a_failure_while_dead_lettering_is_logged_counted_and_retried(send, world, caplog, capsys):
    # Given a body that can never be a job, while the database (where its failure is recorded) is down
    send.send("not a job", group_id="g")
    dead_engine = create_engine("postgresql+pg8000://nobody@127.0.0.1:9/none", connect_args={"timeout": 1})
    bootstrap.use(engine=dead_engine)
    with caplog.at_level("INFO"):
        event, response = send.poll_once()
    # Then it is retried, with a log line that names the SQS message and why, and a metric
    assert len(response["batchItemFailures"]) == 1
    [logged] = [r.__dict__ for r in caplog.records if r.getMessage() == "job failed, will retry"]
    assert logged["message_id"] == event["Records"][0]["messageId"]
    assert (logged["error_class"], logged["reason"]) == ("DatabaseUnavailable", "database-unavailable")
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any("JobsRetried" in line for line in metrics)


def test_a_receipt_from_the_future_is_dated_now(function, world, db):
    send, confirm = function("SendMessageFunction"), function("DeliveryConfirmationFunction")
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    data = world.send_message_data(conversation, alice)
    send.send(job("send-message", data))
    send.poll_once()
    confirm.send(
        job(
            "delivery-confirmation",
            {
                "recipient_id": str(bob),
                "status": "read",
                "confirmed_at": "2099-01-01T00:00:00Z",
                "message_ids": [data["message_id"]],
            },
        )
    )
    assert confirm.poll_once()[1] == {"batchItemFailures": []}
    soon = datetime.now(UTC) + timedelta(minutes=6)
    [delivery] = world.rows(select(MessageDelivery))
    [read] = world.rows(select(MessageRead))
    assert delivery.read_at < soon and delivery.delivered_at < soon and read.read_at < soon


def test_a_function_missing_a_setting_fails_before_touching_any_record_and_says_which(
    send, world, monkeypatch, caplog
):
    from shared.config import get_settings
    from shared.errors import ConfigurationError

    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    send.send(job("send-message", world.send_message_data(conversation, alice)))
    monkeypatch.delenv("DEAD_LETTER_QUEUE_URL")
    monkeypatch.delenv("NOTIFICATION_QUEUE_URL")
    get_settings.cache_clear()
    with caplog.at_level("ERROR"), pytest.raises(ConfigurationError) as refused:
        send.poll_once()
    assert "DEAD_LETTER_QUEUE_URL" in str(refused.value) and "NOTIFICATION_QUEUE_URL" in str(refused.value)
    [logged] = [r for r in caplog.records if r.getMessage() == "function is not configured"]
    assert "NOTIFICATION_QUEUE_URL" in logged.__dict__["error"]
    assert world.messages(conversation) == []


def test_dead_lettering_copies_binary_and_number_attributes_faithfully(send, aws):
    # Given a poison message with a Binary, a Number and a custom-typed String attribute
    send.sqs.send_message(
        QueueUrl=send.queue_url,
        MessageBody="nonsense",
        MessageGroupId="g",
        MessageDeduplicationId=str(uuid.uuid4()),
        MessageAttributes={
            "Signature": {"DataType": "Binary", "BinaryValue": b"\x00\xffsig"},
            "Priority": {"DataType": "Number", "StringValue": "7"},
            "Trace": {"DataType": "String.w3c", "StringValue": "00-abc-def-01"},
        },
    )
    # When it is dead-lettered
    assert send.poll_once()[1] == {"batchItemFailures": []}
    # Then the DLQ holds it with every attribute as it was sent, next to the error attributes
    [dead] = queue_messages(aws, "SendMessageDLQ")
    attributes = dead["MessageAttributes"]
    assert attributes["Signature"] == {"DataType": "Binary", "BinaryValue": b"\x00\xffsig"}
    assert attributes["Priority"] == {"DataType": "Number", "StringValue": "7"}
    assert attributes["Trace"] == {"DataType": "String.w3c", "StringValue": "00-abc-def-01"}
    assert attributes["ErrorReason"]["StringValue"] == "invalid-job"


def test_a_record_deferred_near_the_deadline_spends_no_receive(function, world, monkeypatch):
    # Given a receipt job on a standard queue, received once while the invocation is almost out of time
    confirm = function("DeliveryConfirmationFunction")
    bob = world.user()
    body = job(
        "delivery-confirmation",
        {
            "recipient_id": str(bob),
            "status": "delivered",
            "confirmed_at": datetime.now(UTC).isoformat(),
            "message_ids": [str(uuid.uuid4())],
        },
    )
    confirm.send(body)
    monkeypatch.setenv("DEADLINE_MARGIN_MS", str(10**9))
    from shared.config import get_settings

    get_settings.cache_clear()
    event, response = confirm.poll_once()
    # Then it is not reported failed: it went back to the queue as a new message, not started
    assert len(event["Records"]) == 1 and response == {"batchItemFailures": []}
    monkeypatch.setenv("DEADLINE_MARGIN_MS", "0")
    get_settings.cache_clear()
    again, response = confirm.poll_once()
    # And its next delivery is its first receive, with its body intact
    [record] = again["Records"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert json.loads(record["body"]) == body
