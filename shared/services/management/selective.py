"""The selective redrive's mover: one time-bounded slice of receiving from a DLQ, moving the messages that
match a filter back to their source queue, and leaving the others in the DLQ.

A matching message is sent to the source queue with its original body and attributes (minus the error
attributes the runner added, plus ``RedriveId``, which exempts it from the stale-job check), and for FIFO its
group id and a deduplication id of (redrive, DLQ message): it is deleted from the DLQ only after the send
succeeded, so a failed send leaves it in the DLQ. Messages that do not match, that failed to send, or that
a dry run only counted are held (invisible) until the slice ends and then released at once (visibility 0),
so one slice sees each message once; a receive that returns nothing means the whole DLQ has been scanned.
A send that succeeded but whose delete failed leaves a copy in both queues: the consumer's inbox drops the
duplicate job (docs/contracts.md §3), and the slice reports it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.db.models import JobFailure
from shared.observability import logger
from shared.runtime.inbox import readable_job_id
from shared.runtime.runner import REDRIVE_ATTRIBUTE
from shared.services.management.schemas import RedriveFilter
from shared.services.management.topology import QueuePair

SQS_BATCH = 10
SQS_ATTRIBUTE_LIMIT = 10
# Attributes the runner adds when it dead-letters a job (docs/contracts.md §3): they describe the failure,
# not the job, and are not sent back to the source queue. JobType stays (producers set it too).
ERROR_ATTRIBUTES = frozenset(
    {"ErrorClass", "ErrorReason", "ErrorMessage", "Attempt", "FailedAt", "SourceQueueArn", REDRIVE_ATTRIBUTE}
)
# How long a held message stays invisible past the slice's end if the invocation dies before releasing it.
HOLD_MARGIN_SECONDS = 30

LookupFailures = Callable[[list[str], list[uuid.UUID]], list[JobFailure]]
# Called after each batch with the messages moved in it; returns False when the redrive must stop
# (cancelled).
Progress = Callable[[list[str], list[uuid.UUID]], bool]


@dataclass(frozen=True)
class FailureFacts:
    """What a DLQ message says about its failure: from the attributes the runner wrote, else from the ledger
    row of that message or job (a message SQS's redrive policy moved carries no error attributes)."""

    job_id: uuid.UUID | None
    error_class: str | None
    reason: str | None
    failed_at: datetime | None

    def matches(self, wanted: RedriveFilter) -> bool:
        if wanted.error_class is not None and self.error_class != wanted.error_class:
            return False
        if wanted.reason is not None and self.reason != wanted.reason:
            return False
        if wanted.job_ids is not None and self.job_id not in wanted.job_ids:
            return False
        if wanted.since is not None and (self.failed_at is None or self.failed_at < wanted.since):
            return False
        return not (wanted.until is not None and (self.failed_at is None or self.failed_at >= wanted.until))


@dataclass
class SliceOutcome:
    """What one slice did. ``complete``: the DLQ was scanned to its end (or ``max_messages`` reached);
    ``kept``: messages left in the DLQ that did not match (or matched beyond the limit); ``failed``: matching
    messages whose send failed (still in the DLQ); ``matched``: matching messages seen."""

    moved: int = 0
    failed: int = 0
    kept: int = 0
    matched: int = 0
    duplicated: int = 0
    complete: bool = False
    stopped: bool = False
    held: list[str] = field(default_factory=list)


def run_slice(
    sqs: Any,
    pair: QueuePair,
    wanted: RedriveFilter,
    *,
    redrive_id: uuid.UUID,
    dry_run: bool,
    seconds: float,
    move_limit: int | None,
    max_per_second: int | None,
    lookup: LookupFailures,
    progress: Progress,
) -> SliceOutcome:
    """Scan ``pair``'s DLQ for at most ``seconds``; see the module's docstring. ``move_limit``: at most
    this many messages are moved (None: no limit)."""
    outcome = SliceOutcome()
    started = time.monotonic()
    ends = started + seconds
    hold = int(seconds) + HOLD_MARGIN_SECONDS
    try:
        while time.monotonic() < ends:
            if move_limit is not None and outcome.moved >= move_limit:
                outcome.complete = True
                break
            messages = sqs.receive_message(
                QueueUrl=pair.dlq_url,
                MaxNumberOfMessages=SQS_BATCH,
                VisibilityTimeout=hold,
                # long polling asks every SQS server: an empty answer means the DLQ has nothing visible
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                outcome.complete = True
                break
            facts = _facts(messages, lookup)
            matching = [m for m in messages if facts[m["MessageId"]].matches(wanted)]
            outcome.matched += len(matching)
            if dry_run:
                outcome.held += [m["ReceiptHandle"] for m in messages]
                outcome.kept += len(messages) - len(matching)
                continue
            room = len(matching) if move_limit is None else max(0, move_limit - outcome.moved)
            to_move, over_limit = matching[:room], matching[room:]
            others = [m for m in messages if m not in matching] + over_limit
            outcome.held += [m["ReceiptHandle"] for m in others]
            outcome.kept += len(others)
            moved = _move(sqs, pair, redrive_id, to_move, outcome)
            if not progress(
                [m["MessageId"] for m in moved],
                [job_id for m in moved if (job_id := facts[m["MessageId"]].job_id) is not None],
            ):
                outcome.stopped = True
                break
            _pace(started, outcome.moved, max_per_second, ends)
    finally:
        _release(sqs, pair.dlq_url, outcome.held)
    return outcome


def _facts(messages: list[dict[str, Any]], lookup: LookupFailures) -> dict[str, FailureFacts]:
    job_ids = {m["MessageId"]: readable_job_id(m.get("Body", "")) for m in messages}
    rows = lookup([m["MessageId"] for m in messages], [j for j in job_ids.values() if j is not None])
    by_message = {row.sqs_message_id: row for row in rows}
    by_job = {row.job_id: row for row in rows if row.job_id is not None}  # rows are oldest first: latest wins
    facts = {}
    for message in messages:
        attributes = message.get("MessageAttributes") or {}
        job_id = job_ids[message["MessageId"]]
        row = by_message.get(message["MessageId"]) or (by_job.get(job_id) if job_id else None)
        facts[message["MessageId"]] = FailureFacts(
            job_id=job_id or (row.job_id if row else None),
            error_class=_string(attributes, "ErrorClass") or (row.error_class if row else None),
            reason=_string(attributes, "ErrorReason") or (row.reason if row else None),
            failed_at=_time(_string(attributes, "FailedAt")) or (row.last_failed_at if row else None),
        )
    return facts


def _string(attributes: dict[str, Any], name: str) -> str | None:
    value = (attributes.get(name) or {}).get("StringValue")
    return value if isinstance(value, str) and value else None


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _move(
    sqs: Any, pair: QueuePair, redrive_id: uuid.UUID, messages: list[dict[str, Any]], outcome: SliceOutcome
) -> list[dict[str, Any]]:
    """Send ``messages`` to the source queue, then delete the ones sent from the DLQ; returns those moved.
    A message whose send failed is held (it stays in the DLQ) and counted failed."""
    if not messages:
        return []
    by_id = {str(index): message for index, message in enumerate(messages)}
    entries = [_entry(pair, redrive_id, entry_id, message) for entry_id, message in by_id.items()]
    try:
        result = sqs.send_message_batch(QueueUrl=pair.url, Entries=entries)
        sent_ids = {ok["Id"] for ok in result.get("Successful", [])}
    except Exception as exc:  # noqa: BLE001 - nothing was sent: every message stays in the DLQ, counted failed
        logger.error("redrive send refused", extra={"error_class": type(exc).__name__})
        sent_ids = set()
    sent = [by_id[entry_id] for entry_id in by_id if entry_id in sent_ids]
    unsent = [by_id[entry_id] for entry_id in by_id if entry_id not in sent_ids]
    outcome.failed += len(unsent)
    outcome.held += [m["ReceiptHandle"] for m in unsent]
    if unsent:
        logger.warning("redrive sends failed; the messages stay in the DLQ", extra={"count": len(unsent)})
    if sent:
        _delete(sqs, pair.dlq_url, sent, outcome)
    outcome.moved += len(sent)
    return sent


def _entry(pair: QueuePair, redrive_id: uuid.UUID, entry_id: str, message: dict[str, Any]) -> dict[str, Any]:
    attributes = {
        name: {key: value[key] for key in ("DataType", "StringValue", "BinaryValue") if key in value}
        for name, value in (message.get("MessageAttributes") or {}).items()
        if name not in ERROR_ATTRIBUTES
    }
    kept = dict(list(attributes.items())[: SQS_ATTRIBUTE_LIMIT - 1])
    kept[REDRIVE_ATTRIBUTE] = {"DataType": "String", "StringValue": str(redrive_id)}
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"], "MessageAttributes": kept}
    if pair.fifo:
        system = message.get("Attributes") or {}
        entry["MessageGroupId"] = system.get("MessageGroupId") or "redrive"
        # Not the job id: SQS would drop the resend as a duplicate of the original inside its 5-minute window.
        entry["MessageDeduplicationId"] = f"{redrive_id}:{message['MessageId']}"
    return entry


def _delete(sqs: Any, dlq_url: str, sent: list[dict[str, Any]], outcome: SliceOutcome) -> None:
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)]
    try:
        failed = sqs.delete_message_batch(QueueUrl=dlq_url, Entries=entries).get("Failed", [])
    except Exception as exc:  # noqa: BLE001 - logged and counted: the copies in the DLQ come back as duplicates
        logger.error("redriven messages not deleted from the DLQ", extra={"error_class": type(exc).__name__})
        outcome.duplicated += len(sent)
        return
    if failed:
        logger.error("redriven messages not deleted from the DLQ", extra={"count": len(failed)})
        outcome.duplicated += len(failed)


def _release(sqs: Any, dlq_url: str, handles: list[str]) -> None:
    """Make held messages visible again at once (best effort: otherwise they return after the hold)."""
    for start in range(0, len(handles), SQS_BATCH):
        chunk = handles[start : start + SQS_BATCH]
        entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(chunk)]
        try:
            failed = sqs.change_message_visibility_batch(QueueUrl=dlq_url, Entries=entries).get("Failed", [])
        except Exception as exc:  # noqa: BLE001 - they come back after the hold instead
            logger.warning("held DLQ messages not released", extra={"error_class": type(exc).__name__})
            continue
        if failed:
            logger.warning("held DLQ messages not released", extra={"count": len(failed)})


def _pace(started: float, moved: int, max_per_second: int | None, ends: float) -> None:
    """Sleep so that no more than ``max_per_second`` messages per second are moved on average."""
    if not max_per_second or not moved:
        return
    wait = moved / max_per_second - (time.monotonic() - started)
    if wait > 0:
        time.sleep(min(wait, max(0.0, ends - time.monotonic())))
