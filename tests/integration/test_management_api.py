"""The management API (docs/contracts.md §8) called as the HTTP API calls ManagementFunction: health, the
failure ledger, bulk enqueue, batches, the OpenAPI document, and bad requests answered 4xx, never 500."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from shared import aws as shared_aws
from shared.db.models import JobFailure
from shared.services.management.api import openapi_document
from tests.faults import failing_calls, failing_statements
from tests.integration.management_api import (
    answering,
    dead_letter_indexing_jobs,
    event_sources,
    make_api,
    sqs,
    visible,
)
from tests.world import job

pytest_plugins = ("tests.integration.management_api",)

ROOT = Path(__file__).resolve().parents[2]


# --- GET /health ----------------------------------------------------------------------------------------


def test_health_is_healthy_with_every_queue_the_database_at_head_and_enabled_event_sources(api):
    # Given: empty queues, the database migrated, and every consumer's event source mapping enabled
    with answering(shared_aws.client("lambda"), "ListEventSourceMappings", event_sources("Enabled")):
        # When
        answer = api.call("GET", "/health")
    # Then
    assert answer.status == 200, answer.body
    assert answer.body["status"] == "healthy"
    assert answer.body["database"]["reachable"] and answer.body["database"]["at_head"]
    assert answer.body["database"]["revision"] == answer.body["database"]["head"]
    assert set(answer.body["queues"]) == {
        "send-message",
        "delivery-confirmation",
        "encryption",
        "indexing",
        "batch-message",
        "cleanup",
        "notification",
    }
    indexing = answer.body["queues"]["indexing"]
    assert (indexing["visible"], indexing["in_flight"], indexing["delayed"]) == (0, 0, 0)
    assert indexing["dlq"]["visible"] == 0 and indexing["event_source"] == "Enabled"


def test_a_dead_lettered_job_degrades_health_and_a_deep_dlq_makes_it_unhealthy_with_503(aws, template, db):
    # Given: one message in the indexing DLQ
    sqs().send_message(QueueUrl=aws.queue_urls["IndexingDLQ"], MessageBody="{}")
    # When / Then: one message is degraded (200) ...
    answer = make_api(aws, template).call("GET", "/health")
    assert (answer.status, answer.body["status"]) == (200, "degraded")
    assert answer.body["queues"]["indexing"]["status"] == "degraded"
    assert answer.body["queues"]["indexing"]["dlq"]["visible"] == 1
    assert answer.body["queues"]["indexing"]["problems"] == ["1 message(s) in the dead-letter queue"]
    assert answer.body["queues"]["send-message"]["status"] == "healthy"
    # ... and past the unhealthy threshold it is 503
    strict = make_api(aws, template, MANAGEMENT_DLQ_UNHEALTHY_DEPTH="1")
    answer = strict.call("GET", "/health")
    assert (answer.status, answer.body["status"]) == (503, "unhealthy")


def test_a_disabled_event_source_degrades_health(api):
    with answering(shared_aws.client("lambda"), "ListEventSourceMappings", event_sources("Disabled")):
        answer = api.call("GET", "/health")
    assert (answer.status, answer.body["status"]) == (200, "degraded")
    assert answer.body["queues"]["cleanup"]["problems"] == ["event source mapping Disabled"]


def test_the_oldest_message_age_comes_from_cloudwatch_and_an_old_one_degrades_health(api, aws):
    import boto3

    # Given: CloudWatch says the indexing queue's oldest message waited 400 s (threshold 300 s)
    boto3.client("cloudwatch", region_name="us-east-1").put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [
                    {"Name": "QueueName", "Value": aws.queue_arns["IndexingQueue"].rsplit(":", 1)[1]}
                ],
                "Value": 400,
                "Timestamp": datetime.now(UTC) - timedelta(seconds=30),
            }
        ],
    )
    answer = api.call("GET", "/health")
    indexing = answer.body["queues"]["indexing"]
    assert indexing["oldest_age_seconds"] == 400
    assert (indexing["status"], indexing["problems"]) == ("degraded", ["oldest message waited 400 s"])


def test_an_unreachable_database_is_unhealthy_with_503(api, db):
    with failing_statements(
        db, lambda: OperationalError("SELECT", {}, Exception("down")), when=lambda _: True
    ):
        answer = api.call("GET", "/health")
    assert (answer.status, answer.body["status"]) == (503, "unhealthy")
    assert answer.body["database"] == {"reachable": False, "revision": None, "head": "0011", "at_head": False}


def test_health_says_unhealthy_when_sqs_cannot_be_read(api):
    error = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetQueueAttributes")
    with failing_calls(shared_aws.client("sqs"), "GetQueueAttributes", lambda: error):
        answer = api.call("GET", "/health")
    assert (answer.status, answer.body["status"]) == (503, "unhealthy")
    assert answer.body["queues"]["indexing"]["problems"] == ["queue not readable"]


# --- GET /failures --------------------------------------------------------------------------------------


def test_failures_are_grouped_by_class_with_samples_detail_and_dlq_depth(api, function):
    # Given: 3 invalid and 2 unsupported-version indexing jobs dead-lettered by the runner
    ids = dead_letter_indexing_jobs(function, invalid=3, unsupported=2)
    # When
    answer = api.call("GET", "/failures")
    # Then
    assert answer.status == 200, answer.body
    groups = {(g["job_type"], g["error_class"], g["reason"]): g for g in answer.body["groups"]}
    invalid = groups[("indexing", "InvalidJob", "invalid-job")]
    unsupported = groups[("indexing", "UnsupportedSchemaVersion", "unsupported-schema-version")]
    assert (invalid["count"], unsupported["count"]) == (3, 2)
    # a body that failed validation but had a readable job_id is recorded with it
    assert set(invalid["sample_job_ids"]) == set(ids["InvalidJob"])
    assert set(unsupported["sample_job_ids"]) == set(ids["UnsupportedSchemaVersion"])
    assert "data.bogus" in invalid["latest_detail"]
    assert invalid["first_seen"] <= invalid["last_seen"]
    assert answer.body["dlq_depth"]["indexing"] == 5
    assert answer.body["dlq_depth"]["send-message"] == 0
    # filters
    only = api.call("GET", "/failures", query={"job_type": "indexing", "error_class": "InvalidJob"})
    assert [g["error_class"] for g in only.body["groups"]] == ["InvalidJob"]
    assert only.body["dlq_depth"] == {"indexing": 5}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert api.call("GET", "/failures", query={"since": future}).body["groups"] == []
    assert len(api.call("GET", "/failures", query={"until": future}).body["groups"]) == 2


def test_one_jobs_attempts_are_listed_and_an_unknown_job_is_404(api, function, db):
    ids = dead_letter_indexing_jobs(function, invalid=1, unsupported=0)
    answer = api.call("GET", f"/failures/{ids['InvalidJob'][0]}")
    assert answer.status == 200
    (attempt,) = answer.body["attempts"]
    assert (attempt["error_class"], attempt["reason"], attempt["permanent"]) == (
        "InvalidJob",
        "invalid-job",
        True,
    )
    with db.connect() as conn:
        row = conn.execute(select(JobFailure.sqs_message_id)).scalar_one()
    assert attempt["sqs_message_id"] == row
    missing = api.call("GET", f"/failures/{uuid.uuid4()}")
    assert (missing.status, missing.body["error"]["code"]) == (404, "not-found")


# --- POST /jobs/{job_type} ------------------------------------------------------------------------------


def test_bulk_enqueue_validates_each_job_and_reports_per_item(api, aws):
    good = [job("indexing", {"message_id": str(uuid.uuid4()), "operation": "index"}) for _ in range(12)]
    bad = job("indexing", {"message_id": "not-a-uuid", "operation": "index"})
    wrong_type = job("cleanup", {"task": "all"})
    answer = api.call("POST", "/jobs/indexing", {"jobs": [*good, bad, good[0], wrong_type, {"x": 1}]})
    assert answer.status == 200, answer.body
    results = answer.body["results"]
    assert (answer.body["queued"], answer.body["rejected"]) == (12, 4)
    assert [r["status"] for r in results] == ["queued"] * 12 + ["rejected"] * 4
    assert [r["code"] for r in results[12:]] == [
        "invalid-job",
        "duplicate-job-id",
        "invalid-job",
        "unsupported-schema-version",
    ]
    assert results[12]["job_id"] == bad["job_id"] and "data.message_id" in results[12]["error"]
    assert "not-a-uuid" not in json.dumps(results)  # errors never echo values
    assert results[15]["job_id"] is None
    sent = visible(aws.queue_urls["IndexingQueue"])
    assert sorted(json.loads(m["Body"])["job_id"] for m in sent) == sorted(j["job_id"] for j in good)
    assert {m["MessageAttributes"]["JobType"]["StringValue"] for m in sent} == {"indexing"}


def test_bulk_enqueue_to_the_fifo_queue_sets_group_and_deduplication_ids(api, aws):
    conversation = str(uuid.uuid4())
    data = {"conversation_id": conversation, "sender_id": str(uuid.uuid4()), "content": "hi"}
    jobs = [job("send-message", {**data, "message_id": str(uuid.uuid4())}) for _ in range(3)]
    answer = api.call("POST", "/jobs/send-message", {"jobs": jobs})
    assert answer.body["queued"] == 3
    sent = visible(aws.queue_urls["SendMessageQueue"])
    assert {m["Attributes"]["MessageGroupId"] for m in sent} == {conversation}
    assert sorted(m["Attributes"]["MessageDeduplicationId"] for m in sent) == sorted(
        j["job_id"] for j in jobs
    )


def test_bulk_enqueue_refuses_empty_oversized_and_unknown_requests(api):
    assert api.call("POST", "/jobs/indexing", {"jobs": []}).status == 400
    too_many: dict[str, Any] = {"jobs": [{}] * 1001}
    answer = api.call("POST", "/jobs/indexing", too_many)
    assert (answer.status, answer.body["error"]["code"]) == (400, "invalid-request")
    assert "body.jobs" in answer.body["error"]["message"]
    unknown = api.call("POST", "/jobs/no-such-type", {"jobs": [{}]})
    assert (unknown.status, unknown.body["error"]["code"]) == (404, "unknown-job-type")


def test_bulk_enqueue_answers_503_when_sqs_refuses_the_call(api):
    error = ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendMessageBatch")
    jobs = [job("indexing", {"message_id": str(uuid.uuid4()), "operation": "index"})]
    with failing_calls(shared_aws.client("sqs"), "SendMessageBatch", lambda: error):
        answer = api.call("POST", "/jobs/indexing", {"jobs": jobs})
    assert (answer.status, answer.body["error"]["code"]) == (503, "unavailable")


# --- batches --------------------------------------------------------------------------------------------


def test_a_batch_is_shown_and_cancelled_and_an_unknown_one_is_404(api, function, world):
    fan_out = function("BatchMessageFunction")
    sender = world.user("sender")
    recipients = [str(world.user(f"r{i}")) for i in range(4)]
    batch_id = str(uuid.uuid4())
    data = {"batch_id": batch_id, "sender_id": str(sender), "content": "hello", "recipient_ids": recipients}
    fan_out.send(job("batch-message", {**data, "chunk_size": 2}))
    fan_out.poll_once()  # the first chunk: 2 recipients queued
    shown = api.call("GET", f"/batches/{batch_id}")
    assert shown.status == 200, shown.body
    assert (shown.body["id"], shown.body["total"], shown.body["queued"]) == (batch_id, 4, 2)
    cancelled = api.call("POST", f"/batches/{batch_id}/cancel")
    assert (cancelled.status, cancelled.body["status"], cancelled.body["cancelled"]) == (200, "cancelled", 2)
    assert api.call("GET", f"/batches/{uuid.uuid4()}").status == 404
    assert api.call("POST", f"/batches/{uuid.uuid4()}/cancel").status == 404


# --- bad requests, OpenAPI --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "status", "code"),
    [
        ("GET", "/failures/not-a-uuid", None, None, 400, "invalid-request"),
        ("GET", "/failures", None, {"since": "yesterday"}, 400, "invalid-request"),
        ("GET", "/failures", None, {"since": "2026-01-01T00:00:00"}, 400, "invalid-request"),
        (
            "GET",
            "/failures",
            None,
            {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            400,
            "invalid-request",
        ),
        ("GET", "/failures", None, {"job_type": "nope"}, 404, "unknown-job-type"),
        ("GET", "/failures", None, {"include_redriven": "maybe"}, 400, "invalid-request"),
        ("POST", "/redrive", {"job_type": "indexing", "surprise": 1}, None, 400, "invalid-request"),
        ("POST", "/redrive", {"job_type": "indexing", "dry_run": "perhaps"}, None, 400, "invalid-request"),
        ("POST", "/redrive", {"job_type": "indexing", "max_messages": 0}, None, 400, "invalid-request"),
        (
            "POST",
            "/redrive",
            {"job_type": "indexing", "filter": {"job_ids": ["x"]}},
            None,
            400,
            "invalid-request",
        ),
        (
            "POST",
            "/redrive",
            {"job_type": "indexing", "filter": {"since": "2026-01-01T00:00:00"}},
            None,
            400,
            "invalid-request",
        ),
        ("POST", "/redrive", {"job_type": "nope"}, None, 404, "unknown-job-type"),
        ("POST", "/redrive", [], None, 400, "invalid-request"),
        ("GET", "/redrives", None, {"limit": "0"}, 400, "invalid-request"),
        ("GET", "/redrives", None, {"job_type": "nope"}, 404, "unknown-job-type"),
        ("GET", "/redrives/12", None, None, 400, "invalid-request"),
        ("GET", f"/redrives/{uuid.uuid4()}", None, None, 404, "not-found"),
        ("DELETE", f"/redrives/{uuid.uuid4()}", None, None, 404, "not-found"),
        ("GET", "/batches/xyz", None, None, 400, "invalid-request"),
        ("POST", "/jobs/indexing", {"jobs": "all of them"}, None, 400, "invalid-request"),
        ("GET", "/no/such/route", None, None, 404, "not-found"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_clear_error_never_a_500(api, method, path, body, query, status, code):
    answer = api.call(method, path, body, query=query)
    assert (answer.status, answer.body["error"]["code"]) == (status, code), answer.body
    assert answer.body["error"]["message"]
    for value in ("yesterday", "perhaps", "surprise-value", "all of them"):
        assert value not in answer.body["error"]["message"]


def test_a_body_that_is_not_json_is_400(api):
    answer = api.call("POST", "/redrive", raw_body="{not json")
    assert (answer.status, answer.body["error"]["code"]) == (400, "invalid-request")


def test_the_openapi_document_is_served_and_committed_as_generated(api):
    answer = api.call("GET", "/openapi.json")
    assert answer.status == 200
    assert set(answer.body["paths"]) >= {
        "/health",
        "/failures",
        "/failures/{job_id}",
        "/redrive",
        "/redrives",
        "/redrives/{redrive_id}",
        "/jobs/{job_type}",
        "/batches/{batch_id}",
        "/batches/{batch_id}/cancel",
    }
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_document(), "docs/openapi.json is stale: run `switchboard openapi`"
    assert json.loads(committed) == answer.body


def test_the_caller_is_the_iam_principal_of_the_request(api):
    answer = api.call(
        "POST",
        "/redrive",
        {"job_type": "indexing", "dry_run": True},
        user_arn="arn:aws:iam::123456789012:user/alice",
    )
    assert answer.status == 200, answer.body
    assert answer.body["principal"] == "arn:aws:iam::123456789012:user/alice"
    anonymous = api.call("POST", "/redrive", {"job_type": "indexing", "dry_run": True}, user_arn=None)
    assert (anonymous.status, anonymous.body["principal"]) == (200, "unknown")


def test_a_finished_batch_with_failures_is_retried_and_a_running_one_is_refused(
    api, function, world, monkeypatch
):
    # Given: a batch to two recipients who do not exist, finished with both failed
    monkeypatch.setenv("BATCH_SETTLE_CHECK_SECONDS", "0")
    fan_out = function("BatchMessageFunction")
    sender = world.user("sender")
    batch_id = str(uuid.uuid4())
    ghosts = [str(uuid.uuid4()) for _ in range(2)]
    fan_out.send(
        job(
            "batch-message",
            {"batch_id": batch_id, "sender_id": str(sender), "content": "hi", "recipient_ids": ghosts},
        )
    )
    fan_out.drain()
    assert api.call("GET", f"/batches/{batch_id}").body["status"] == "completed_with_failures"
    # When / Then: a retry runs it again; a second one while it runs is refused with the reason as code
    retried = api.call("POST", f"/batches/{batch_id}/retry", {"chunk_size": 5})
    assert (retried.status, retried.body["status"]) == (200, "running"), retried.body
    again = api.call("POST", f"/batches/{batch_id}/retry")
    assert (again.status, again.body["error"]["code"]) == (409, "running")
    assert api.call("POST", f"/batches/{uuid.uuid4()}/retry").status == 404
    assert api.call("POST", f"/batches/{batch_id}/retry", {"chunk_size": 0}).status == 400
