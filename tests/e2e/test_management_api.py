"""The management API on the running local stack (`switchboard dev` in a subprocess): the template's
ManagementFunction behind the local IAM (SigV4) check, and a native redrive carried out by the local
stack's emulation of SQS message move tasks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.credentials import Credentials

from infra.dev_demo import stack_client
from infra.ops.client import Endpoint, ManagementClient, Reply
from infra.seed import add_users
from shared.jobs import JOB_KINDS
from shared.services.queues import send_jobs
from tests.e2e.test_local_stack import RunningStack, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path_factory.mktemp("management"))
    running.start(fresh=True)
    yield running
    running.stop()


def call(
    info: dict[str, Any], method: str, path: str, body: bytes = b"", *, secret: str | None = None
) -> Reply:
    """A request signed by the ops CLI's client with the keys in dev.json (or another ``secret``); every
    status is returned, none raised."""
    credentials = Credentials(info["aws_access_key_id"], secret or info["aws_secret_access_key"])
    client = ManagementClient(Endpoint(info["management_url"], info["region"], credentials))
    return client.call(method, path, body=body or None, accept=range(400, 600))


def test_dev_json_names_the_management_api_and_its_keys(stack):
    info = stack.info
    assert info["management_url"].startswith("http://127.0.0.1:") and not info["management_url"].endswith("/")
    assert info["aws_access_key_id"].startswith("AKIA") and len(info["aws_access_key_id"]) == 20
    assert len(info["aws_secret_access_key"]) == 40


def test_health_answers_a_signed_request_and_refuses_an_unsigned_one(stack):
    signed = call(stack.info, "GET", "/health")
    assert signed.status in (200, 503), signed.body
    assert signed.body["status"] in ("healthy", "degraded", "unhealthy")
    unsigned = requests.get(f"{stack.info['management_url']}/health", timeout=30)
    assert unsigned.status_code == 403 and unsigned.json() == {"message": "Forbidden"}
    wrong = call(stack.info, "GET", "/health", secret="a-wrong-secret-key-0123456789abcdefghijklm")
    assert wrong.status == 403 and wrong.body == {"message": "Forbidden"}


def test_a_native_redrive_moves_a_dead_letter_queue_back_through_the_local_move_task(stack):
    # Given three valid (dry-run) cleanup jobs in the cleanup DLQ
    sqs = stack_client(stack.info, "sqs")
    queue = stack.info["queues"]["cleanup"]
    kind = JOB_KINDS["cleanup"]
    jobs = [kind.new(kind.data.model_validate({"task": "old-messages", "dry_run": True})) for _ in range(3)]
    send_jobs(sqs, queue["dlq_url"], kind, jobs)
    # When an operator redrives the whole DLQ (no filter: SQS's StartMessageMoveTask)
    started = call(stack.info, "POST", "/redrive", json.dumps({"job_type": "cleanup"}).encode())
    assert started.status in (200, 201, 202), started.body
    redrive = started.body
    assert redrive["mode"] == "native"
    # Then the move task completes with every message moved, and the DLQ is empty
    deadline = time.monotonic() + 30
    while redrive["status"] in ("running", "cancelling"):
        assert time.monotonic() < deadline, redrive
        time.sleep(0.2)
        redrive = call(stack.info, "GET", f"/redrives/{redrive['redrive_id']}").body
    assert redrive["status"] == "completed" and redrive["moved"] == 3, redrive
    depth = sqs.get_queue_attributes(
        QueueUrl=queue["dlq_url"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert depth == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_a_selective_redrive_longer_than_one_request_is_continued_by_the_function_invoking_itself(stack):
    # Given 14 cleanup jobs in the DLQ and a selective redrive (a limit) paced at 1 message per second: the
    # request's slice (10 s) cannot move them all
    sqs = stack_client(stack.info, "sqs")
    queue = stack.info["queues"]["cleanup"]
    kind = JOB_KINDS["cleanup"]
    jobs = [kind.new(kind.data.model_validate({"task": "old-messages", "dry_run": True})) for _ in range(14)]
    send_jobs(sqs, queue["dlq_url"], kind, jobs)
    request = {"job_type": "cleanup", "max_messages": 14, "max_per_second": 1}
    started = call(stack.info, "POST", "/redrive", json.dumps(request).encode())
    redrive = started.body
    assert started.status in (200, 201, 202) and redrive["mode"] == "selective", started.body
    assert redrive["moved"] < 14
    # Then the function's asynchronous self-invocation (Lambda Invoke on the local stack) moves the rest
    deadline = time.monotonic() + 60
    while redrive["status"] in ("running", "cancelling"):
        assert time.monotonic() < deadline, redrive
        time.sleep(0.5)
        redrive = call(stack.info, "GET", f"/redrives/{redrive['redrive_id']}").body
    assert redrive["status"] == "completed" and redrive["moved"] == 14, redrive


def test_the_other_endpoints_answer_on_the_local_stack(stack):
    """openapi, bulk enqueue, one job's attempts (an invalid body recorded with its job id), the redrive
    list and its cancellation, and a batch's progress and cancellation, all signed, on the running stack."""
    info = stack.info
    document = call(info, "GET", "/openapi.json")
    assert document.status == 200 and "/redrive" in document.body["paths"]

    # POST /jobs: one valid indexing job queued, one refused by the job contract
    kind = JOB_KINDS["indexing"]
    valid = kind.new(kind.data.model_validate({"operation": "delete", "message_id": str(uuid.uuid4())}))
    bad_id = str(uuid.uuid4())
    invalid = {**valid.model_dump(mode="json"), "job_id": bad_id, "data": {"operation": "nonsense"}}
    body = json.dumps({"jobs": [valid.model_dump(mode="json"), invalid]}).encode()
    enqueued = call(info, "POST", "/jobs/indexing", body)
    assert enqueued.status == 200, enqueued.body
    assert [r["status"] for r in enqueued.body["results"]] == ["queued", "rejected"]

    # GET /failures/{job_id}: a body the function refuses is dead-lettered and recorded with its job id
    sqs = stack_client(info, "sqs")
    sqs.send_message(QueueUrl=info["queues"]["indexing"]["url"], MessageBody=json.dumps(invalid))
    attempts = wait_for(lambda: call(info, "GET", f"/failures/{bad_id}").body.get("attempts"), timeout=60)
    assert attempts[0]["error_class"] == "InvalidJob"
    unknown = call(info, "GET", f"/failures/{uuid.uuid4()}")
    assert unknown.status == 404 and unknown.body["error"]["code"]

    # DELETE /redrives/{id}: a slow selective redrive (1 message/s) is cancelled, and the list shows it
    cleanup = JOB_KINDS["cleanup"]
    jobs = [
        cleanup.new(cleanup.data.model_validate({"task": "old-messages", "dry_run": True})) for _ in range(60)
    ]
    send_jobs(sqs, info["queues"]["cleanup"]["dlq_url"], cleanup, jobs)
    request = {"job_type": "cleanup", "max_messages": 60, "max_per_second": 1}
    started = call(info, "POST", "/redrive", json.dumps(request).encode()).body
    cancelled = call(info, "DELETE", f"/redrives/{started['redrive_id']}")
    assert cancelled.status == 200, cancelled.body
    final = wait_for(
        lambda: (
            (r := call(info, "GET", f"/redrives/{started['redrive_id']}").body)["status"] == "cancelled" and r
        ),
        timeout=60,
    )
    assert final["moved"] < 60
    listed = call(info, "GET", "/redrives").body["redrives"]
    assert started["redrive_id"] in [r["redrive_id"] for r in listed]

    # GET /batches/{id} and POST /batches/{id}/cancel
    with stack.engine.begin() as conn:
        sender, *recipients = add_users(conn, ["Batch sender", "R1", "R2"])
    batch_id = uuid.uuid4()
    batch = JOB_KINDS["batch-message"]
    data = {
        "batch_id": str(batch_id),
        "sender_id": str(sender),
        "content": "Hello",
        "recipient_ids": [str(r) for r in recipients],
    }
    send_jobs(
        sqs, info["queues"]["batch-message"]["url"], batch, [batch.new(batch.data.model_validate(data))]
    )
    def finished() -> dict[str, Any]:  # empty (falsy) while the batch runs
        batch = call(info, "GET", f"/batches/{batch_id}")
        return batch.body if batch.status == 200 and batch.body["status"] != "running" else {}

    done = wait_for(finished, timeout=60)
    assert (done["status"], done["total"], done["sent"]) == ("completed", 2, 2), done
    unchanged = call(info, "POST", f"/batches/{batch_id}/cancel")  # a finished batch stays as it is
    assert (unchanged.status, unchanged.body["status"]) == (200, "completed"), unchanged.body
    assert call(info, "GET", f"/batches/{uuid.uuid4()}").status == 404
