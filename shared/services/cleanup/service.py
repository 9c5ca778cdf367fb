"""cleanup (docs/contracts.md §5 cleanup): retention, purges and housekeeping in bounded, resumable rounds.

A job runs a list of steps (``all`` runs every one, in dependency order):

* ``old-messages/soft``: messages older than the retention (the job's ``retention_days``, else
  CLEANUP_RETENTION_DAYS) lose their content (plaintext and sealed) and their search entry; ``deleted_at``
  is set.
* ``old-messages/hard`` (with ``hard_delete``): messages soft-deleted longer than CLEANUP_GRACE_DAYS ago are
  deleted with their search entries, deliveries and reads; their attachments are detached and marked
  deleted, so that ``expired-attachments`` deletes their S3 objects and then the rows.
* ``deleted-conversations``: conversations soft-deleted longer than the grace period ago: their messages
  (as above), in-app notifications, search entries, mutes, participants, then the row. Its wrapped data
  keys are crypto-shredded first (shared/services/crypto), so its sealed content is unreadable at once.
* ``expired-attachments``: attachments past ``expires_at`` or marked deleted: their S3 objects go with
  ``DeleteObjects`` after commit (:class:`DeleteAttachmentObjects`), then their rows.
* ``expired-attachments/orphans`` (with ``expired-attachments`` and ``all``): the reconciling sweep. One
  ``ListObjectsV2`` page (at most CLEANUP_BATCH_SIZE keys under ATTACHMENTS_PREFIX, after the cursor's key)
  per round, at most CLEANUP_MAX_LISTED_KEYS keys per job; keys older than CLEANUP_ORPHAN_MIN_AGE_HOURS that
  no attachments row names are orphans: counted, logged and emitted (``CleanupOrphanObjectsFound``), and
  deleted after commit (:class:`DeleteOrphanObjects`) only with CLEANUP_DELETE_ORPHAN_OBJECTS.
* ``housekeeping/inbox``, ``housekeeping/failures`` (``all`` only): completed ``job_inbox`` rows and
  ``job_failures`` rows older than their settings.
* ``housekeeping/batch-content`` (``all`` only): the sealed content a batch keeps for a retry of its failed
  recipients is cleared CLEANUP_BATCH_CONTENT_RETENTION_DAYS after the batch finished.
* ``housekeeping/redrives`` (``all`` only): the management API's redrive records, once they finished
  CLEANUP_REDRIVES_RETENTION_DAYS ago.

Each round picks at most CLEANUP_BATCH_SIZE keys after a cursor and acts on them with a constant number of
statements. A job works for at most CLEANUP_TIME_BUDGET_SECONDS (the runner hands ``handle`` no Lambda
context; the budget is set well inside the function's timeout), then enqueues its continuation: the same
data plus ``cursor``, id UUIDv5(job_id, ``continuation``). It never sleeps. ``dry_run`` walks the same
rounds and counts without writing. Counts (never content) are logged and emitted as metrics.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from shared.aws import AwsClients
from shared.config import Settings
from shared.errors import DependencyThrottled, InvalidJob
from shared.jobs import CLEANUP, CleanupData, Job
from shared.observability import logger, metrics
from shared.runtime.effects import Effect
from shared.services.batches import forget_finished_content
from shared.services.cleanup import repository
from shared.services.crypto.service import shred_conversation
from shared.services.queues import EnqueueJobs

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

S3_DELETE_BATCH = 1_000  # DeleteObjects' limit
S3_ATTEMPTS = 3
# Objects one job deletes after commit at most (a few DeleteObjects calls: seconds, inside the timeout).
MAX_OBJECTS_PER_JOB = 5 * S3_DELETE_BATCH
GONE = "NoSuchKey"  # an object already gone is deleted
# Keys the reconciling sweep lists per job at most (then its continuation goes on from the last one).
# A cursor holds at most this much of a key, as JSON (the cursor is at most 1,024 characters): a shortened
# key makes the next listing start a little earlier, which only lists some keys twice.
MAX_CURSOR_KEY = 900

TASK_STEPS: dict[str, tuple[str, ...]] = {
    "old-messages": ("old-messages/soft", "old-messages/hard"),
    "deleted-conversations": ("deleted-conversations",),
    "expired-attachments": ("expired-attachments", "expired-attachments/orphans"),
    "all": (
        "old-messages/soft",
        "old-messages/hard",
        "deleted-conversations",
        "expired-attachments",
        "expired-attachments/orphans",
        "housekeeping/inbox",
        "housekeeping/failures",
        "housekeeping/batch-content",
        "housekeeping/redrives",
    ),
}


def steps_of(data: CleanupData) -> list[str]:
    return [s for s in TASK_STEPS[data.task] if s != "old-messages/hard" or data.hard_delete]


@dataclass
class Position:
    """Where a job is: its step, the last key done in it, and (deleted-conversations, dry run) the last
    message counted in the conversation in progress."""

    step: int = 0
    after: str | None = None
    inner: str | None = None

    def dump(self, steps: list[str]) -> str:
        raw = {"step": steps[self.step], "after": self.after, "inner": self.inner}
        return json.dumps({k: v for k, v in raw.items() if v is not None}, separators=(",", ":"))

    @classmethod
    def load(cls, cursor: str | None, steps: list[str]) -> Position:
        if cursor is None:
            return cls()
        try:
            raw = json.loads(cursor)
            position = cls(steps.index(raw["step"]), raw.get("after"), raw.get("inner"))
            for value in (position.after, position.inner):
                if value is not None and not isinstance(value, str):
                    raise ValueError("not a key")
        except (ValueError, KeyError, TypeError):
            raise InvalidJob("cursor is not a cleanup cursor of this task") from None
        return position


@dataclass
class Round:
    stats: Counter[str]
    done: bool
    after: str | None = None
    inner: str | None = None
    objects: list[dict[str, str]] | None = None
    orphans: list[str] | None = None


@dataclass
class Run:
    """One job's work: what a round needs."""

    session: Session
    data: CleanupData
    settings: Settings
    now: datetime
    aws: AwsClients

    @property
    def limit(self) -> int:
        return self.settings.cleanup_batch_size

    @property
    def lock(self) -> bool:
        return not self.data.dry_run

    def days_ago(self, days: int) -> datetime:
        return self.now - timedelta(days=days)


def cleanup(job: Job[CleanupData], session: Session, deps: Dependencies) -> list[Effect]:
    """Handle one cleanup job (or continuation): rounds until its steps are done or its time budget is
    spent; returns the S3 deletions and the continuation to perform after commit."""
    settings = deps.settings
    data = job.data
    steps = steps_of(data)
    position = Position.load(data.cursor, steps)
    run = Run(session, data, settings, datetime.now(UTC), deps.aws)
    deadline = time.monotonic() + settings.cleanup_time_budget_seconds
    stats: Counter[str] = Counter()
    objects: list[dict[str, str]] = []
    orphans: list[str] = []
    rounds = 0
    while position.step < len(steps):
        step = steps[position.step]
        if (
            step.startswith("expired-attachments")
            and not settings.attachments_bucket
            and (not data.dry_run or step == "expired-attachments/orphans")
        ):
            logger.warning("ATTACHMENTS_BUCKET is not set: expired attachments are not deleted")
            stats["attachment_steps_skipped"] += 1
            result = Round(Counter(), done=True)
        else:
            result = _ROUNDS[step](run, position.after, position.inner)
        rounds += 1
        stats.update(result.stats)
        objects.extend(result.objects or [])
        orphans.extend(result.orphans or [])
        position = (
            Position(position.step + 1)
            if result.done
            else Position(position.step, result.after, result.inner)
        )
        if (
            time.monotonic() >= deadline
            or len(objects) + len(orphans) + run.limit > MAX_OBJECTS_PER_JOB
            or stats["s3_objects_listed"] >= settings.cleanup_max_listed_keys
        ):
            break
    finished = position.step >= len(steps)
    _report(data, stats, rounds, finished)
    effects: list[Effect] = []
    if objects:
        assert settings.attachments_bucket is not None
        effects.append(DeleteAttachmentObjects(bucket=settings.attachments_bucket, objects=objects))
    if orphans:
        assert settings.attachments_bucket is not None
        effects.append(DeleteOrphanObjects(bucket=settings.attachments_bucket, keys=orphans))
    if not finished:
        continuation = CLEANUP.new(
            data.model_copy(update={"cursor": position.dump(steps)}),
            job_id=job.child_job_id("continuation"),
            correlation_id=job.follow_up_correlation_id,
        )
        effects.append(EnqueueJobs.of(CLEANUP, [continuation]))
    return effects


def _uuid(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value is not None else None


def _next(keys: list[Any], limit: int) -> tuple[bool, str | None]:
    return len(keys) < limit, (str(keys[-1]) if keys else None)


def _soft_delete_round(run: Run, after: str | None, _: str | None) -> Round:
    # A conversation's own retention wins over the job's (its policy; the job's is a sweep-wide default).
    retention = run.data.retention_days or run.settings.cleanup_retention_days
    ids = repository.pick_messages_to_soft_delete(
        run.session, run.now, retention, _uuid(after), run.limit, lock=run.lock
    )
    stats: Counter[str] = Counter()
    if run.data.dry_run:
        stats["messages_soft_deleted"] = len(ids)
    elif ids:
        stats["messages_soft_deleted"] = repository.soft_delete_messages(run.session, ids, run.now)
        stats["search_entries_deleted"] = repository.delete_search_entries(run.session, ids)
    done, last = _next(ids, run.limit)
    return Round(stats, done, last)


def _hard_delete_round(run: Run, after: str | None, _: str | None) -> Round:
    ids = repository.pick_messages_to_purge(
        run.session, run.days_ago(run.settings.cleanup_grace_days), _uuid(after), run.limit, lock=run.lock
    )
    stats: Counter[str] = Counter()
    if run.data.dry_run:
        stats["messages_purged"] = len(ids)
    elif ids:
        stats.update(repository.purge_messages(run.session, ids, run.now))
    done, last = _next(ids, run.limit)
    return Round(stats, done, last)


def _deleted_conversation_round(run: Run, after: str | None, inner: str | None) -> Round:
    """One batch of the first conversation past the grace period after ``after``: its messages, then (once
    they are gone) its notifications, then the rest and the row. ``after`` moves on once it is purged."""
    session, limit = run.session, run.limit
    grace = run.days_ago(run.settings.cleanup_grace_days)
    conversation = repository.next_deleted_conversation(session, grace, _uuid(after))
    stats: Counter[str] = Counter()
    if conversation is None:
        return Round(stats, done=True)
    if run.lock and not repository.lock_conversation(session, conversation):
        return Round(stats, done=False, after=str(conversation))  # another cleanup holds it
    # Crypto-shredding first: its sealed content is unreadable from this commit on, whatever is left.
    if not run.data.dry_run and (shredded := shred_conversation(session, conversation)):
        stats["key_versions_shredded"] += shredded
    messages = repository.pick_conversation_messages(
        session, conversation, _uuid(inner) if run.data.dry_run else None, limit
    )
    if run.data.dry_run:
        stats["messages_purged"] = len(messages)
        if len(messages) == limit:
            return Round(stats, done=False, after=after, inner=str(messages[-1]))
        stats.update(repository.count_conversation_dependents(session, conversation))
        stats["conversations_purged"] = 1
        return Round(stats, done=False, after=str(conversation))
    if messages:
        stats.update(repository.purge_messages(session, messages, run.now))
        if len(messages) == limit:
            return Round(stats, done=False, after=after)
    notifications = repository.delete_conversation_notifications(session, conversation, limit)
    stats["in_app_notifications_deleted"] = notifications
    if notifications == limit:
        return Round(stats, done=False, after=after)
    stats.update(repository.delete_conversation(session, conversation))
    return Round(stats, done=False, after=str(conversation))


def _attachment_round(run: Run, after: str | None, _: str | None) -> Round:
    rows = repository.pick_expired_attachments(run.session, run.now, _uuid(after), run.limit, lock=run.lock)
    stats: Counter[str] = Counter()
    done, last = _next([row.id for row in rows], run.limit)
    if run.data.dry_run:
        stats["attachments_deleted"] = len(rows)
        return Round(stats, done, last)
    objects = [{"id": str(row.id), "key": row.storage_key} for row in rows]
    return Round(stats, done, last, objects=objects)


def _orphan_round(run: Run, after: str | None, _: str | None) -> Round:
    """One page of the attachments prefix after ``after``: its keys that no row names and that are older
    than the minimum age are orphans (reported; deleted after commit only when the setting asks)."""
    settings = run.settings
    params: dict[str, Any] = {"Bucket": settings.attachments_bucket, "MaxKeys": run.limit}
    if settings.attachments_prefix:
        params["Prefix"] = settings.attachments_prefix
    if after is not None:
        params["StartAfter"] = after
    try:
        page = run.aws.s3().list_objects_v2(**params)
    except (ClientError, BotoCoreError) as exc:
        raise DependencyThrottled(f"S3 refused ListObjectsV2: {type(exc).__name__}") from exc
    listed = page.get("Contents") or []
    cutoff = run.now - timedelta(hours=settings.cleanup_orphan_min_age_hours)
    keys = [obj["Key"] for obj in listed]
    known = repository.known_storage_keys(run.session, keys)
    orphans = [obj["Key"] for obj in listed if obj["Key"] not in known and obj["LastModified"] <= cutoff]
    stats: Counter[str] = Counter({"s3_objects_listed": len(keys), "orphan_objects_found": len(orphans)})
    if orphans:
        logger.warning("attachment objects without a row", extra={"count": len(orphans)})
    done = not page.get("IsTruncated") or not keys
    last = _cursor_key(keys[-1]) if keys else after
    if not done and after is not None and last is not None and last <= after:
        logger.warning("attachment keys too long to page through: the sweep stops here")
        done = True
    delete = settings.cleanup_delete_orphan_objects and not run.data.dry_run
    return Round(stats, done, last, orphans=orphans if delete else None)


def _cursor_key(key: str) -> str:
    """``key``, shortened until the cursor holds it (as JSON) in MAX_CURSOR_KEY characters."""
    while len(json.dumps(key)) > MAX_CURSOR_KEY:
        key = key[: len(key) * 9 // 10]
    return key


def _inbox_round(run: Run, after: str | None, _: str | None) -> Round:
    cutoff = run.days_ago(run.settings.cleanup_inbox_retention_days)
    ids = repository.pick_inbox_rows(run.session, cutoff, _uuid(after), run.limit, lock=run.lock)
    count = len(ids) if run.data.dry_run or not ids else repository.delete_inbox_rows(run.session, ids)
    done, last = _next(ids, run.limit)
    return Round(Counter({"inbox_rows_deleted": count}), done, last)


def _failures_round(run: Run, after: str | None, _: str | None) -> Round:
    cutoff = run.days_ago(run.settings.cleanup_failures_retention_days)
    ids = repository.pick_failures(
        run.session, cutoff, int(after) if after is not None else None, run.limit, lock=run.lock
    )
    count = len(ids) if run.data.dry_run or not ids else repository.delete_failures(run.session, ids)
    done, last = _next(ids, run.limit)
    return Round(Counter({"failure_rows_deleted": count}), done, last)


def _batch_content_round(run: Run, after: str | None, _: str | None) -> Round:
    cutoff = run.days_ago(run.settings.cleanup_batch_content_retention_days)
    ids = repository.pick_batches_with_content(run.session, cutoff, _uuid(after), run.limit, lock=run.lock)
    count = len(ids) if run.data.dry_run or not ids else forget_finished_content(run.session, ids)
    done, last = _next(ids, run.limit)
    return Round(Counter({"batch_contents_cleared": count}), done, last)


def _redrives_round(run: Run, after: str | None, _: str | None) -> Round:
    cutoff = run.days_ago(run.settings.cleanup_redrives_retention_days)
    ids = repository.pick_redrives(run.session, cutoff, _uuid(after), run.limit, lock=run.lock)
    count = len(ids) if run.data.dry_run or not ids else repository.delete_redrives(run.session, ids)
    done, last = _next(ids, run.limit)
    return Round(Counter({"redrive_records_deleted": count}), done, last)


_ROUNDS = {
    "old-messages/soft": _soft_delete_round,
    "old-messages/hard": _hard_delete_round,
    "deleted-conversations": _deleted_conversation_round,
    "expired-attachments": _attachment_round,
    "expired-attachments/orphans": _orphan_round,
    "housekeeping/inbox": _inbox_round,
    "housekeeping/failures": _failures_round,
    "housekeeping/batch-content": _batch_content_round,
    "housekeeping/redrives": _redrives_round,
}


def _metric_name(key: str) -> str:
    return "Cleanup" + "".join(part.capitalize() for part in key.split("_"))


def _report(data: CleanupData, stats: Counter[str], rounds: int, finished: bool) -> None:
    """Counts only: never a key, an id or content."""
    logger.info(
        "cleanup rounds done",
        extra={
            "task": data.task,
            "dry_run": data.dry_run,
            "rounds": rounds,
            "finished": finished,
            "stats": dict(sorted(stats.items())),
        },
    )
    if not data.dry_run:
        for key, value in stats.items():
            metrics.add_metric(name=_metric_name(key), unit=MetricUnit.Count, value=value)


class S3Object(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    id: uuid.UUID
    key: str


class DeleteAttachmentObjects(Effect):
    """After commit: delete the attachments' S3 objects (DeleteObjects, 1,000 keys per call; keys S3 refuses
    are retried within the job; a key already gone counts as deleted), then the rows of the deleted ones, in
    the effect's transaction. Keys S3 keeps refusing keep their rows (counted ``s3_errors`` with their
    codes): the next cleanup tries them again. A call S3 refuses as a whole retries the job."""

    kind: Literal["cleanup.delete-objects"] = "cleanup.delete-objects"
    bucket: str
    objects: list[S3Object]

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        ids = {obj.key: obj.id for obj in self.objects}
        gone, errors, calls = delete_keys(deps.aws.s3(), self.bucket, list(ids))
        deleted = [ids[key] for key in gone]
        rows = repository.delete_attachment_rows(session, deleted) if deleted else 0
        stats = {
            "s3_objects_deleted": len(deleted),
            "s3_errors": sum(errors.values()),
            "attachments_deleted": rows,
        }
        logger.info(
            "attachment objects deleted", extra={"stats": stats, "s3_calls": calls, "codes": sorted(errors)}
        )
        for key, value in stats.items():
            metrics.add_metric(name=_metric_name(key), unit=MetricUnit.Count, value=value)
        return []


def delete_keys(s3: Any, bucket: str, keys: list[str]) -> tuple[list[str], Counter[str], int]:
    """DeleteObjects, 1,000 keys per call; keys S3 refuses are retried (a key already gone is deleted).
    Returns the deleted keys, the codes of the keys S3 kept refusing, and the number of calls. A call S3
    refuses as a whole retries the job."""
    deleted: list[str] = []
    errors: Counter[str] = Counter()
    calls = 0
    for start in range(0, len(keys), S3_DELETE_BATCH):
        pending = list(dict.fromkeys(keys[start : start + S3_DELETE_BATCH]))
        refused: dict[str, str] = {}
        for attempt in range(S3_ATTEMPTS):
            calls += 1
            try:
                result = s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": key} for key in pending], "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                raise DependencyThrottled(f"S3 refused DeleteObjects: {type(exc).__name__}") from exc
            refused = {
                error["Key"]: str(error.get("Code", "?"))
                for error in result.get("Errors") or []
                if error.get("Key") in pending and error.get("Code") != GONE
            }
            deleted.extend(key for key in pending if key not in refused)
            pending = [key for key in pending if key in refused]
            if not pending:
                break
            if attempt < S3_ATTEMPTS - 1:
                time.sleep(0.05 * 2**attempt)
        errors.update(refused.values())
    return deleted, errors, calls


class DeleteOrphanObjects(Effect):
    """After commit (with CLEANUP_DELETE_ORPHAN_OBJECTS): delete the objects the sweep found without a row,
    except those that a row names by now."""

    kind: Literal["cleanup.delete-orphans"] = "cleanup.delete-orphans"
    bucket: str
    keys: list[str]

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        known = repository.known_storage_keys(session, self.keys)
        keys = [key for key in self.keys if key not in known]
        deleted, errors, calls = delete_keys(deps.aws.s3(), self.bucket, keys)
        stats = {"orphan_objects_deleted": len(deleted), "s3_errors": sum(errors.values())}
        logger.info(
            "orphan objects deleted", extra={"stats": stats, "s3_calls": calls, "codes": sorted(errors)}
        )
        for key, value in stats.items():
            metrics.add_metric(name=_metric_name(key), unit=MetricUnit.Count, value=value)
        return []


# The namespace of the daily jobs' ids: UUIDv5(SCHEDULE_NAMESPACE, "cleanup/<scheduled time>").
SCHEDULE_NAMESPACE = uuid.UUID("6b1f4f8e-2f43-5d0e-9a57-0c1e5a7c3d21")


def scheduled_job(scheduled_time: Any) -> Job[CleanupData]:
    """The daily cleanup job for one firing of the schedule: id UUIDv5 of its scheduled time (a retried
    invocation, or a second delivery of it, is the same job and the inbox drops it), created now. Without a
    scheduled time (an ad-hoc invocation) the id is new."""
    job_id = uuid.uuid4()
    if isinstance(scheduled_time, str):
        try:
            when = datetime.fromisoformat(scheduled_time.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None:
            job_id = uuid.uuid5(SCHEDULE_NAMESPACE, f"cleanup/{when.astimezone(UTC).isoformat()}")
    return CLEANUP.new(CleanupData(task="all"), job_id=job_id)


def send_scheduled_job(deps: Dependencies, scheduled_time: Any) -> Job[CleanupData]:
    """Send the daily job to CleanupQueue (the schedule's function)."""
    from shared.services.queues import send_jobs

    job = scheduled_job(scheduled_time)
    send_jobs(deps.aws.sqs(), deps.settings.queue_url(CLEANUP), CLEANUP, [job])
    logger.info("daily cleanup job sent", extra={"job_id": str(job.job_id)})
    return job
