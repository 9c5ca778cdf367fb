"""Backoff as the local stack runs it: boto3 pointed at a moto server by AWS_ENDPOINT_URL, the queue named by
a URL built from the event source ARN (an amazonaws.com host, not the server's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from infra.lambda_shapes import receive_event
from shared.aws import client, reset_clients
from shared.runtime.sqs import delay_redelivery

pytestmark = pytest.mark.integration


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    reset_clients()
    try:
        yield client("sqs")
    finally:
        reset_clients()
        server.stop()


@pytest.mark.parametrize("fifo", [False, True])
def test_a_failed_record_is_held_back_for_its_backoff(sqs, fifo):
    # Given a record received from a queue on the moto server, visible again at once if nothing delays it
    name, attributes = ("jobs.fifo", {"FifoQueue": "true"}) if fifo else ("jobs", {})
    url = sqs.create_queue(QueueName=name, Attributes={**attributes, "VisibilityTimeout": "0"})["QueueUrl"]
    group = {"MessageGroupId": "g", "MessageDeduplicationId": "d"} if fifo else {}
    sqs.send_message(QueueUrl=url, MessageBody="job", **group)
    [record] = receive_event(sqs, url)["Records"]
    assert record["eventSourceARN"].endswith(f":{name}") and not url.startswith("https://sqs.")
    # When its redelivery is delayed
    delay_redelivery(sqs, [record], {record["receiptHandle"]: 300})
    # Then it stays invisible
    assert receive_event(sqs, url)["Records"] == []
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])[
            "Attributes"
        ]["ApproximateNumberOfMessagesNotVisible"]
        == "1"
    )
