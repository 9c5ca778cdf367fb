"""The queue URL of an event source ARN, built without calling SQS (the functions may not GetQueueUrl)."""

from __future__ import annotations

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from shared.runtime.sqs import queue_url_from_arn


@pytest.mark.parametrize(
    ("arn", "url"),
    [
        (
            "arn:aws:sqs:us-east-1:123456789012:switchboard-send-message.fifo",
            "https://sqs.us-east-1.amazonaws.com/123456789012/switchboard-send-message.fifo",
        ),
        ("arn:aws:sqs:eu-west-1:210987654321:jobs", "https://sqs.eu-west-1.amazonaws.com/210987654321/jobs"),
        (
            "arn:aws-cn:sqs:cn-north-1:123456789012:jobs",
            "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/jobs",
        ),
        ("arn:aws-us-gov:sqs:us-gov-west-1:1:jobs", "https://sqs.us-gov-west-1.amazonaws.com/1/jobs"),
    ],
)
def test_the_url_is_built_from_region_account_and_name(arn, url):
    assert queue_url_from_arn(arn) == url


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "https://sqs.us-east-1.amazonaws.com/123456789012/jobs",
        "arn:aws:sns:us-east-1:123456789012:jobs",
        "arn:aws:sqs:us-east-1:123456789012",
        "arn:aws:sqs:us-east-1::jobs",
        "arn:aws:sqs:us-east-1:123456789012:jobs:extra",
        "arn:aws-mars:sqs:mars-1:123456789012:jobs",
    ],
)
def test_what_is_not_an_sqs_queue_arn_is_refused(arn):
    with pytest.raises(ValueError, match=r"SQS queue ARN|partition"):
        queue_url_from_arn(arn)


NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,75}(\.fifo)?", fullmatch=True)


@given(region=st.sampled_from(["us-east-1", "eu-central-1", "ap-southeast-2"]), name=NAMES)
def test_the_url_ends_in_the_account_and_the_queue_name(region, name):
    url = queue_url_from_arn(f"arn:aws:sqs:{region}:123456789012:{name}")
    assert url == f"https://sqs.{region}.amazonaws.com/123456789012/{name}"


def test_the_url_is_the_one_sqs_gives_for_the_queue(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="eu-west-1")
        url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert queue_url_from_arn(arn) == url
