"""`switchboard ops` against the real management API of the running local stack (`switchboard dev` in a
subprocess: ManagementFunction behind the local SigV4 check): health, failures, a selective redrive after the
cause of the failures is fixed, redrives, enqueue, and refusals."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from infra.cli import main
from infra.dev_demo import send_text, stack_client
from infra.ops.client import ManagementClient, local_endpoint
from infra.seed import add_conversation, add_users
from shared.db.models import Message
from shared.jobs import JOB_KINDS
from tests.e2e.test_local_stack import RunningStack, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path_factory.mktemp("ops"))
    running.start(fresh=True)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")  # Rich: no folded cells in what the tests read


def ops(stack: RunningStack, *args: str) -> int:
    return main(["ops", *args, "--data-dir", str(stack.data_dir)])


def dead_letter_unknown_conversation(
    stack: RunningStack, count: int
) -> tuple[uuid.UUID, uuid.UUID, list[str]]:
    """Messages to a conversation that does not exist yet: each fails permanently (UnknownEntity, §3) and is
    dead-lettered; creating the conversation afterwards is the fix an operator makes before redriving."""
    conversation, sender = uuid.uuid4(), uuid.uuid4()
    ids = [send_text(stack.info, conversation, sender, f"held {n}") for n in range(count)]
    return conversation, sender, ids


def fix_the_cause(stack: RunningStack, conversation: uuid.UUID, sender: uuid.UUID) -> None:
    with stack.engine.begin() as conn:
        users = add_users(conn, ["Sender", "Reader"], ids=[sender, uuid.uuid4()])
        add_conversation(conn, users, conversation_id=conversation)


def group(client: ManagementClient, job_type: str, error_class: str) -> dict[str, Any] | None:
    groups = client.failures(job_type=job_type)["groups"]
    return next((g for g in groups if g["error_class"] == error_class), None)


def stored(stack: RunningStack, message_ids: list[str]) -> int:
    with stack.engine.connect() as conn:
        ids = [uuid.UUID(m) for m in message_ids]
        return len(conn.execute(select(Message.id).where(Message.id.in_(ids))).all())


def test_health_prints_every_queue_and_exits_by_status(stack, capsys):
    status = ManagementClient(local_endpoint(stack.data_dir)).health()["status"]
    code = ops(stack, "health")
    out = capsys.readouterr().out
    assert code == {"healthy": 0, "degraded": 1, "unhealthy": 2}[status], out
    assert f"status: {status}" in out and "database: reachable" in out
    for job_type in JOB_KINDS:
        assert f" {job_type} " in out


def test_failures_then_a_selective_redrive_after_the_fix_moves_only_that_class(stack, capsys):
    client = ManagementClient(local_endpoint(stack.data_dir))
    # Given three messages dead-lettered as UnknownEntity, and one as InvalidJob (an unknown field)
    conversation, sender, message_ids = dead_letter_unknown_conversation(stack, 3)
    invalid = {
        "job_id": str(uuid.uuid4()),
        "job_type": "send-message",
        "schema_version": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "data": {},
        "surprise": True,  # unknown fields are invalid-job (§2)
    }
    stack_client(stack.info, "sqs").send_message(
        QueueUrl=stack.info["queues"]["send-message"]["url"],
        MessageBody=json.dumps(invalid),
        MessageGroupId=str(uuid.uuid4()),
        MessageDeduplicationId=invalid["job_id"],
    )
    wait_for(lambda: (group(client, "send-message", "UnknownEntity") or {}).get("count") == 3, timeout=60)
    wait_for(lambda: group(client, "send-message", "InvalidJob"), timeout=60)
    wait_for(lambda: client.failures()["dlq_depth"]["send-message"] == 4, timeout=60)
    # When the operator lists the failures
    assert ops(stack, "failures", "--job-type", "send-message") == 0
    out = capsys.readouterr().out
    assert "UnknownEntity" in out and "unknown-entity" in out and "InvalidJob" in out
    assert "send-message=4" in out
    # and, the conversation created, redrives that class
    fix_the_cause(stack, conversation, sender)
    code = ops(stack, "redrive", "--job-type", "send-message", "--error-class", "UnknownEntity", "--yes")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "dry run (selective): 3 send-message messages matching the filter" in out
    assert "completed: moved 3, kept 1, failed 0" in out
    # Then the messages are stored, the group is gone, and the other class is still in the DLQ
    wait_for(lambda: stored(stack, message_ids) == 3, timeout=60)
    assert group(client, "send-message", "UnknownEntity") is None
    assert group(client, "send-message", "InvalidJob") is not None
    assert client.failures()["dlq_depth"]["send-message"] == 1
    assert ops(stack, "redrives", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert any(r["mode"] == "selective" and r["moved"] == 3 and not r["dry_run"] for r in listed)


def test_enqueue_a_jsonl_file_reports_each_job(stack, tmp_path, capsys):
    kind = JOB_KINDS["cleanup"]
    good = [
        json.loads(kind.new(kind.data.model_validate({"task": task, "dry_run": True})).model_dump_json())
        for task in ("all", "old-messages")
    ]
    bad = good[0] | {"job_id": str(uuid.uuid4()), "data": {"task": "everything"}}
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in [*good, bad]))
    assert ops(stack, "enqueue", str(path)) == 1
    out = capsys.readouterr().out
    assert "2 queued, 1 rejected of 3" in out and "invalid-job" in out
    for job in good:
        assert job["job_id"] in out


def test_a_wrong_secret_is_refused_as_iam_would(stack, tmp_path, capsys):
    info = json.loads((stack.data_dir / "dev.json").read_text())
    (tmp_path / "dev.json").write_text(json.dumps(info | {"aws_secret_access_key": "x" * 40}))
    assert main(["ops", "health", "--data-dir", str(tmp_path)]) == 3
    assert "403 Forbidden on GET /health" in capsys.readouterr().err


def test_a_stopped_stack_is_reported_as_unreachable(stack, tmp_path, capsys):
    info = json.loads((stack.data_dir / "dev.json").read_text())
    url = info["management_url"].rsplit(":", 1)[0] + ":9"  # the discard port: nothing listens
    (tmp_path / "dev.json").write_text(json.dumps(info | {"management_url": url}))
    assert main(["ops", "failures", "--data-dir", str(tmp_path)]) == 3
    assert "cannot reach the management API" in capsys.readouterr().err
