"""What Lambda hands a function, built locally: the SQS event of a batch of received messages and a
context with a real deadline. Used by the tests, the demo and the local stack's pollers, so handler code
runs unchanged outside AWS."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LocalLambdaContext:
    """The parts of ``LambdaContext`` that handlers and Powertools use, with a deadline ``timeout_s`` away."""

    function_name: str = "local"
    timeout_s: float = 30.0
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def queue_arn(queue_url: str, region: str = "us-east-1", account: str = "123456789012") -> str:
    """The ARN of a queue from its URL (``.../<account>/<name>``)."""
    parts = queue_url.rstrip("/").split("/")
    return f"arn:aws:sqs:{region}:{parts[-2] if len(parts) >= 2 else account}:{parts[-1]}"


def sqs_event(messages: list[dict[str, Any]], source_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """The Lambda SQS event for messages as ``ReceiveMessage`` returns them (ask for
    ``MessageSystemAttributeNames=["All"]`` and ``MessageAttributeNames=["All"]``)."""
    return {"Records": [_record(m, source_arn, region) for m in messages]}


def body_event(body: str, source_arn: str, *, group_id: str | None = None) -> dict[str, Any]:
    """The Lambda SQS event of one message with ``body`` that no queue handed out (benches, races in tests):
    a first receive, with the FIFO group and a de-duplication id when ``group_id`` is given."""
    message_id = str(uuid.uuid4())
    attributes = {"ApproximateReceiveCount": "1"}
    if group_id is not None:
        attributes |= {"MessageGroupId": group_id, "MessageDeduplicationId": message_id}
    message = {
        "MessageId": message_id,
        "ReceiptHandle": f"rh-{message_id}",
        "Body": body,
        "Attributes": attributes,
    }
    return sqs_event([message], source_arn)


def _record(message: dict[str, Any], source_arn: str, region: str) -> dict[str, Any]:
    attributes = dict(message.get("Attributes") or {})
    attributes.setdefault("ApproximateReceiveCount", "1")
    attributes.setdefault("SentTimestamp", str(int(time.time() * 1000)))
    attributes.setdefault("SenderId", "AIDAEXAMPLE")
    attributes.setdefault("ApproximateFirstReceiveTimestamp", attributes["SentTimestamp"])
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                # Lambda hands binary attributes over base64-encoded, as strings
                "binaryValue": base64.b64encode(value["BinaryValue"]).decode("ascii")
                if value.get("BinaryValue") is not None
                else None,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": source_arn,
        "awsRegion": region,
    }


def receive_event(
    sqs: Any, queue_url: str, *, max_messages: int = 10, wait_seconds: int = 0
) -> dict[str, Any]:
    """Receive up to ``max_messages`` from ``queue_url`` and shape them as Lambda would."""
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=max_messages,
        WaitTimeSeconds=wait_seconds,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs_event(response.get("Messages", []), arn)


def http_api_event(
    method: str,
    path: str,
    *,
    body: str | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    user_arn: str | None = "arn:aws:iam::123456789012:user/operator",
    api_id: str = "localapi",
    stage: str = "$default",
) -> dict[str, Any]:
    """The event an HTTP API (payload format 2.0) hands a Lambda proxy integration for one request, with the
    IAM authorizer's context (``requestContext.authorizer.iam``) when ``user_arn`` is given."""
    from urllib.parse import urlencode

    now = time.time()
    request_context: dict[str, Any] = {
        "accountId": "123456789012",
        "apiId": api_id,
        "domainName": f"{api_id}.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": api_id,
        "http": {
            "method": method.upper(),
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": "switchboard-local",
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": "ANY /{proxy+}",
        "stage": stage,
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if user_arn is not None:
        request_context["authorizer"] = {
            "iam": {
                "accessKey": "AKIAEXAMPLE",
                "accountId": "123456789012",
                "callerId": "AIDAEXAMPLE",
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": user_arn,
                "userId": "AIDAEXAMPLE",
            }
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "ANY /{proxy+}",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": request_context,
        "pathParameters": {"proxy": path.lstrip("/")},
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if body is not None:
        event["body"] = body
    return event
