"""Redrives (docs/contracts.md §8): every one recorded in ``redrives`` with who asked for it.

* **native** (no filter, no ``max_messages``): SQS's own message-move task moves the whole DLQ to its source
  queue (StartMessageMoveTask, ``max_per_second`` as MaxNumberOfMessagesPerSecond); its progress is read back
  from ListMessageMoveTasks and it is cancelled with CancelMessageMoveTask.
* **selective** (a filter or a limit): the management function moves the matching messages itself
  (shared/services/management/selective.py), in slices that end before the Lambda deadline. The request runs
  the first slice (at most ``REQUEST_SLICE_SECONDS``, so the HTTP API's 30 s limit is never reached); if the
  DLQ is not done, the function invokes itself asynchronously with a continuation event naming the redrive,
  and each continuation runs one slice and schedules the next. Why this and not a continuation message: the
  management function has no queue of its own, and an asynchronous self-invocation needs none (Lambda
  queues the event and retries it); the redrive's state is in its row, and a lease on the row keeps two
  slices from running at once. A continuation that is lost (the invoke refused) is scheduled again when the
  redrive is read and its last slice is older than MANAGEMENT_REDRIVE_STALL_SECONDS.
* ``dry_run`` counts the matching messages and moves nothing (native: the DLQ's depth). A FIFO DLQ hands out
  no message of a group while an earlier one of that group is held, so a dry run that moves nothing sees only
  each group's first message: on FIFO queues it counts from the failure ledger instead (rows not redriven,
  younger than the DLQ's retention, matching the filter), which is what the DLQ holds unless someone removed
  messages outside Switchboard.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.bootstrap import Dependencies
from shared.db.models import Redrive
from shared.observability import logger
from shared.services.management import repository
from shared.services.management.errors import Conflict, NotFound, Unavailable
from shared.services.management.schemas import RedriveFilter, RedriveList, RedriveRequest, RedriveView
from shared.services.management.selective import SliceOutcome, run_slice
from shared.services.management.topology import QueuePair, kind_of, queue_counts, queue_pair

# The event a continuation invocation receives: {"switchboard.redrive": {"redrive_id": "<uuid>"}}.
CONTINUATION_KEY = "switchboard.redrive"
REQUEST_SLICE_SECONDS = 10.0
# Every DLQ keeps its messages 14 days (template.yaml, MessageRetentionPeriod 1209600).
DLQ_RETENTION = timedelta(days=14)
# A native task started this long before the row was written still counts as this redrive's task.
_TASK_CLOCK_SKEW_MS = 60_000
_NATIVE_STATUSES = {
    "RUNNING": "running",
    "COMPLETED": "completed",
    "CANCELLING": "cancelling",
    "CANCELLED": "cancelled",
    "FAILED": "failed",
}


def view(row: Redrive) -> RedriveView:
    return RedriveView(
        redrive_id=row.id,
        job_type=row.job_type,
        mode=row.mode,
        status=row.status,
        dry_run=row.dry_run,
        matched=row.matched if row.dry_run or row.mode == "selective" else None,
        moved=row.moved,
        kept=row.kept,
        failed=row.failed,
        to_move=row.to_move,
        failure_reason=row.failure_reason,
        principal=row.principal,
        filter=row.filter,
        max_messages=row.max_messages,
        max_per_second=row.max_per_second,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def start_redrive(deps: Dependencies, request: RedriveRequest, principal: str, context: Any) -> RedriveView:
    """Record and start a redrive; returns it as it stands when the request ends."""
    pair = queue_pair(deps, request.job_type)
    wanted = request.filter or RedriveFilter()
    native = wanted.is_empty() and request.max_messages is None
    row = Redrive(
        id=uuid.uuid4(),
        job_type=request.job_type,
        mode="native" if native else "selective",
        status="running",
        dry_run=request.dry_run,
        principal=principal[:2048],
        filter=wanted.model_dump(mode="json", exclude_none=True),
        max_messages=request.max_messages,
        max_per_second=request.max_per_second,
    )
    if request.dry_run and not native and pair.fifo:
        depth = _dlq_depth(deps.aws.sqs(), pair)
        with deps.unit_of_work() as uow:
            failed_after = repository.now(uow.session) - DLQ_RETENTION
            row.matched = repository.count_dead_lettered(uow.session, row.job_type, wanted, failed_after)
            if request.max_messages is not None:
                row.matched = min(row.matched, request.max_messages)
            row.kept = max(0, depth - row.matched)  # the rest of the DLQ, by SQS's approximate count
            row.status, row.finished_at = "completed", datetime.now(UTC)
            row = repository.add_redrive(uow.session, row)
            uow.commit()
        return view(row)
    if native:
        _start_native(deps, pair, row, request)
        with deps.unit_of_work() as uow:
            row = repository.add_redrive(uow.session, row)
            uow.commit()
        logger.info("native redrive started", extra={"redrive_id": str(row.id), "job_type": row.job_type})
        return view(row)
    with deps.unit_of_work() as uow:
        row = repository.add_redrive(uow.session, row)
        uow.commit()
    logger.info("selective redrive started", extra={"redrive_id": str(row.id), "job_type": row.job_type})
    return _slice_and_continue(deps, row.id, context, limit=REQUEST_SLICE_SECONDS)


def _dlq_depth(sqs: Any, pair: QueuePair) -> int:
    try:
        return int(queue_counts(sqs, pair.dlq_url)["ApproximateNumberOfMessages"])
    except (ClientError, BotoCoreError) as exc:
        raise Unavailable(f"SQS did not describe the {pair.kind.name} DLQ ({type(exc).__name__})") from exc


def _start_native(deps: Dependencies, pair: QueuePair, row: Redrive, request: RedriveRequest) -> None:
    sqs = deps.aws.sqs()
    depth = _dlq_depth(sqs, pair)
    row.to_move = depth
    if request.dry_run:
        row.matched, row.status, row.finished_at = depth, "completed", datetime.now(UTC)
        return
    params: dict[str, Any] = {"SourceArn": pair.dlq_arn, "DestinationArn": pair.arn}
    if request.max_per_second is not None:
        params["MaxNumberOfMessagesPerSecond"] = request.max_per_second
    try:
        row.task_handle = sqs.start_message_move_task(**params)["TaskHandle"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400) >= 500:
            raise Unavailable(f"SQS did not start the message-move task ({code})") from exc
        raise Conflict(f"SQS refused the message-move task ({code}); is one already running?") from exc
    except BotoCoreError as exc:
        raise Unavailable(f"SQS did not start the message-move task ({type(exc).__name__})") from exc


def continue_redrive(deps: Dependencies, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Handle a continuation event: one slice of the redrive it names, then the next continuation."""
    try:
        redrive_id = uuid.UUID(str(event[CONTINUATION_KEY]["redrive_id"]))
    except (KeyError, TypeError, ValueError):
        logger.error("continuation event without a redrive id: ignored")
        return {"continued": False}
    result = _slice_and_continue(deps, redrive_id, context, limit=None)
    return {"continued": True, "redrive_id": str(redrive_id), "status": result.status}


def _slice_and_continue(
    deps: Dependencies, redrive_id: uuid.UUID, context: Any, *, limit: float | None
) -> RedriveView:
    settings = deps.settings
    seconds = (
        settings.management_redrive_slice_seconds
        if limit is None
        else min(limit, settings.management_redrive_slice_seconds)
    )
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None:
        seconds = min(seconds, remaining() / 1000 - settings.management_redrive_margin_seconds)
    with deps.unit_of_work() as uow:
        row = repository.take_lease(uow.session, redrive_id, seconds + 60)
        uow.commit()
    if row is None or seconds <= 0:
        return _read(deps, redrive_id)  # finished, cancelled, or another invocation holds it
    pair = queue_pair(deps, row.job_type)
    try:
        outcome = run_slice(
            deps.aws.sqs(),
            pair,
            RedriveFilter.model_validate(row.filter),
            redrive_id=row.id,
            dry_run=row.dry_run,
            seconds=seconds,
            move_limit=None if row.max_messages is None else row.max_messages - row.moved,
            max_per_second=row.max_per_second,
            lookup=lambda message_ids, job_ids: _lookup(deps, row.job_type, message_ids, job_ids),
            progress=lambda message_ids, job_ids: _progress(deps, row, message_ids, job_ids),
        )
    except (ClientError, BotoCoreError) as exc:
        # The lease expires by itself; the stalled redrive is continued when it is next read.
        raise Unavailable(
            f"SQS failed during the redrive ({type(exc).__name__}); it continues later"
        ) from exc
    finished = _finish_slice(deps, row.id, outcome)
    if finished.status == "running":
        schedule_continuation(deps, finished.redrive_id, context)
    return finished


def _lookup(deps: Dependencies, job_type: str, message_ids: list[str], job_ids: list[uuid.UUID]) -> list[Any]:
    with deps.unit_of_work() as uow:
        rows = repository.failures_of_messages(uow.session, job_type, message_ids, job_ids)
        uow.session.expunge_all()
    return rows


def _progress(deps: Dependencies, row: Redrive, message_ids: list[str], job_ids: list[uuid.UUID]) -> bool:
    """Count the batch's moved messages and mark their ledger rows; False once the redrive was cancelled."""
    with deps.unit_of_work() as uow:
        current = repository.get_redrive(uow.session, row.id, lock=True)
        assert current is not None
        current.moved += len(message_ids)
        current.updated_at = datetime.now(UTC)
        repository.mark_redriven(uow.session, row.job_type, message_ids, job_ids)
        status = current.status
        uow.commit()
    return status == "running"


def _finish_slice(deps: Dependencies, redrive_id: uuid.UUID, outcome: SliceOutcome) -> RedriveView:
    with deps.unit_of_work() as uow:
        row = repository.get_redrive(uow.session, redrive_id, lock=True)
        assert row is not None
        row.slices += 1
        row.lease_until = None
        row.updated_at = datetime.now(UTC)
        if outcome.duplicated:
            row.failure_reason = f"{outcome.duplicated} message(s) sent but not deleted from the DLQ"
        if row.status == "running":
            if outcome.complete:
                row.status, row.finished_at = "completed", datetime.now(UTC)
                row.kept, row.failed = outcome.kept, outcome.failed
                row.matched = outcome.matched if row.dry_run else row.moved + outcome.failed
            elif outcome.moved == 0:
                # Another slice would scan the same messages again and get no further.
                row.status, row.finished_at = "failed", datetime.now(UTC)
                row.kept, row.failed, row.matched = outcome.kept, outcome.failed, outcome.matched
                row.failure_reason = (
                    "the DLQ holds more messages than one slice can scan without moving any; narrow the "
                    "filter, or redrive the whole DLQ natively"
                )
        elif row.status in ("cancelling", "cancelled"):
            row.status, row.finished_at = "cancelled", row.finished_at or datetime.now(UTC)
        uow.commit()
    logger.info(
        "redrive slice done",
        extra={
            "redrive_id": str(redrive_id),
            "moved": outcome.moved,
            "failed": outcome.failed,
            "complete": outcome.complete,
            "status": row.status,
        },
    )
    return view(row)


def schedule_continuation(deps: Dependencies, redrive_id: uuid.UUID, context: Any) -> bool:
    """Invoke this function asynchronously with the redrive's continuation event; False if Lambda refused
    (the redrive is then continued when it is next read after the stall time)."""
    function = getattr(context, "invoked_function_arn", None)
    if not function:
        logger.error("no function ARN to continue the redrive with", extra={"redrive_id": str(redrive_id)})
        return False
    payload = json.dumps({CONTINUATION_KEY: {"redrive_id": str(redrive_id)}}).encode()
    try:
        deps.aws.make("lambda").invoke(FunctionName=function, InvocationType="Event", Payload=payload)
    except (ClientError, BotoCoreError) as exc:
        logger.error("redrive continuation not scheduled", extra={"error_class": type(exc).__name__})
        return False
    return True


def _read(deps: Dependencies, redrive_id: uuid.UUID) -> RedriveView:
    with deps.unit_of_work() as uow:
        row = repository.get_redrive(uow.session, redrive_id)
        if row is None:
            raise NotFound("no such redrive")
        return view(row)


def get_redrive(deps: Dependencies, redrive_id: uuid.UUID, context: Any) -> RedriveView:
    """The redrive, updated: a native one from ListMessageMoveTasks; a stalled selective one is continued."""
    current = _read(deps, redrive_id)
    if current.status not in ("running", "cancelling"):
        return current
    if current.mode == "native":
        return _refresh_native(deps, redrive_id)
    stalled = datetime.now(UTC) - current.updated_at > timedelta(
        seconds=deps.settings.management_redrive_stall_seconds
    )
    if stalled:
        logger.warning("selective redrive stalled: continuing it", extra={"redrive_id": str(redrive_id)})
        schedule_continuation(deps, redrive_id, context)
    return current


def _refresh_native(deps: Dependencies, redrive_id: uuid.UUID) -> RedriveView:
    with deps.unit_of_work() as uow:
        row = repository.get_redrive(uow.session, redrive_id)
        assert row is not None
        uow.session.expunge(row)
    pair = queue_pair(deps, row.job_type)
    try:
        tasks = deps.aws.sqs().list_message_move_tasks(SourceArn=pair.dlq_arn, MaxResults=10)["Results"]
    except (ClientError, BotoCoreError) as exc:
        raise Unavailable(f"SQS did not list the message-move tasks ({type(exc).__name__})") from exc
    task = _task_of(row, tasks)
    if task is None:
        return view(row)
    with deps.unit_of_work() as uow:
        row = repository.get_redrive(uow.session, redrive_id, lock=True)
        assert row is not None
        row.status = _NATIVE_STATUSES.get(str(task.get("Status")), row.status)
        row.moved = int(task.get("ApproximateNumberOfMessagesMoved", row.moved))
        if task.get("ApproximateNumberOfMessagesToMove") is not None:
            row.to_move = int(task["ApproximateNumberOfMessagesToMove"])
        row.failure_reason = task.get("FailureReason") or row.failure_reason
        row.updated_at = datetime.now(UTC)
        if row.status in ("completed", "cancelled", "failed"):
            row.finished_at = row.finished_at or datetime.now(UTC)
        if row.status == "completed":
            repository.mark_all_redriven(uow.session, row.job_type, row.created_at)
        uow.commit()
    return view(row)


def _task_of(row: Redrive, tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """This redrive's task: the one with its handle (SQS shows handles of running tasks only), else the
    newest task started since the redrive was recorded (SQS lists the newest first, and runs one at a time
    per DLQ)."""
    for task in tasks:
        if row.task_handle and task.get("TaskHandle") == row.task_handle:
            return task
    started_after = row.created_at.timestamp() * 1000 - _TASK_CLOCK_SKEW_MS
    for task in tasks:
        if int(task.get("StartedTimestamp", 0)) >= started_after:
            return task
    return None


def cancel_redrive(deps: Dependencies, redrive_id: uuid.UUID) -> RedriveView:
    """Cancel a running redrive: native -> CancelMessageMoveTask (status ``cancelling`` until SQS says it is
    cancelled); selective -> ``cancelled`` at once, and its slice stops after its current batch. 409 when it
    is no longer running."""
    current = _read(deps, redrive_id)
    if current.status != "running":
        raise Conflict(f"the redrive is {current.status}, not running")
    if current.mode == "native":
        with deps.unit_of_work() as uow:
            row = repository.get_redrive(uow.session, redrive_id)
            assert row is not None and row.task_handle is not None
            uow.session.expunge(row)
        try:
            moved = deps.aws.sqs().cancel_message_move_task(TaskHandle=row.task_handle)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            raise Conflict(f"SQS refused to cancel the message-move task ({code})") from exc
        except BotoCoreError as exc:
            raise Unavailable(f"SQS did not cancel the message-move task ({type(exc).__name__})") from exc
        with deps.unit_of_work() as uow:
            row = repository.get_redrive(uow.session, redrive_id, lock=True)
            assert row is not None
            row.status = "cancelling"
            row.moved = int(moved.get("ApproximateNumberOfMessagesMoved", row.moved))
            row.updated_at = datetime.now(UTC)
            uow.commit()
        return view(row)
    with deps.unit_of_work() as uow:
        row = repository.get_redrive(uow.session, redrive_id, lock=True)
        assert row is not None
        if row.status == "running":
            row.status, row.finished_at, row.updated_at = "cancelled", datetime.now(UTC), datetime.now(UTC)
        uow.commit()
    return view(row)


def list_redrives(deps: Dependencies, *, job_type: str | None, limit: int) -> RedriveList:
    if job_type is not None:
        kind_of(job_type)
    with deps.unit_of_work() as uow:
        rows = repository.list_redrives(uow.session, job_type=job_type, limit=limit)
        return RedriveList(redrives=[view(row) for row in rows])
