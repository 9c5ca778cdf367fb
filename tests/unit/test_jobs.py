"""The job contract (docs/contracts.md §2): limits, exactly-one rules, versions, published JSON Schemas."""

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InvalidJob, UnsupportedSchemaVersion
from shared.jobs import JOB_KINDS, json_schemas

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


SAMPLES: dict[str, dict[str, Any]] = {
    "send-message": {
        "message_id": str(uuid.uuid4()),
        "conversation_id": str(uuid.uuid4()),
        "sender_id": str(uuid.uuid4()),
        "content": "hi",
    },
    "delivery-confirmation": {
        "recipient_id": str(uuid.uuid4()),
        "status": "delivered",
        "confirmed_at": "2026-11-29T10:00:00Z",
        "message_ids": [str(uuid.uuid4())],
    },
    "encryption": {"message_id": str(uuid.uuid4()), "operation": "encrypt"},
    "indexing": {"message_id": str(uuid.uuid4()), "operation": "delete"},
    "batch-message": {
        "batch_id": str(uuid.uuid4()),
        "sender_id": str(uuid.uuid4()),
        "content": "hi",
        "recipient_ids": [str(uuid.uuid4())],
    },
    "cleanup": {"task": "all"},
    "notification": {
        "user_id": str(uuid.uuid4()),
        "category": "message",
        "title": "t",
        "body": "b",
        "channels": ["push", "in_app"],
    },
}


@pytest.mark.parametrize("job_type", list(JOB_KINDS))
def test_every_job_type_accepts_its_documented_shape(job_type):
    job = JOB_KINDS[job_type].parse(body(job_type, SAMPLES[job_type], correlation_id="c-1"))
    assert job.job_type == job_type and job.correlation_id == "c-1"


def test_defaults_are_applied():
    send = JOB_KINDS["send-message"].parse(body("send-message", SAMPLES["send-message"]))
    assert send.data.content_type == "text" and send.data.recipient_ids is None
    batch = JOB_KINDS["batch-message"].parse(body("batch-message", SAMPLES["batch-message"]))
    assert (batch.data.chunk_size, batch.data.chunk_delay_seconds) == (100, 0)
    cleanup = JOB_KINDS["cleanup"].parse(body("cleanup", SAMPLES["cleanup"]))
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
        JOB_KINDS["delivery-confirmation"].parse(confirmation(**data))


@pytest.mark.parametrize(
    ("job_type", "override"),
    [
        ("send-message", {"content": ""}),
        ("send-message", {"content": "x" * 16_385}),
        ("send-message", {"unexpected": 1}),
        ("batch-message", {"recipient_ids": []}),
        ("batch-message", {"recipient_ids": [str(uuid.uuid4())] * 5_001}),
        ("batch-message", {"chunk_size": 1_001}),
        ("batch-message", {"chunk_delay_seconds": 901}),
        ("cleanup", {"task": "everything"}),
        ("notification", {"channels": ["pigeon"]}),
        ("encryption", {"operation": "shred"}),
        ("indexing", {"operation": "reindex"}),
    ],
)
def test_out_of_contract_data_is_invalid(job_type, override):
    with pytest.raises(InvalidJob):
        JOB_KINDS[job_type].parse(body(job_type, {**SAMPLES[job_type], **override}))


def test_content_at_the_limit_is_accepted():
    data = {**SAMPLES["send-message"], "content": "x" * 16_384}
    assert len(JOB_KINDS["send-message"].parse(body("send-message", data)).data.content) == 16_384


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_unknown_schema_versions_are_rejected_as_unsupported(version):
    raw = json.loads(body("indexing", SAMPLES["indexing"]))
    raw["schema_version"] = version
    with pytest.raises(UnsupportedSchemaVersion):
        JOB_KINDS["indexing"].parse(json.dumps(raw))


def test_a_job_on_the_wrong_queue_is_invalid():
    with pytest.raises(InvalidJob, match="job_type must be 'send-message'"):
        JOB_KINDS["send-message"].parse(body("indexing", SAMPLES["indexing"]))


def test_naive_timestamps_are_rejected():
    with pytest.raises(InvalidJob, match="created_at"):
        JOB_KINDS["indexing"].parse(body("indexing", SAMPLES["indexing"], created_at="2026-11-29T10:00:00"))


def test_errors_name_fields_but_never_echo_content():
    secret = "my secret words"
    data = {**SAMPLES["send-message"], "content": secret, "sender_id": secret}
    with pytest.raises(InvalidJob) as excinfo:
        JOB_KINDS["send-message"].parse(body("send-message", data))
    assert "data.sender_id" in str(excinfo.value) and secret not in str(excinfo.value)


@given(st.text(max_size=200))
def test_arbitrary_text_never_escapes_as_anything_but_a_job_error(text):
    with pytest.raises((InvalidJob, UnsupportedSchemaVersion)):
        JOB_KINDS["send-message"].parse(text)


def test_published_json_schemas_are_up_to_date():
    directory = ROOT / "docs" / "schemas"
    for name, schema in json_schemas().items():
        path = directory / name
        assert path.exists(), f"{path} missing: run `switchboard schema`"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run `switchboard schema`"
