"""What the runner asks of SQS: moving a record's original body to the dead-letter queue with its error
attributes, and delaying the redelivery of transiently failed records (exponential backoff, full jitter)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from shared.observability import logger

_SQS_ATTRIBUTE_LIMIT = 10
_VISIBILITY_BATCH = 10
# DNS suffix of each AWS partition (as in botocore's partitions.json).
_PARTITION_DNS_SUFFIXES = {
    "aws": "amazonaws.com",
    "aws-cn": "amazonaws.com.cn",
    "aws-us-gov": "amazonaws.com",
    "aws-eusc": "amazonaws.eu",
    "aws-iso": "c2s.ic.gov",
    "aws-iso-b": "sc2s.sgov.gov",
    "aws-iso-e": "cloud.adc-e.uk",
    "aws-iso-f": "csp.hci.ic.gov",
}


def send_to_dead_letter_queue(
    sqs: Any, dlq_url: str, record: SQSRecord, error_attributes: Mapping[str, str], *, fifo: bool
) -> None:
    """Send the record's body, unchanged, to ``dlq_url`` with ``error_attributes`` first and then the
    record's own message attributes, up to SQS's limit of ten."""
    message_attributes: dict[str, dict[str, Any]] = {
        k: {"DataType": "String", "StringValue": v} for k, v in error_attributes.items()
    }
    for name, value in (record.raw_event.get("messageAttributes") or {}).items():
        copied = _copy_attribute(value)
        if len(message_attributes) < _SQS_ATTRIBUTE_LIMIT and name not in message_attributes and copied:
            message_attributes[name] = copied
    params: dict[str, Any] = {
        "QueueUrl": dlq_url,
        "MessageBody": record.body,
        "MessageAttributes": message_attributes,
    }
    if fifo:
        params["MessageGroupId"] = record.attributes.message_group_id or "dead-letter"
        params["MessageDeduplicationId"] = record.message_id
    sqs.send_message(**params)


def _copy_attribute(value: Mapping[str, Any]) -> dict[str, Any] | None:
    """A message attribute of a Lambda SQS record as SendMessage takes it: String and Number types (and
    their custom ``.suffix`` forms) with their ``StringValue``, Binary ones with their bytes (Lambda hands
    them over base64-encoded). An attribute without a value SQS would accept is left out, never sent empty:
    SQS would refuse the whole message and the permanent failure would loop."""
    data_type = value.get("dataType")
    if not isinstance(data_type, str):
        return None
    if data_type.startswith("Binary"):
        encoded = value.get("binaryValue")
        if not isinstance(encoded, str):
            return None
        try:
            return {"DataType": data_type, "BinaryValue": base64.b64decode(encoded, validate=True)}
        except binascii.Error:
            return None
    string_value = value.get("stringValue")
    return {"DataType": data_type, "StringValue": string_value} if isinstance(string_value, str) else None


def requeue(sqs: Any, records: list[dict[str, Any]]) -> set[str]:
    """Send each record's body and attributes to its own queue again as a new message (SendMessageBatch, 10
    per call); returns the SQS message ids of the records sent. Standard queues only."""
    sent: set[str] = set()
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for raw in records:
        by_queue.setdefault(raw["eventSourceARN"], []).append(raw)
    for arn, queued in by_queue.items():
        for start in range(0, len(queued), _VISIBILITY_BATCH):
            chunk = queued[start : start + _VISIBILITY_BATCH]
            entries = [
                {
                    "Id": str(index),
                    "MessageBody": raw["body"],
                    "MessageAttributes": {
                        name: copied
                        for name, value in (raw.get("messageAttributes") or {}).items()
                        if (copied := _copy_attribute(value)) is not None
                    },
                }
                for index, raw in enumerate(chunk)
            ]
            try:
                result = sqs.send_message_batch(QueueUrl=queue_url_from_arn(arn), Entries=entries)
            except Exception as exc:  # noqa: BLE001 - logged; the records stay failures, back at once
                logger.error("could not requeue deferred records", extra={"error_class": type(exc).__name__})
                continue
            sent.update(chunk[int(ok["Id"])]["messageId"] for ok in result.get("Successful", []))
    return sent


def delay_redelivery(sqs: Any, records: list[dict[str, Any]], timeouts: Mapping[str, int]) -> None:
    """Set the visibility timeout of each record whose receipt handle is in ``timeouts``
    (ChangeMessageVisibilityBatch, 10 per call). Best effort: a record not delayed still comes back, after
    the queue's visibility timeout."""
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for raw in records:
        timeout = timeouts.get(raw.get("receiptHandle", ""))
        if timeout is None:
            continue
        entries = by_queue.setdefault(raw["eventSourceARN"], [])
        entries.append(
            {"Id": str(len(entries)), "ReceiptHandle": raw["receiptHandle"], "VisibilityTimeout": timeout}
        )
    for arn, entries in by_queue.items():
        for start in range(0, len(entries), _VISIBILITY_BATCH):
            try:
                result = sqs.change_message_visibility_batch(
                    QueueUrl=queue_url_from_arn(arn), Entries=entries[start : start + _VISIBILITY_BATCH]
                )
            except Exception as exc:  # noqa: BLE001 - logged; backoff is best effort
                logger.error("could not set backoff visibility", extra={"error_class": type(exc).__name__})
                continue
            for failed in result.get("Failed", []):
                logger.warning("backoff not applied to a record", extra={"code": failed.get("Code")})


def queue_url_from_arn(arn: str) -> str:
    """The URL of the queue ``arn:<partition>:sqs:<region>:<account>:<name>``, built rather than asked for:
    the functions' roles do not grant ``sqs:GetQueueUrl``. boto3 sends every request to its own endpoint
    (``AWS_ENDPOINT_URL`` included) and SQS, like moto, finds the queue by the account and name in the URL."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not all(parts[3:]):
        raise ValueError(f"not an SQS queue ARN: {arn!r}")
    _, partition, _, region, account, name = parts
    suffix = _PARTITION_DNS_SUFFIXES.get(partition)
    if suffix is None:
        raise ValueError(f"unknown AWS partition {partition!r} in {arn!r}")
    return f"https://sqs.{region}.{suffix}/{account}/{name}"
