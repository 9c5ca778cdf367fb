"""The job contract (DESIGN §3): limits, exactly-one rules, versions, and the published JSON Schemas."""

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InvalidJob, UnsupportedSchemaVersion
from shared.jobs import JobType, json_schemas, parse_job

ROOT = Path(__file__).resolve().parents[2]


def body(job_type, data, **extra):
    return json.dumps(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": job_type,
            "schema_version": 1,
            "created_at": datetime.now(UTC).isoformat(),
            "data": data,
            **extra,
        }
    )


def confirmation(**data):
    return body(
        "delivery-confirmation",
        {"recipient_id": str(uuid.uuid4()), "status": "read", "confirmed_at": "2026-11-29T10:00:00Z", **data},
    )


SAMPLES = {
    JobType.SEND_MESSAGE: {
        "message_id": str(uuid.uuid4()),
        "conversation_id": str(uuid.uuid4()),
        "sender_id": str(uuid.uuid4()),
        "content": "hi",
    },
    JobType.DELIVERY_CONFIRMATION: {
        "recipient_id": str(uuid.uuid4()),
        "status": "delivered",
        "confirmed_at": "2026-11-29T10:00:00Z",
        "message_ids": [str(uuid.uuid4())],
    },
    JobType.ENCRYPTION: {"message_id": str(uuid.uuid4()), "operation": "encrypt"},
    JobType.INDEXING: {"message_id": str(uuid.uuid4()), "operation": "delete"},
    JobType.BATCH_MESSAGE: {
        "batch_id": str(uuid.uuid4()),
        "sender_id": str(uuid.uuid4()),
        "content": "hi",
        "recipient_ids": [str(uuid.uuid4())],
    },
    JobType.CLEANUP: {"task": "all"},
    JobType.NOTIFICATION: {
        "user_id": str(uuid.uuid4()),
        "category": "message",
        "title": "t",
        "body": "b",
        "channels": ["push", "in_app"],
    },
}


@pytest.mark.parametrize("job_type", list(JobType))
def test_every_job_type_accepts_its_documented_shape(job_type):
    job = parse_job(body(job_type.value, SAMPLES[job_type], correlation_id="c-1"), job_type)
    assert job.job_type == job_type and job.correlation_id == "c-1"


def test_defaults_are_applied():
    send = parse_job(body("send-message", SAMPLES[JobType.SEND_MESSAGE]), JobType.SEND_MESSAGE)
    assert send.data.content_type == "text" and send.data.recipient_ids is None
    batch = parse_job(body("batch-message", SAMPLES[JobType.BATCH_MESSAGE]), JobType.BATCH_MESSAGE)
    assert (batch.data.chunk_size, batch.data.chunk_delay_seconds) == (100, 0)
    cleanup = parse_job(body("cleanup", SAMPLES[JobType.CLEANUP]), JobType.CLEANUP)
    assert (cleanup.data.hard_delete, cleanup.data.dry_run) == (False, False)


@pytest.mark.parametrize(
    "data",
    [
        {"message_ids": [str(uuid.uuid4())], "read_up_to": str(uuid.uuid4())},
        {},
        {"message_ids": []},
        {"message_ids": [str(uuid.uuid4()) for _ in range(501)]},
    ],
)
def test_confirmation_needs_exactly_one_target_within_limits(data):
    with pytest.raises(InvalidJob):
        parse_job(confirmation(**data), JobType.DELIVERY_CONFIRMATION)


@pytest.mark.parametrize(
    ("job_type", "override"),
    [
        (JobType.SEND_MESSAGE, {"content": ""}),
        (JobType.SEND_MESSAGE, {"content": "x" * 16_385}),
        (JobType.SEND_MESSAGE, {"unexpected": 1}),
        (JobType.BATCH_MESSAGE, {"recipient_ids": []}),
        (JobType.BATCH_MESSAGE, {"recipient_ids": [str(uuid.uuid4())] * 5_001}),
        (JobType.BATCH_MESSAGE, {"chunk_size": 1_001}),
        (JobType.BATCH_MESSAGE, {"chunk_delay_seconds": 901}),
        (JobType.CLEANUP, {"task": "everything"}),
        (JobType.NOTIFICATION, {"channels": ["pigeon"]}),
        (JobType.ENCRYPTION, {"operation": "shred"}),
        (JobType.INDEXING, {"operation": "reindex"}),
    ],
)
def test_out_of_contract_data_is_invalid(job_type, override):
    with pytest.raises(InvalidJob):
        parse_job(body(job_type.value, {**SAMPLES[job_type], **override}), job_type)


def test_content_at_the_limit_is_accepted():
    data = {**SAMPLES[JobType.SEND_MESSAGE], "content": "x" * 16_384}
    assert len(parse_job(body("send-message", data), JobType.SEND_MESSAGE).data.content) == 16_384


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_unknown_schema_versions_are_rejected_as_unsupported(version):
    raw = json.loads(body("indexing", SAMPLES[JobType.INDEXING]))
    raw["schema_version"] = version
    with pytest.raises(UnsupportedSchemaVersion):
        parse_job(json.dumps(raw), JobType.INDEXING)


def test_a_job_on_the_wrong_queue_is_invalid():
    with pytest.raises(InvalidJob, match="job_type must be 'send-message'"):
        parse_job(body("indexing", SAMPLES[JobType.INDEXING]), JobType.SEND_MESSAGE)


def test_naive_timestamps_are_rejected():
    with pytest.raises(InvalidJob, match="created_at"):
        parse_job(
            body("indexing", SAMPLES[JobType.INDEXING], created_at="2026-11-29T10:00:00"), JobType.INDEXING
        )


def test_errors_name_fields_but_never_echo_content():
    secret = "my secret words"
    data = {**SAMPLES[JobType.SEND_MESSAGE], "content": secret, "sender_id": secret}
    with pytest.raises(InvalidJob) as excinfo:
        parse_job(body("send-message", data), JobType.SEND_MESSAGE)
    assert "data.sender_id" in str(excinfo.value) and secret not in str(excinfo.value)


@given(st.text(max_size=200))
def test_arbitrary_text_never_escapes_as_anything_but_a_job_error(text):
    with pytest.raises((InvalidJob, UnsupportedSchemaVersion)):
        parse_job(text, JobType.SEND_MESSAGE)


def test_published_json_schemas_are_up_to_date():
    directory = ROOT / "docs" / "schemas"
    for name, schema in json_schemas().items():
        path = directory / name
        assert path.exists(), f"{path} missing: run `switchboard schema`"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run `switchboard schema`"
