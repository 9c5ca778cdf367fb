"""Redrive through the management API (docs/contracts.md §8): the native path (SQS's message-move task, driven
with botocore's Stubber since moto lacks it) and the selective path on moto: a filter moves only its class,
every message is conserved (none lost, none duplicated), a slice that runs out of time continues in the
function's own asynchronous invocation, a dry run moves nothing, FIFO group ids survive, and a failed send
leaves the message in the DLQ."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from sqlalchemy import select

from shared import aws as shared_aws
from shared.db.models import JobFailure, Redrive
from tests.faults import failing_calls
from tests.integration.management_api import ManagementApi, dead_letter_indexing_jobs, make_api, visible
from tests.world import job

pytest_plugins = ("tests.integration.management_api",)


def job_ids(messages: list[dict[str, Any]]) -> list[str]:
    return [json.loads(m["Body"])["job_id"] for m in messages]


def depth(queue_url: str) -> int:
    attributes = shared_aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def take_all(queue_url: str) -> list[dict[str, Any]]:
    """Every message of a queue, received and deleted (a FIFO queue hands out no more of a group while one
    of its messages is held, so `visible` cannot list them all)."""
    client, taken = shared_aws.client("sqs"), []
    while batch := client.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    ).get("Messages", []):
        taken += batch
        client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
    return taken


def run_to_completion(api: ManagementApi, invocations: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """Drive the redrive's continuations (as Lambda would deliver them) until it stops running."""
    for _ in range(200):
        if answer["status"] != "running":
            return answer
        (payload,) = invocations.take()
        api.continue_(payload)
        answer = api.call("GET", f"/redrives/{answer['redrive_id']}").body
    raise AssertionError("the redrive never finished")


# --- selective -------------------------------------------------------------------------------------------


def test_a_selective_redrive_moves_one_error_class_and_conserves_every_message(
    api, function, aws, db, invocations
):
    # Given: 30 InvalidJob and 20 UnsupportedSchemaVersion indexing jobs dead-lettered by the runner
    ids = dead_letter_indexing_jobs(function, invalid=30, unsupported=20)
    before = job_ids(visible(aws.queue_urls["IndexingDLQ"]))
    assert len(before) == 50
    # When: only the unsupported-version class is redriven
    answer = api.call(
        "POST", "/redrive", {"job_type": "indexing", "filter": {"error_class": "UnsupportedSchemaVersion"}}
    )
    # Then
    assert answer.status == 200, answer.body
    result = run_to_completion(api, invocations, answer.body)
    assert (result["mode"], result["status"]) == ("selective", "completed")
    assert (result["matched"], result["moved"], result["kept"], result["failed"]) == (20, 20, 30, 0)
    in_dlq = visible(aws.queue_urls["IndexingDLQ"])
    in_queue = visible(aws.queue_urls["IndexingQueue"])
    assert sorted(job_ids(in_queue)) == sorted(ids["UnsupportedSchemaVersion"])
    assert sorted(job_ids(in_dlq)) == sorted(ids["InvalidJob"])
    # conservation: before = after, no duplicates, no loss
    after = job_ids(in_dlq) + job_ids(in_queue)
    assert sorted(after) == sorted(before) and not [k for k, n in Counter(after).items() if n > 1]
    # the moved messages carry the redrive id (exempt from the stale check), not the error attributes
    for message in in_queue:
        attributes = message.get("MessageAttributes", {})
        assert attributes["RedriveId"]["StringValue"] == result["redrive_id"]
        assert "ErrorClass" not in attributes and attributes["JobType"]["StringValue"] == "indexing"
    # the ledger marks the moved jobs redriven, and only them
    with db.connect() as conn:
        rows = conn.execute(select(JobFailure.job_id, JobFailure.redriven_at)).all()
    redriven = {str(row.job_id) for row in rows if row.redriven_at is not None}
    assert redriven == set(ids["UnsupportedSchemaVersion"])
    # a redriven group leaves the failure groups
    groups = api.call("GET", "/failures").body["groups"]
    assert [g["error_class"] for g in groups] == ["InvalidJob"]
    # and the record says who, what and how
    listed = api.call("GET", "/redrives", query={"job_type": "indexing"}).body["redrives"]
    assert [(r["redrive_id"], r["principal"], r["filter"]) for r in listed] == [
        (
            result["redrive_id"],
            "arn:aws:iam::123456789012:user/operator",
            {"error_class": "UnsupportedSchemaVersion"},
        )
    ]


def test_a_slice_that_runs_out_of_time_continues_in_an_asynchronous_invocation(
    aws, template, function, invocations
):
    # Given: slices of 0.2 s at 10 messages/s, too short for 60 messages however fast the machine
    ids = dead_letter_indexing_jobs(function, invalid=60, unsupported=0)
    api = make_api(aws, template, MANAGEMENT_REDRIVE_SLICE_SECONDS="0.2")
    # When
    request = {"job_type": "indexing", "filter": {"reason": "invalid-job"}, "max_per_second": 10}
    answer = api.call("POST", "/redrive", request).body
    # Then: the request stopped in time and asked Lambda for its continuation ...
    assert answer["status"] == "running" and answer["moved"] < 60
    assert invocations.payloads == [{"switchboard.redrive": {"redrive_id": answer["redrive_id"]}}]
    # ... which picks up where it stopped, until every match is moved exactly once
    result = run_to_completion(api, invocations, answer)
    assert (result["status"], result["moved"], result["kept"]) == ("completed", 60, 0)
    moved = job_ids(visible(aws.queue_urls["IndexingQueue"]))
    assert sorted(moved) == sorted(ids["InvalidJob"]) and len(set(moved)) == 60
    assert visible(aws.queue_urls["IndexingDLQ"]) == []


def test_a_dry_run_counts_matches_moves_nothing_and_leaves_every_message_visible(api, function, aws):
    dead_letter_indexing_jobs(function, invalid=7, unsupported=5)
    answer = api.call(
        "POST", "/redrive", {"job_type": "indexing", "dry_run": True, "filter": {"error_class": "InvalidJob"}}
    )
    assert answer.status == 200
    assert (answer.body["status"], answer.body["matched"], answer.body["moved"], answer.body["kept"]) == (
        "completed",
        7,
        0,
        5,
    )
    assert len(visible(aws.queue_urls["IndexingDLQ"])) == 12  # all visible again at once
    assert visible(aws.queue_urls["IndexingQueue"]) == []


def test_max_messages_moves_no_more_than_asked(api, function, aws):
    dead_letter_indexing_jobs(function, invalid=15, unsupported=0)
    answer = api.call("POST", "/redrive", {"job_type": "indexing", "max_messages": 4}).body
    assert (answer["mode"], answer["status"], answer["moved"]) == ("selective", "completed", 4)
    assert len(visible(aws.queue_urls["IndexingQueue"])) == 4
    assert len(visible(aws.queue_urls["IndexingDLQ"])) == 11


def test_redrive_by_job_ids_and_time_window(api, function, aws):
    ids = dead_letter_indexing_jobs(function, invalid=5, unsupported=0)
    wanted = ids["InvalidJob"][:2]
    answer = api.call(
        "POST",
        "/redrive",
        {"job_type": "indexing", "filter": {"job_ids": wanted, "since": "2020-01-01T00:00:00Z"}},
    ).body
    assert (answer["moved"], answer["kept"]) == (2, 3)
    assert sorted(job_ids(visible(aws.queue_urls["IndexingQueue"]))) == sorted(wanted)
    nothing = api.call(
        "POST", "/redrive", {"job_type": "indexing", "filter": {"until": "2020-01-01T00:00:00Z"}}
    ).body
    assert (nothing["moved"], nothing["kept"]) == (0, 3)


def test_a_fifo_redrive_keeps_each_messages_group(api, function, aws):
    # Given: send-message jobs of two conversations dead-lettered as invalid by the FIFO consumer
    harness = function("SendMessageFunction")
    groups = {}
    for conversation in (str(uuid.uuid4()), str(uuid.uuid4())):
        bodies = [job("send-message", {"conversation_id": conversation, "bogus": True}) for _ in range(12)]
        harness.send(*bodies, group_id=conversation)
        groups.update({body["job_id"]: conversation for body in bodies})
    harness.drain()
    assert depth(aws.queue_urls["SendMessageDLQ"]) == 24  # a FIFO queue hides held groups from `visible`
    # A dry run counts all 24, not only what a FIFO DLQ hands out before a group's held messages block the
    # rest of it (one receive's 10): on FIFO queues it counts from the ledger
    invalid = {"job_type": "send-message", "dry_run": True, "filter": {"error_class": "InvalidJob"}}
    dry = api.call("POST", "/redrive", invalid).body
    assert (dry["status"], dry["matched"], dry["moved"], dry["kept"]) == ("completed", 24, 0, 0)
    other = {"job_type": "send-message", "dry_run": True, "filter": {"error_class": "UnknownEntity"}}
    nothing = api.call("POST", "/redrive", other).body
    assert (nothing["matched"], nothing["kept"]) == (0, 24)
    assert depth(aws.queue_urls["SendMessageDLQ"]) == 24  # a FIFO queue hides held groups from `visible`
    # When
    answer = api.call(
        "POST", "/redrive", {"job_type": "send-message", "filter": {"error_class": "InvalidJob"}}
    )
    # Then
    assert (answer.body["status"], answer.body["moved"]) == ("completed", 24)
    moved = take_all(aws.queue_urls["SendMessageQueue"])
    assert {json.loads(m["Body"])["job_id"]: m["Attributes"]["MessageGroupId"] for m in moved} == groups
    assert all(m["Attributes"]["MessageDeduplicationId"].startswith(answer.body["redrive_id"]) for m in moved)
    assert depth(aws.queue_urls["SendMessageDLQ"]) == 0


def test_a_failed_send_leaves_the_message_in_the_dlq(api, function, aws):
    ids = dead_letter_indexing_jobs(function, invalid=4, unsupported=0)
    error = ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendMessageBatch")
    with failing_calls(shared_aws.client("sqs"), "SendMessageBatch", lambda: error):
        answer = api.call("POST", "/redrive", {"job_type": "indexing", "filter": {"reason": "invalid-job"}})
    assert (answer.body["status"], answer.body["moved"], answer.body["failed"]) == ("completed", 0, 4)
    assert sorted(job_ids(visible(aws.queue_urls["IndexingDLQ"]))) == sorted(ids["InvalidJob"])
    assert visible(aws.queue_urls["IndexingQueue"]) == []


def test_a_cancelled_selective_redrive_stops(aws, template, function, invocations, db):
    dead_letter_indexing_jobs(function, invalid=40, unsupported=0)
    api = make_api(aws, template, MANAGEMENT_REDRIVE_SLICE_SECONDS="0.1")
    paced = {"job_type": "indexing", "filter": {"reason": "invalid-job"}, "max_per_second": 10}
    answer = api.call("POST", "/redrive", paced).body  # 10 moved, then the slice ends, on any machine
    assert answer["status"] == "running"
    cancelled = api.call("DELETE", f"/redrives/{answer['redrive_id']}")
    assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
    # the pending continuation finds it cancelled and moves nothing more
    (payload,) = invocations.take()
    api.continue_(payload)
    again = api.call("GET", f"/redrives/{answer['redrive_id']}").body
    assert (again["status"], again["moved"]) == ("cancelled", cancelled.body["moved"])
    assert invocations.take() == []
    assert len(visible(aws.queue_urls["IndexingQueue"])) + len(visible(aws.queue_urls["IndexingDLQ"])) == 40
    assert api.call("DELETE", f"/redrives/{answer['redrive_id']}").status == 409


def test_a_stalled_selective_redrive_is_continued_when_read(aws, template, function, invocations, db):
    from sqlalchemy import update

    dead_letter_indexing_jobs(function, invalid=30, unsupported=0)
    api = make_api(aws, template, MANAGEMENT_REDRIVE_SLICE_SECONDS="0.1")
    paced = {"job_type": "indexing", "filter": {"reason": "invalid-job"}, "max_per_second": 10}
    answer = api.call("POST", "/redrive", paced).body  # 10 moved, then the slice ends, on any machine
    assert answer["status"] == "running", answer
    invocations.take()  # Lambda lost this continuation
    with db.begin() as conn:
        conn.execute(update(Redrive).values(updated_at=Redrive.updated_at - timedelta(hours=1)))
    api.call("GET", f"/redrives/{answer['redrive_id']}")
    assert invocations.take() == [{"switchboard.redrive": {"redrive_id": answer["redrive_id"]}}]


def test_a_continuation_event_without_a_redrive_id_is_ignored(api):
    assert api.continue_({"switchboard.redrive": {"redrive_id": "nope"}}) == {"continued": False}


# --- native ----------------------------------------------------------------------------------------------


def stub_queue_pair(stubber: Stubber, aws: Any, logical_id: str, dlq_depth: int | None = None) -> None:
    """Stub what the management function reads from moto before the move-task calls: the queue's
    attributes (ARN, redrive policy, counts) and, with ``dlq_depth``, its DLQ's counts."""
    real = shared_aws.client("sqs")
    attributes = real.get_queue_attributes(QueueUrl=aws.queue_urls[logical_id], AttributeNames=["All"])
    stubber.add_response("get_queue_attributes", {"Attributes": attributes["Attributes"]})
    if dlq_depth is not None:
        counts = {
            "ApproximateNumberOfMessages": str(dlq_depth),
            "ApproximateNumberOfMessagesNotVisible": "0",
            "ApproximateNumberOfMessagesDelayed": "0",
        }
        stubber.add_response("get_queue_attributes", {"Attributes": counts})


def test_a_native_redrive_starts_a_move_task_reads_its_progress_and_marks_the_ledger(api, function, aws, db):
    dead_letter_indexing_jobs(function, invalid=3, unsupported=0)
    dlq_arn, source_arn = aws.queue_arns["IndexingDLQ"], aws.queue_arns["IndexingQueue"]
    sqs = shared_aws.client("sqs")
    stub_attributes = Stubber(sqs)
    stub_queue_pair(stub_attributes, aws, "IndexingQueue", dlq_depth=3)
    stub_attributes.add_response(
        "start_message_move_task",
        {"TaskHandle": "handle-1"},
        {"SourceArn": dlq_arn, "DestinationArn": source_arn, "MaxNumberOfMessagesPerSecond": 50},
    )
    with stub_attributes:
        answer = api.call("POST", "/redrive", {"job_type": "indexing", "max_per_second": 50})
    stub_attributes.assert_no_pending_responses()
    assert answer.status == 200, answer.body
    assert (answer.body["mode"], answer.body["status"], answer.body["to_move"]) == ("native", "running", 3)
    redrive_id = answer.body["redrive_id"]
    # progress, in the shape of ListMessageMoveTasks
    progress = Stubber(sqs)
    stub_queue_pair(progress, aws, "IndexingQueue")
    progress.add_response(
        "list_message_move_tasks",
        {
            "Results": [
                {
                    "TaskHandle": "handle-1",
                    "Status": "RUNNING",
                    "SourceArn": dlq_arn,
                    "ApproximateNumberOfMessagesMoved": 1,
                    "ApproximateNumberOfMessagesToMove": 3,
                    "StartedTimestamp": 0,
                }
            ]
        },
        {"SourceArn": dlq_arn, "MaxResults": 10},
    )
    stub_queue_pair(progress, aws, "IndexingQueue")
    import time

    progress.add_response(
        "list_message_move_tasks",
        {
            "Results": [
                {
                    "Status": "COMPLETED",
                    "SourceArn": dlq_arn,
                    "ApproximateNumberOfMessagesMoved": 3,
                    "ApproximateNumberOfMessagesToMove": 3,
                    "StartedTimestamp": int(time.time() * 1000),
                }
            ]
        },
        {"SourceArn": dlq_arn, "MaxResults": 10},
    )
    with progress:
        running = api.call("GET", f"/redrives/{redrive_id}").body
        done = api.call("GET", f"/redrives/{redrive_id}").body
    assert (running["status"], running["moved"]) == ("running", 1)
    assert (done["status"], done["moved"], done["finished_at"] is not None) == ("completed", 3, True)
    with db.connect() as conn:
        assert all(conn.execute(select(JobFailure.redriven_at)).scalars())
    # a finished redrive cannot be cancelled, and is read without asking SQS again
    assert api.call("DELETE", f"/redrives/{redrive_id}").status == 409
    assert api.call("GET", f"/redrives/{redrive_id}").body["status"] == "completed"


def test_a_native_redrive_is_cancelled_with_cancel_message_move_task(api, aws):
    dlq_arn = aws.queue_arns["IndexingDLQ"]
    sqs = shared_aws.client("sqs")
    stubber = Stubber(sqs)
    stub_queue_pair(stubber, aws, "IndexingQueue", dlq_depth=9)
    stubber.add_response("start_message_move_task", {"TaskHandle": "handle-2"})
    stubber.add_response(
        "cancel_message_move_task", {"ApproximateNumberOfMessagesMoved": 4}, {"TaskHandle": "handle-2"}
    )
    stub_queue_pair(stubber, aws, "IndexingQueue")
    stubber.add_response(
        "list_message_move_tasks",
        {
            "Results": [
                {
                    "Status": "CANCELLED",
                    "SourceArn": dlq_arn,
                    "ApproximateNumberOfMessagesMoved": 4,
                    "StartedTimestamp": 10**13,
                }
            ]
        },
    )
    with stubber:
        started = api.call("POST", "/redrive", {"job_type": "indexing", "filter": {}}).body
        cancelling = api.call("DELETE", f"/redrives/{started['redrive_id']}")
        cancelled = api.call("GET", f"/redrives/{started['redrive_id']}").body
    stubber.assert_no_pending_responses()
    assert started["mode"] == "native"
    assert (cancelling.status, cancelling.body["status"], cancelling.body["moved"]) == (200, "cancelling", 4)
    assert (cancelled["status"], cancelled["moved"]) == ("cancelled", 4)


def test_sqs_refusing_a_move_task_is_a_409_and_nothing_is_recorded(api, aws, db):
    stubber = Stubber(shared_aws.client("sqs"))
    stub_queue_pair(stubber, aws, "IndexingQueue", dlq_depth=1)
    stubber.add_client_error("start_message_move_task", "UnsupportedOperation", "a task is running")
    with stubber:
        answer = api.call("POST", "/redrive", {"job_type": "indexing"})
    assert (answer.status, answer.body["error"]["code"]) == (409, "conflict")
    with db.connect() as conn:
        assert conn.execute(select(Redrive.id)).all() == []
    # SQS failing on its side is a 503: the request may be sent again
    stubber = Stubber(shared_aws.client("sqs"))
    stub_queue_pair(stubber, aws, "IndexingQueue", dlq_depth=1)
    stubber.add_client_error("start_message_move_task", "InternalError", "down", http_status_code=500)
    with stubber:
        answer = api.call("POST", "/redrive", {"job_type": "indexing"})
    assert (answer.status, answer.body["error"]["code"]) == (503, "unavailable")


def test_a_native_dry_run_reports_the_dlq_depth_and_moves_nothing(api, function, aws):
    dead_letter_indexing_jobs(function, invalid=2, unsupported=1)
    answer = api.call("POST", "/redrive", {"job_type": "indexing", "dry_run": True}).body
    assert (answer["mode"], answer["status"], answer["matched"], answer["moved"]) == (
        "native",
        "completed",
        3,
        0,
    )
    assert len(visible(aws.queue_urls["IndexingDLQ"])) == 3


@pytest.mark.parametrize("count", [int(os.environ.get("REDRIVE_COUNT", "300"))])
def test_hundreds_of_dead_lettered_jobs_of_two_classes_are_all_conserved(api, aws, invocations, count):
    """Jobs of two classes in the DLQ (sent as the runner dead-letters them), one class redriven selectively,
    and every message still exists exactly once. REDRIVE_COUNT=1000 runs the issue's 1,000 (slow on moto,
    whose ReceiveMessage scans the whole queue: about 0.2 s a call at 1,000 messages)."""
    import time

    from infra.lambda_shapes import queue_arn

    sqs = shared_aws.client("sqs")
    dlq = aws.queue_urls["IndexingDLQ"]
    bodies = []
    for index in range(count):
        error_class = "InvalidJob" if index % 2 else "StaleJob"
        body = job("indexing", {"message_id": str(uuid.uuid4()), "operation": "index"})
        bodies.append((body["job_id"], error_class))
        attributes = {
            "ErrorClass": error_class,
            "ErrorReason": "x",
            "JobType": "indexing",
            "SourceQueueArn": queue_arn(aws.queue_urls["IndexingQueue"]),
        }
        bodies_entry = {
            "Id": str(index % 10),
            "MessageBody": json.dumps(body),
            "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        }
        if index % 10 == 0:
            batch: list[dict[str, Any]] = []
        batch.append(bodies_entry)
        if len(batch) == 10:
            sqs.send_message_batch(QueueUrl=dlq, Entries=batch)
    started = time.monotonic()
    answer = api.call(
        "POST", "/redrive", {"job_type": "indexing", "filter": {"error_class": "StaleJob"}}
    ).body
    result = run_to_completion(api, invocations, answer)
    elapsed = time.monotonic() - started
    assert (result["status"], result["moved"], result["kept"]) == ("completed", count // 2, count // 2)
    in_queue, in_dlq = job_ids(visible(aws.queue_urls["IndexingQueue"])), job_ids(visible(dlq))
    assert sorted(in_queue + in_dlq) == sorted(job_id for job_id, _ in bodies)
    assert sorted(in_queue) == sorted(job_id for job_id, cls in bodies if cls == "StaleJob")
    print(
        f"selective redrive on moto: {count // 2} of {count} moved in {elapsed:.2f} s "
        f"({count // 2 / elapsed:.0f} messages/s)"
    )


def test_sqs_failing_during_a_selective_redrive_is_a_503_and_the_redrive_stays_to_be_continued(
    api, function, db
):
    dead_letter_indexing_jobs(function, invalid=3, unsupported=0)
    error = ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "ReceiveMessage")
    with failing_calls(shared_aws.client("sqs"), "ReceiveMessage", lambda: error):
        answer = api.call("POST", "/redrive", {"job_type": "indexing", "filter": {"reason": "invalid-job"}})
    assert (answer.status, answer.body["error"]["code"]) == (503, "unavailable")
    with db.connect() as conn:
        assert conn.execute(select(Redrive.status)).scalars().all() == ["running"]
