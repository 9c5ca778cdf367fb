"""Hostile bodies on every queue: whatever a producer sends, the record ends processed or permanently
dead-lettered (body intact, error attributes, a failure row) — never retried until SQS gives up on it.

Property-based: hypothesis builds arbitrary text, arbitrary JSON (NaN included), valid envelopes with
arbitrary data, and the shapes an adversarial run found looping (NUL characters, nesting thousands deep,
integers of thousands of digits, an unhashable ``schema_version``, non-finite numbers in notification
data)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.world import job

pytestmark = pytest.mark.integration

FUNCTIONS = {
    "send-message": ("SendMessageFunction", "SendMessageDLQ"),
    "delivery-confirmation": ("DeliveryConfirmationFunction", "DeliveryConfirmationDLQ"),
    "notification": ("NotificationFunction", "NotificationDLQ"),
    "indexing": ("IndexingFunction", "IndexingDLQ"),
}
OUTCOMES: Counter[str] = Counter()

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["", "\x00", "a\x00b", "1" * 5000, str(uuid.uuid4())])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def _envelope(job_type: str, data: Any, **extra: Any) -> str:
    body = {
        "job_id": str(uuid.uuid4()),
        "job_type": job_type,
        "schema_version": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "data": data,
        **extra,
    }
    return _dumps(body)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def bodies(job_type: str, valid_data: dict[str, Any]) -> st.SearchStrategy[str]:
    """Bodies for one queue: wholly arbitrary, structurally arbitrary, valid jobs with one field spoiled."""
    spoiled = st.builds(
        lambda key, value: _envelope(job_type, {**valid_data, key: value}),
        st.sampled_from([*valid_data, "extra"]),
        json_values,
    )
    envelope_field = st.builds(
        lambda key, value: _dumps({**json.loads(_envelope(job_type, valid_data)), key: value}),
        st.sampled_from(["job_id", "schema_version", "created_at", "correlation_id", "job_type", "data"]),
        json_values,
    )
    adversarial = st.sampled_from(
        [
            "[" * 5000 + "]" * 5000,
            _envelope(job_type, valid_data).replace(
                '"data": {', '"data": {"d": ' + "[" * 3000 + "]" * 3000 + ",", 1
            ),
            _envelope(job_type, {**valid_data, "n": int("9" * 4000)}),
            _envelope(job_type, valid_data, schema_version=[1]),
            _envelope(job_type, valid_data, schema_version={"v": 1}),
            _envelope(job_type, {**valid_data, "content": "hi\x00there"}),
            _envelope(job_type, {**valid_data, "data": {"x": float("nan")}}),
            _envelope(job_type, {**valid_data, "data": {"x": float("inf")}}),
            _envelope(job_type, {**valid_data, "data": {"x": _nested(20)}}),
            _envelope(job_type, valid_data).replace("1", "1e999", 1),
            '{"job_id": "\\ud800"}',
            "\x00",
            "",
        ]
    )
    # Valid jobs whose free text is arbitrary (and, for send-message, a new message each time): processed, or
    # refused for what the text holds (a NUL, a lone surrogate), or by the database as data
    text_field = {"send-message": "content", "notification": "body"}.get(job_type)
    valid_text = (
        st.builds(
            lambda text, message_id: _envelope(
                job_type, {**valid_data, text_field: text, **_new_message(job_type, message_id)}
            ),
            st.text(min_size=1, max_size=300),
            st.uuids(),
        )
        if text_field
        else st.builds(lambda: _envelope(job_type, valid_data))
    )
    return (
        st.text(max_size=200)
        | json_values.map(_dumps)
        | spoiled
        | envelope_field
        | adversarial
        | valid_text
        | valid_text
    )


def _new_message(job_type: str, message_id: uuid.UUID) -> dict[str, Any]:
    return {"message_id": str(message_id)} if job_type == "send-message" else {}


def _valid_data(job_type: str, world) -> dict[str, Any]:
    alice, bob = world.user("alice"), world.user("bob", phone="+15555550100", email="bob@example.com")
    conversation = world.conversation([alice, bob])
    return {
        "send-message": world.send_message_data(conversation, alice, "hello"),
        "delivery-confirmation": {
            "recipient_id": str(bob),
            "status": "read",
            "confirmed_at": datetime.now(UTC).isoformat(),
            "message_ids": [str(uuid.uuid4())],
        },
        "notification": {
            "user_id": str(bob),
            "category": "system",
            "title": "t",
            "body": "b",
            "channels": ["in_app"],
        },
        "indexing": {"message_id": str(uuid.uuid4()), "operation": "update"},
    }[job_type]


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=30
        ).get("Messages", [])
        if not batch:
            return seen
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        seen.extend(batch)


@pytest.mark.parametrize("job_type", list(FUNCTIONS))
def test_every_body_ends_processed_or_permanently_dead_lettered(job_type, function, world, aws):
    logical_id, dlq = FUNCTIONS[job_type]
    harness = function(logical_id)
    valid = _valid_data(job_type, world)
    dlq_url = aws.queue_urls[dlq]

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=bodies(job_type, valid))
    def check(body: str) -> None:
        harness.send(body, group_id=str(uuid.uuid4()))
        event, response = harness.poll_once()
        assert len(event["Records"]) == 1
        # Never retried: nothing is reported failed
        assert response == {"batchItemFailures": []}, body[:200]
        dead = _drain(harness.sqs, dlq_url)
        if not dead:
            OUTCOMES[f"{job_type}: processed"] += 1
            return
        [message] = dead
        assert message["Body"] == body
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes["JobType"] == job_type and attributes["ErrorClass"] and attributes["ErrorReason"]
        OUTCOMES[f"{job_type}: dead-lettered {attributes['ErrorReason']}"] += 1

    check()
    assert sum(n for key, n in OUTCOMES.items() if key.startswith(f"{job_type}:")) >= 60
    print(dict(sorted(OUTCOMES.items())))


def test_a_stale_job_is_refused_and_a_redriven_one_runs(function, world, aws):
    send = function("SendMessageFunction")
    alice, bob = world.user(), world.user()
    conversation = world.conversation([alice, bob])
    old = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    data = world.send_message_data(conversation, alice, "from last year")
    stale = job("send-message", data, created_at=old)
    send.send(stale)
    assert send.poll_once()[1] == {"batchItemFailures": []}
    [dead] = _drain(send.sqs, aws.queue_urls["SendMessageDLQ"])
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "stale"
    assert world.messages(conversation) == []
    # The same job, redriven on purpose (the management API marks it), runs
    send.sqs.send_message(
        QueueUrl=send.queue_url,
        MessageBody=json.dumps(stale),
        MessageGroupId=str(conversation),
        MessageDeduplicationId=str(uuid.uuid4()),
        MessageAttributes={"RedriveId": {"DataType": "String", "StringValue": "r-1"}},
    )
    assert send.poll_once()[1] == {"batchItemFailures": []}
    assert [m.content for m in world.messages(conversation)] == ["from last year"]
