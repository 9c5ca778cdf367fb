"""The local stack's message move tasks (infra/move_tasks.py) through boto3, as the management function and
the AWS CLI call them: SQS's shapes and errors, messages conserved, FIFO groups kept, rate and cancel."""

from __future__ import annotations

import base64
import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from infra.local_aws import LocalAwsServer

pytestmark = pytest.mark.integration
REGION = "us-east-1"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalAwsServer]:
    running = LocalAwsServer("127.0.0.1", 0)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def sqs(server: LocalAwsServer) -> Any:
    return boto3.client(
        "sqs",
        region_name=REGION,
        endpoint_url=server.url,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


class Pair:
    """A queue and its dead-letter queue (maxReceiveCount 1), uniquely named."""

    def __init__(self, sqs: Any, *, fifo: bool = False) -> None:
        self.sqs, self.fifo = sqs, fifo
        name = f"q{uuid.uuid4().hex[:10]}"
        suffix, attributes = (".fifo", {"FifoQueue": "true"}) if fifo else ("", {})
        self.dlq_url = sqs.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=attributes)["QueueUrl"]
        self.dlq_arn = self.arn(self.dlq_url)
        policy = json.dumps({"deadLetterTargetArn": self.dlq_arn, "maxReceiveCount": 1})
        self.url = sqs.create_queue(
            QueueName=f"{name}{suffix}",
            Attributes={**attributes, "RedrivePolicy": policy, "VisibilityTimeout": "0"},
        )["QueueUrl"]
        self.queue_arn = self.arn(self.url)

    def arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    def dead_letter(self, count: int, *, groups: int = 1) -> list[str]:
        """``count`` jobs as they are after failing: each sent to the queue (which keeps its FIFO
        de-duplication id for 5 minutes), consumed, and found in the DLQ, in this order."""
        bodies = [json.dumps({"job_id": str(uuid.uuid4()), "n": i}) for i in range(count)]
        for i, body in enumerate(bodies):
            extra = (
                {"MessageGroupId": f"g{i % groups}", "MessageDeduplicationId": f"d{i}"} if self.fifo else {}
            )
            attributes = {"job_type": {"DataType": "String", "StringValue": "send-message"}}
            for url in (self.url, self.dlq_url):
                self.sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes, **extra)
        assert len(self.drain(self.url)) == count
        assert self.depth(self.dlq_url) == count
        return bodies

    def depth(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def drain(self, url: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", []):
            messages.extend(batch)
            for message in batch:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return messages


def wait_for_status(sqs: Any, source_arn: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [task] = sqs.list_message_move_tasks(SourceArn=source_arn)["Results"]
        if task["Status"] in statuses:
            return dict(task)
        time.sleep(0.05)
    raise AssertionError(f"task still {task['Status']}")


def error_of(call: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"], raised.value.response["Error"]["Message"]


def test_a_native_redrive_moves_every_message_back_to_its_source_with_its_attributes(sqs):
    # Given 25 dead-lettered jobs
    pair = Pair(sqs)
    bodies = pair.dead_letter(25)
    # When a move task starts from the DLQ without a destination
    handle = sqs.start_message_move_task(SourceArn=pair.dlq_arn)["TaskHandle"]
    # Then it completes, the DLQ is empty and the source holds each job once, attributes intact
    task = wait_for_status(sqs, pair.dlq_arn, "COMPLETED")
    assert handle and "TaskHandle" not in task and "DestinationArn" not in task
    assert task["ApproximateNumberOfMessagesMoved"] == task["ApproximateNumberOfMessagesToMove"] == 25
    assert task["SourceArn"] == pair.dlq_arn and task["StartedTimestamp"] > 0
    moved = pair.drain(pair.url)
    assert sorted(m["Body"] for m in moved) == sorted(bodies)
    assert {m["MessageAttributes"]["job_type"]["StringValue"] for m in moved} == {"send-message"}
    assert pair.depth(pair.dlq_url) == 0


def test_a_fifo_redrive_keeps_groups_and_order_and_is_not_deduplicated_away(sqs):
    # Given FIFO jobs in three groups dead-lettered seconds after they were sent (inside the 5-minute
    # de-duplication window of their original de-duplication ids)
    pair = Pair(sqs, fifo=True)
    bodies = pair.dead_letter(12, groups=3)
    # When they are redriven
    sqs.start_message_move_task(SourceArn=pair.dlq_arn)
    wait_for_status(sqs, pair.dlq_arn, "COMPLETED")
    # Then every one arrives, in its group, in the order of the group
    moved = pair.drain(pair.url)
    assert len(moved) == 12
    for group in ("g0", "g1", "g2"):
        in_group = [json.loads(m["Body"])["n"] for m in moved if m["Attributes"]["MessageGroupId"] == group]
        expected = [json.loads(b)["n"] for i, b in enumerate(bodies) if f"g{i % 3}" == group]
        assert in_group == expected


def test_a_destination_arn_sends_the_messages_there_and_is_reported(sqs):
    pair = Pair(sqs)
    pair.dead_letter(3)
    elsewhere = sqs.create_queue(QueueName=f"elsewhere-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.start_message_move_task(SourceArn=pair.dlq_arn, DestinationArn=pair.arn(elsewhere))
    task = wait_for_status(sqs, pair.dlq_arn, "COMPLETED")
    assert task["DestinationArn"] == pair.arn(elsewhere)
    assert len(pair.drain(elsewhere)) == 3 and pair.depth(pair.url) == 0


def test_max_number_of_messages_per_second_paces_the_move(sqs):
    # Given 10 dead-lettered jobs and a task limited to 5 messages per second
    pair = Pair(sqs)
    pair.dead_letter(10)
    started = time.monotonic()
    sqs.start_message_move_task(SourceArn=pair.dlq_arn, MaxNumberOfMessagesPerSecond=5)
    # Then it is seen running part-way, and takes about a second for the second half
    running = wait_for_status(sqs, pair.dlq_arn, "RUNNING")
    assert running["MaxNumberOfMessagesPerSecond"] == 5 and running["TaskHandle"]
    wait_for_status(sqs, pair.dlq_arn, "COMPLETED")
    assert time.monotonic() - started >= 0.9
    assert pair.depth(pair.url) == 10


def test_a_cancelled_task_stops_and_conserves_every_message(sqs):
    # Given a slow task (1 message per second) over 6 jobs
    pair = Pair(sqs)
    pair.dead_letter(6)
    handle = sqs.start_message_move_task(SourceArn=pair.dlq_arn, MaxNumberOfMessagesPerSecond=1)["TaskHandle"]
    deadline = time.monotonic() + 10
    while (
        sqs.list_message_move_tasks(SourceArn=pair.dlq_arn)["Results"][0]["ApproximateNumberOfMessagesMoved"]
        < 1
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # When it is cancelled
    moved_at_cancel = sqs.cancel_message_move_task(TaskHandle=handle)["ApproximateNumberOfMessagesMoved"]
    # Then it ends CANCELLED, short of the total, and no message is lost or duplicated
    task = wait_for_status(sqs, pair.dlq_arn, "CANCELLED")
    assert 1 <= moved_at_cancel <= task["ApproximateNumberOfMessagesMoved"] < 6
    assert pair.depth(pair.url) + pair.depth(pair.dlq_url) == 6
    assert pair.depth(pair.url) == task["ApproximateNumberOfMessagesMoved"]
    # And it cannot be cancelled twice
    code, message = error_of(lambda: sqs.cancel_message_move_task(TaskHandle=handle))
    assert code == "InvalidParameterValue" and "RUNNING" in message


def test_a_destination_that_disappears_fails_the_task_and_leaves_the_rest_in_the_dlq(sqs):
    pair = Pair(sqs)
    pair.dead_letter(4)
    elsewhere = sqs.create_queue(QueueName=f"gone-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.start_message_move_task(
        SourceArn=pair.dlq_arn, DestinationArn=pair.arn(elsewhere), MaxNumberOfMessagesPerSecond=1
    )
    deadline = time.monotonic() + 10
    while (
        sqs.list_message_move_tasks(SourceArn=pair.dlq_arn)["Results"][0]["ApproximateNumberOfMessagesMoved"]
        < 1
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sqs.delete_queue(QueueUrl=elsewhere)
    task = wait_for_status(sqs, pair.dlq_arn, "FAILED")
    assert task["FailureReason"] in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
    assert pair.depth(pair.dlq_url) == 4 - task["ApproximateNumberOfMessagesMoved"]
    # the messages in hand when the send failed are visible again at once
    assert len(pair.drain(pair.dlq_url)) == 4 - task["ApproximateNumberOfMessagesMoved"]


def test_start_refuses_what_sqs_refuses(sqs):
    pair = Pair(sqs)
    missing = pair.dlq_arn + "-missing"
    cases = [
        ({"SourceArn": pair.queue_arn}, "InvalidParameterValue", "Source queue must be configured as a Dead"),
        ({"SourceArn": missing}, "ResourceNotFoundException", "specified for the SourceArn parameter"),
        ({"SourceArn": "not-an-arn"}, "InvalidParameterValue", "format to specify the SourceArn"),
        (
            {"SourceArn": pair.dlq_arn, "DestinationArn": missing},
            "ResourceNotFoundException",
            "specified for the DestinationArn parameter",
        ),
        (
            {"SourceArn": pair.dlq_arn, "DestinationArn": pair.dlq_arn},
            "InvalidParameterValue",
            "cannot be the same",
        ),
        ({"SourceArn": pair.dlq_arn, "MaxNumberOfMessagesPerSecond": 501}, "InvalidParameterValue", "500"),
        ({"SourceArn": pair.dlq_arn, "MaxNumberOfMessagesPerSecond": 0}, "InvalidParameterValue", "500"),
    ]
    for params, code, message in cases:
        assert error_of(lambda params=params: sqs.start_message_move_task(**params))[0] == code, params
        assert message in error_of(lambda params=params: sqs.start_message_move_task(**params))[1]


def test_only_one_task_runs_per_source(sqs):
    pair = Pair(sqs)
    pair.dead_letter(3)
    handle = sqs.start_message_move_task(SourceArn=pair.dlq_arn, MaxNumberOfMessagesPerSecond=1)["TaskHandle"]
    code, message = error_of(lambda: sqs.start_message_move_task(SourceArn=pair.dlq_arn))
    assert code == "InvalidParameterValue" and "already a task running" in message
    sqs.cancel_message_move_task(TaskHandle=handle)
    wait_for_status(sqs, pair.dlq_arn, "CANCELLED")
    # once it ended, a new one may start; the list shows the newest first
    sqs.start_message_move_task(SourceArn=pair.dlq_arn)
    wait_for_status(sqs, pair.dlq_arn, "COMPLETED")
    statuses = [
        t["Status"] for t in sqs.list_message_move_tasks(SourceArn=pair.dlq_arn, MaxResults=10)["Results"]
    ]
    assert statuses == ["COMPLETED", "CANCELLED"]


def test_list_and_cancel_refuse_bad_input(sqs):
    pair = Pair(sqs)
    assert sqs.list_message_move_tasks(SourceArn=pair.dlq_arn)["Results"] == []
    assert error_of(lambda: sqs.list_message_move_tasks(SourceArn=pair.dlq_arn, MaxResults=11))[0] == (
        "InvalidParameterValue"
    )
    assert error_of(lambda: sqs.list_message_move_tasks(SourceArn=pair.dlq_arn + "x"))[0] == (
        "ResourceNotFoundException"
    )
    assert (
        error_of(lambda: sqs.cancel_message_move_task(TaskHandle="not base64!"))[0] == "InvalidParameterValue"
    )
    # a well-formed handle of a task that never existed
    forged = base64.b64encode(json.dumps({"taskId": "nope", "sourceArn": pair.dlq_arn}).encode()).decode()
    assert error_of(lambda: sqs.cancel_message_move_task(TaskHandle=forged)) == (
        "ResourceNotFoundException",
        "Task does not exist.",
    )


def test_the_query_protocol_is_answered_too_and_other_actions_reach_moto(server, sqs):
    pair = Pair(sqs)
    pair.dead_letter(2)
    form = {"Action": "StartMessageMoveTask", "Version": "2012-11-05", "SourceArn": pair.dlq_arn}
    started = requests.post(server.url, data=form, timeout=10)
    assert started.status_code == 200
    namespace = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}
    assert ET.fromstring(started.text).find(".//sqs:TaskHandle", namespace) is not None
    wait_for_status(sqs, pair.dlq_arn, "COMPLETED")
    listed = requests.post(
        server.url, data={"Action": "ListMessageMoveTasks", "SourceArn": pair.dlq_arn}, timeout=10
    )
    entry = ET.fromstring(listed.text).find(".//sqs:ListMessageMoveTasksResultEntry", namespace)
    assert entry is not None and entry.findtext("sqs:Status", namespaces=namespace) == "COMPLETED"
    refused = requests.post(
        server.url, data={"Action": "StartMessageMoveTask", "SourceArn": pair.url}, timeout=10
    )
    assert refused.status_code == 400
    assert (
        ET.fromstring(refused.text).findtext(".//sqs:Code", namespaces=namespace) == "InvalidParameterValue"
    )
    # a query-protocol request for moto is passed on with its body intact
    moto = requests.post(
        server.url,
        data={"Action": "GetQueueUrl", "QueueName": pair.url.rsplit("/", 1)[1]},
        # moto picks the service from the credential scope
        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/sqs/aws4_request"},
        timeout=10,
    )
    assert moto.status_code == 200 and pair.url.rsplit("/", 1)[1] in moto.text
