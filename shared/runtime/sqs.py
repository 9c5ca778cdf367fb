"""What the runner asks of SQS: moving a record's original body to the dead-letter queue with its error
attributes, and delaying the redelivery of transiently failed records (exponential backoff, full jitter)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from shared.observability import logger

_SQS_ATTRIBUTE_LIMIT = 10
_VISIBILITY_BATCH = 10


def send_to_dead_letter_queue(
    sqs: Any, dlq_url: str, record: SQSRecord, error_attributes: Mapping[str, str], *, fifo: bool
) -> None:
    """Send the record's body, unchanged, to ``dlq_url`` with ``error_attributes`` first and then the
    record's own message attributes, up to SQS's limit of ten."""
    message_attributes = {k: {"DataType": "String", "StringValue": v} for k, v in error_attributes.items()}
    for name, value in (record.raw_event.get("messageAttributes") or {}).items():
        if len(message_attributes) < _SQS_ATTRIBUTE_LIMIT and name not in message_attributes:
            message_attributes[name] = {
                k: v
                for k, v in {
                    "DataType": value.get("dataType"),
                    "StringValue": value.get("stringValue"),
                }.items()
                if v is not None
            }
    params: dict[str, Any] = {
        "QueueUrl": dlq_url,
        "MessageBody": record.body,
        "MessageAttributes": message_attributes,
    }
    if fifo:
        params["MessageGroupId"] = record.attributes.message_group_id or "dead-letter"
        params["MessageDeduplicationId"] = record.message_id
    sqs.send_message(**params)


def backoff_seconds(attempt: int, *, base: int, cap: int, rng: random.Random | None = None) -> int:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))], at least 1 s."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return max(1, int((rng or random).uniform(0, ceiling)))


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
                    QueueUrl=_queue_url(sqs, arn), Entries=entries[start : start + _VISIBILITY_BATCH]
                )
            except Exception:  # noqa: BLE001 - logged; backoff is best effort
                logger.exception("could not set backoff visibility")
                continue
            for failed in result.get("Failed", []):
                logger.warning("backoff not applied to a record", extra={"code": failed.get("Code")})


@lru_cache(maxsize=16)
def _queue_url(sqs: Any, arn: str) -> str:
    _, _, _, _, account, name = arn.split(":", 5)
    return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])
