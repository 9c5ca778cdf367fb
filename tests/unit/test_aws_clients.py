"""The SQS client for pre-validated input skips botocore's parameter validation; the others do not."""

from __future__ import annotations

import botocore.exceptions
import pytest
from botocore.stub import Stubber

from shared.aws import AwsClients, reset_clients


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    reset_clients()
    yield
    reset_clients()


def test_only_the_prevalidated_client_skips_parameter_validation():
    clients = AwsClients()
    assert clients.sqs_prevalidated() is clients.sqs_prevalidated()
    assert clients.sqs_prevalidated() is not clients.sqs()
    # a body botocore would refuse (not a string): SQS itself is stubbed, answering after serialisation
    entries = [{"Id": "0", "MessageBody": 123}]
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
    with pytest.raises(botocore.exceptions.ParamValidationError):
        clients.sqs().send_message_batch(QueueUrl=url, Entries=entries)
    with Stubber(clients.sqs_prevalidated()) as sqs:
        sqs.add_response("send_message_batch", {"Successful": [], "Failed": []})
        assert clients.sqs_prevalidated().send_message_batch(QueueUrl=url, Entries=entries)["Failed"] == []


def test_a_substituted_factory_gives_its_own_client():
    made: list[tuple[object, ...]] = []

    def make(*args: object) -> str:
        made.append(args)
        return "client"

    clients = AwsClients(make=make)
    assert clients.sqs_prevalidated() == "client"
    assert made == [("sqs",)]
