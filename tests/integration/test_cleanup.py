"""cleanup (docs/contracts.md §5): retention (soft, then hard after the grace period), purged conversations,
expired attachments in S3 then in the database, housekeeping; bounded rounds continued by cursor jobs,
dry runs, redeliveries, and the daily schedule's job."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from sqlalchemy import func, insert, select, update

from infra.local_lambda import invoker
from shared import aws as shared_aws
from shared import config as config_module
from shared.db.models import (
    Attachment,
    Conversation,
    ConversationParticipant,
    InAppNotification,
    JobFailure,
    JobInbox,
    Message,
    MessageDelivery,
    MessageRead,
    MessageSearch,
    MutedConversation,
    Redrive,
)
from tests.conftest import queue_messages
from tests.iam import IAM_CALLS
from tests.world import World, job

pytestmark = pytest.mark.integration

BUCKET = "switchboard-attachments"
NOW = datetime.now(UTC)


@pytest.fixture
def cleaner(function, monkeypatch, aws):
    harness = function("CleanupFunction")
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("ATTACHMENTS_BUCKET", BUCKET)
    # As deployed (the IAM check's configuration): the role may list the bucket under this prefix only.
    monkeypatch.setenv("ATTACHMENTS_PREFIX", "attachments/")
    config_module.get_settings.cache_clear()
    return harness


def _settings(monkeypatch, **values: Any) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))
    config_module.get_settings.cache_clear()


def _cleanup(task: str, **data: Any) -> dict[str, Any]:
    return job("cleanup", {"task": task, **data})


def _message(
    world: World,
    conversation: uuid.UUID,
    sender: uuid.UUID,
    *,
    age_days: float = 0,
    deleted_days_ago: float | None = None,
    recipients: tuple[uuid.UUID, ...] = (),
    indexed: bool = True,
) -> uuid.UUID:
    message_id = uuid.uuid4()
    with world.engine.begin() as conn:
        seq = conn.execute(
            select(func.coalesce(func.max(Message.seq), 0) + 1).where(Message.conversation_id == conversation)
        ).scalar_one()
        conn.execute(
            insert(Message).values(
                id=message_id,
                conversation_id=conversation,
                sender_id=sender,
                seq=seq,
                content="the secret plans",
                status="sent",
                created_at=NOW - timedelta(days=age_days),
                deleted_at=None if deleted_days_ago is None else NOW - timedelta(days=deleted_days_ago),
            )
        )
        for recipient in recipients:
            conn.execute(insert(MessageDelivery).values(message_id=message_id, recipient_id=recipient))
            conn.execute(insert(MessageRead).values(message_id=message_id, user_id=recipient, read_at=NOW))
        if indexed:
            conn.execute(
                insert(MessageSearch).values(
                    message_id=message_id,
                    conversation_id=conversation,
                    created_at=NOW - timedelta(days=age_days),
                    search_config="simple",
                    document=func.to_tsvector("simple", "the secret plans"),
                )
            )
    return message_id


def _attachment(
    world: World, key: str, *, message_id: uuid.UUID | None = None, expired: bool = True, upload: bool = True
) -> uuid.UUID:
    attachment_id = uuid.uuid4()
    if upload:
        boto3.client("s3", region_name="us-east-1").put_object(Bucket=BUCKET, Key=key, Body=b"x")
    with world.engine.begin() as conn:
        conn.execute(
            insert(Attachment).values(
                id=attachment_id,
                message_id=message_id,
                storage_key=key,
                content_type="image/png",
                size_bytes=1,
                expires_at=NOW - timedelta(days=1) if expired else NOW + timedelta(days=30),
            )
        )
    return attachment_id


def _keys() -> set[str]:
    listed = boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=BUCKET)
    return {obj["Key"] for obj in listed.get("Contents", [])}


def _ids(world: World, column: Any) -> set[Any]:
    return {row[0] for row in world.rows(select(column))}


def _run(cleaner, body: dict[str, Any]) -> None:
    cleaner.send(body)
    assert cleaner.drain() >= 1


def test_messages_past_the_retention_lose_content_and_search_entry_and_newer_ones_stay(cleaner, world):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    old = _message(world, conversation, alice, age_days=40)
    new = _message(world, conversation, alice, age_days=5)
    _run(cleaner, _cleanup("old-messages", retention_days=30))
    gone, kept = world.message(old), world.message(new)
    assert gone.content is None and gone.deleted_at is not None
    assert kept.content == "the secret plans" and kept.deleted_at is None
    assert _ids(world, MessageSearch.message_id) == {new}


def test_the_retention_defaults_to_the_setting(cleaner, world, monkeypatch):
    _settings(monkeypatch, CLEANUP_RETENTION_DAYS=3)
    alice = world.user("alice")
    conversation = world.conversation([alice])
    old = _message(world, conversation, alice, age_days=5)
    _run(cleaner, _cleanup("old-messages"))
    assert world.message(old).deleted_at is not None


def test_a_conversations_own_retention_wins_over_the_jobs(cleaner, world):
    # Given a conversation keeping messages 7 days and another without a retention of its own
    alice, bob = world.user("alice"), world.user("bob")
    short, default = world.conversation([alice, bob]), world.conversation([alice, bob])
    with world.engine.begin() as conn:
        conn.execute(update(Conversation).where(Conversation.id == short).values(retention_days=7))
    expired = _message(world, short, alice, age_days=10)
    fresh = _message(world, short, alice, age_days=2)
    kept = _message(world, default, alice, age_days=10)
    # When cleanup runs with a 30-day retention
    _run(cleaner, _cleanup("old-messages", retention_days=30))
    # Then the short conversation's 10-day-old message is gone, and the other's is kept by the job's 30 days
    assert world.message(expired).deleted_at is not None
    assert world.message(fresh).deleted_at is None and world.message(kept).deleted_at is None


def test_hard_delete_purges_messages_past_the_grace_period_with_deliveries_reads_and_attachments(
    cleaner, world, monkeypatch
):
    _settings(monkeypatch, CLEANUP_GRACE_DAYS=7)
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    purged = _message(world, conversation, alice, age_days=400, deleted_days_ago=10, recipients=(bob,))
    in_grace = _message(world, conversation, alice, age_days=400, deleted_days_ago=2, recipients=(bob,))
    attachment = _attachment(world, "attachments/a.png", message_id=purged, expired=False)
    # When the whole run happens (old-messages marks the attachment, expired-attachments deletes it)
    _run(cleaner, _cleanup("all", hard_delete=True))
    assert _ids(world, Message.id) == {in_grace}
    assert {row.message_id for row in world.rows(select(MessageDelivery))} == {in_grace}
    assert {row.message_id for row in world.rows(select(MessageRead))} == {in_grace}
    assert attachment not in _ids(world, Attachment.id)
    assert "attachments/a.png" not in _keys()


def test_without_hard_delete_soft_deleted_messages_stay(cleaner, world):
    alice = world.user("alice")
    conversation = world.conversation([alice])
    soft = _message(world, conversation, alice, age_days=400, deleted_days_ago=400)
    _run(cleaner, _cleanup("old-messages"))
    assert _ids(world, Message.id) == {soft}


def test_expired_attachments_leave_s3_then_the_database_and_a_key_already_gone_is_deleted(cleaner, world):
    expired = _attachment(world, "attachments/old.png")
    already_gone = _attachment(world, "attachments/missing.png", upload=False)
    valid = _attachment(world, "attachments/new.png", expired=False)
    marked = _attachment(world, "attachments/marked.png", expired=False)
    with world.engine.begin() as conn:
        conn.execute(update(Attachment).where(Attachment.id == marked).values(deleted_at=NOW))
    _run(cleaner, _cleanup("expired-attachments"))
    assert _keys() == {"attachments/new.png"}
    assert _ids(world, Attachment.id) == {valid}
    assert not {expired, already_gone, marked} & _ids(world, Attachment.id)


def _refusing(key: str, times: int | None, code: str = "InternalError") -> Any:
    """An after-call hook on DeleteObjects that reports ``key`` failed (``times`` times, or always)."""
    refused = [0]

    def after_call(parsed: dict[str, Any], **_: Any) -> None:
        if times is None or refused[0] < times:
            refused[0] += 1
            parsed.setdefault("Errors", []).append({"Key": key, "Code": code, "Message": "injected"})

    return after_call, refused


def test_a_key_s3_refuses_once_is_retried_within_the_job(cleaner, world):
    first = _attachment(world, "attachments/flaky.png")
    s3 = shared_aws.client("s3")
    hook, refused = _refusing("attachments/flaky.png", times=1)
    s3.meta.events.register("after-call.s3.DeleteObjects", hook)
    try:
        cleaner.send(_cleanup("expired-attachments"))
        _, response = cleaner.poll_once()
    finally:
        s3.meta.events.unregister("after-call.s3.DeleteObjects", hook)
    assert response == {"batchItemFailures": []} and refused[0] == 1
    assert first not in _ids(world, Attachment.id)


def test_a_key_s3_keeps_refusing_keeps_its_row_and_the_others_go(cleaner, world):
    stuck = _attachment(world, "attachments/stuck.png")
    fine = _attachment(world, "attachments/fine.png")
    s3 = shared_aws.client("s3")
    hook, refused = _refusing("attachments/stuck.png", times=None, code="AccessDenied")
    s3.meta.events.register("after-call.s3.DeleteObjects", hook)
    try:
        cleaner.send(_cleanup("expired-attachments"))
        _, response = cleaner.poll_once()
    finally:
        s3.meta.events.unregister("after-call.s3.DeleteObjects", hook)
    assert response == {"batchItemFailures": []} and refused[0] == 3
    assert _ids(world, Attachment.id) == {stuck}
    assert fine not in _ids(world, Attachment.id)
    # and the next cleanup tries it again
    _run(cleaner, _cleanup("expired-attachments"))
    assert _ids(world, Attachment.id) == set()


def test_a_dry_run_counts_and_deletes_nothing(cleaner, world, monkeypatch):
    _settings(monkeypatch, CLEANUP_BATCH_SIZE=2, CLEANUP_TIME_BUDGET_SECONDS=60)
    alice = world.user("alice")
    conversation = world.conversation([alice])
    messages = {_message(world, conversation, alice, age_days=800) for _ in range(3)}
    purgeable = _message(world, conversation, alice, age_days=800, deleted_days_ago=400)
    gone_conversation = world.conversation([alice])
    _message(world, gone_conversation, alice)
    with world.engine.begin() as conn:
        conn.execute(
            update(Conversation)
            .where(Conversation.id == gone_conversation)
            .values(deleted_at=NOW - timedelta(days=400))
        )
    attachment = _attachment(world, "attachments/dry.png")
    before = {row.id: row.content for row in world.rows(select(Message))}
    _run(cleaner, _cleanup("all", hard_delete=True, dry_run=True))
    assert {row.id: row.content for row in world.rows(select(Message))} == before
    assert messages | {purgeable} <= set(before)
    assert gone_conversation in _ids(world, Conversation.id)
    assert attachment in _ids(world, Attachment.id) and "attachments/dry.png" in _keys()
    assert len(_ids(world, MessageSearch.message_id)) == 5


def test_work_stops_at_the_time_budget_and_continues_with_a_cursor_job(cleaner, world, monkeypatch, aws):
    _settings(monkeypatch, CLEANUP_BATCH_SIZE=2, CLEANUP_TIME_BUDGET_SECONDS=0)  # one round per job
    alice = world.user("alice")
    conversation = world.conversation([alice])
    old = [_message(world, conversation, alice, age_days=40) for _ in range(5)]
    body = _cleanup("old-messages", retention_days=30)
    cleaner.send(body)
    cleaner.poll_once()
    # Then one batch is done and the continuation waits in the queue, with a cursor and a stable id
    assert sum(world.message(m).deleted_at is not None for m in old) == 2
    [queued] = queue_messages(aws, "CleanupQueue")
    continuation = json.loads(queued["Body"])
    assert continuation["job_id"] == str(uuid.uuid5(uuid.UUID(body["job_id"]), "continuation"))
    assert continuation["data"]["cursor"] and continuation["data"]["retention_days"] == 30
    boto3.client("sqs", region_name="us-east-1").change_message_visibility(
        QueueUrl=aws.queue_urls["CleanupQueue"], ReceiptHandle=queued["ReceiptHandle"], VisibilityTimeout=0
    )
    # and the chain finishes the work
    cleaner.drain()
    assert all(world.message(m).deleted_at is not None for m in old)
    assert queue_messages(aws, "CleanupQueue") == []


def test_a_redelivered_job_changes_nothing_again(cleaner, world):
    alice = world.user("alice")
    conversation = world.conversation([alice])
    old = _message(world, conversation, alice, age_days=40)
    body = _cleanup("old-messages", retention_days=30)
    _run(cleaner, body)
    deleted_at = world.message(old).deleted_at
    newer = _message(world, conversation, alice, age_days=40)
    _run(cleaner, body)  # the same job id again: the inbox drops it
    assert world.message(old).deleted_at == deleted_at
    assert world.message(newer).deleted_at is None


def test_deleted_conversations_past_the_grace_period_are_purged_with_everything_hanging_off_them(
    cleaner, world, monkeypatch
):
    _settings(monkeypatch, CLEANUP_BATCH_SIZE=2, CLEANUP_GRACE_DAYS=7)
    alice, bob = world.user("alice"), world.user("bob")
    gone = world.conversation([alice, bob])
    recent = world.conversation([alice, bob])
    kept = world.conversation([alice, bob])
    for _ in range(3):
        _message(world, gone, alice, recipients=(bob,))
    with_attachment = _message(world, gone, alice)
    attachment = _attachment(world, "attachments/gone.png", message_id=with_attachment, expired=False)
    survivor = _message(world, kept, alice, recipients=(bob,))
    with world.engine.begin() as conn:
        conn.execute(insert(MutedConversation).values(user_id=bob, conversation_id=gone))
        for conversation in (gone, kept):
            conn.execute(
                insert(InAppNotification).values(
                    id=uuid.uuid4(),
                    user_id=bob,
                    category="message",
                    title="t",
                    body="b",
                    conversation_id=conversation,
                )
            )
        conn.execute(
            update(Conversation).where(Conversation.id == gone).values(deleted_at=NOW - timedelta(30))
        )
        conn.execute(update(Conversation).where(Conversation.id == recent).values(deleted_at=NOW))
    _run(cleaner, _cleanup("all"))
    assert _ids(world, Conversation.id) == {recent, kept}
    assert _ids(world, Message.id) == {survivor}
    assert {row.conversation_id for row in world.rows(select(ConversationParticipant))} == {recent, kept}
    assert world.rows(select(MutedConversation)) == []
    assert {row.conversation_id for row in world.rows(select(InAppNotification))} == {kept}
    assert _ids(world, MessageSearch.message_id) == {survivor}
    assert attachment not in _ids(world, Attachment.id) and "attachments/gone.png" not in _keys()


def test_all_trims_old_completed_inbox_rows_old_failures_and_old_redrive_records(cleaner, world):
    old_done, old_open, new_done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with world.engine.begin() as conn:
        for job_id, completed in ((old_done, NOW - timedelta(days=60)), (old_open, None), (new_done, NOW)):
            conn.execute(
                insert(JobInbox).values(
                    job_id=job_id,
                    job_type="send-message",
                    received_at=NOW - timedelta(days=60),
                    completed_at=completed,
                )
            )
        for name, when in (("old", NOW - timedelta(days=200)), ("new", NOW)):
            conn.execute(
                insert(JobFailure).values(
                    sqs_message_id=name,
                    source_queue_arn="arn",
                    job_type="send-message",
                    error_class="X",
                    reason="stale",
                    detail="",
                    attempt=1,
                    permanent=True,
                    first_failed_at=when,
                    last_failed_at=when,
                )
            )
        redrives = {"old": uuid.uuid4(), "running": uuid.uuid4(), "recent": uuid.uuid4()}
        for name, finished in (("old", NOW - timedelta(days=400)), ("running", None), ("recent", NOW)):
            conn.execute(
                insert(Redrive).values(
                    id=redrives[name],
                    job_type="send-message",
                    mode="native",
                    status="running" if finished is None else "completed",
                    dry_run=False,
                    principal="arn:aws:iam::123456789012:user/operator",
                    created_at=NOW - timedelta(days=400),
                    finished_at=finished,
                )
            )
    _run(cleaner, _cleanup("all"))
    assert {old_open, new_done} <= _ids(world, JobInbox.job_id)
    assert old_done not in _ids(world, JobInbox.job_id)
    assert {row.sqs_message_id for row in world.rows(select(JobFailure))} == {"new"}
    assert _ids(world, Redrive.id) == {redrives["running"], redrives["recent"]}  # a year's audit trail kept


def test_a_cursor_that_is_not_this_tasks_is_dead_lettered(cleaner, world, aws):
    cleaner.send(_cleanup("old-messages", cursor='{"step":"housekeeping/inbox"}'))
    assert cleaner.poll_once()[1] == {"batchItemFailures": []}
    assert len(queue_messages(aws, "CleanupDLQ")) == 1


def test_the_daily_schedule_sends_one_job_per_scheduled_time(aws, template, db):
    spec = template.functions["ScheduledCleanupFunction"]
    raw = template.resources["ScheduledCleanupFunction"]["Properties"]["Events"]["Daily"]
    assert raw["Type"] == "ScheduleV2"
    assert json.loads(raw["Properties"]["Input"]) == {"scheduled_time": "<aws.scheduler.scheduled-time>"}
    # Recorded for the IAM check (tests/iam.py): its one AWS call must be granted by its role
    invoke = IAM_CALLS.recording("ScheduledCleanupFunction", invoker(spec, aws.function_environment(spec)))
    first = invoke({"scheduled_time": "2026-03-01T03:30:00Z"})
    again = invoke({"scheduled_time": "2026-03-01T03:30:00Z"})  # Scheduler's retry of the same firing
    next_day = invoke({"scheduled_time": "2026-03-02T03:30:00Z"})
    assert first == again and first != next_day
    bodies = [json.loads(m["Body"]) for m in queue_messages(aws, "CleanupQueue")]
    assert {b["job_id"] for b in bodies} == {first["job_id"], next_day["job_id"]}
    for body in bodies:
        assert body["job_type"] == "cleanup" and body["data"]["task"] == "all"
        created = datetime.fromisoformat(body["created_at"])
        assert abs((datetime.now(UTC) - created).total_seconds()) < 60


def _put(key: str) -> None:
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=BUCKET, Key=key, Body=b"x")


def test_the_sweep_reports_objects_without_a_row_and_deletes_none_by_default(
    cleaner, world, monkeypatch, caplog
):
    _settings(monkeypatch, CLEANUP_ORPHAN_MIN_AGE_HOURS=0)
    kept = _attachment(world, "attachments/kept.png", expired=False)
    _put("attachments/orphan-1.png")
    _put("attachments/orphan-2.png")
    _put("elsewhere/not-ours.png")  # outside the prefix: never listed
    stats = _run_and_read_stats(cleaner, _cleanup("expired-attachments"), caplog)
    assert stats["orphan_objects_found"] == 2 and stats["s3_objects_listed"] == 3
    assert _keys() == {
        "attachments/kept.png",
        "attachments/orphan-1.png",
        "attachments/orphan-2.png",
        "elsewhere/not-ours.png",
    }
    assert _ids(world, Attachment.id) == {kept}


def test_the_sweep_deletes_orphans_when_the_setting_asks_and_pages_with_a_cursor(cleaner, world, monkeypatch):
    _settings(
        monkeypatch,
        CLEANUP_ORPHAN_MIN_AGE_HOURS=0,
        CLEANUP_DELETE_ORPHAN_OBJECTS="true",
        CLEANUP_BATCH_SIZE=2,  # a page of 2 keys per round: 3 pages
    )
    kept = _attachment(world, "attachments/b-kept.png", expired=False)
    for name in ("a", "c", "d", "e"):
        _put(f"attachments/{name}-orphan.png")
    _put("elsewhere/not-ours.png")
    _run(cleaner, _cleanup("all"))
    assert _keys() == {"attachments/b-kept.png", "elsewhere/not-ours.png"}
    assert _ids(world, Attachment.id) == {kept}


def test_the_sweep_leaves_young_objects_and_a_dry_run_deletes_nothing(cleaner, world, monkeypatch, caplog):
    _settings(monkeypatch, CLEANUP_DELETE_ORPHAN_OBJECTS="true")
    _put("attachments/uploading.png")  # its row is not written yet: younger than the minimum age (24 h)
    stats = _run_and_read_stats(cleaner, _cleanup("expired-attachments"), caplog)
    assert stats["orphan_objects_found"] == 0 and "attachments/uploading.png" in _keys()
    _settings(monkeypatch, CLEANUP_ORPHAN_MIN_AGE_HOURS=0)
    stats = _run_and_read_stats(cleaner, _cleanup("expired-attachments", dry_run=True), caplog)
    assert stats["orphan_objects_found"] == 1 and "attachments/uploading.png" in _keys()


def test_the_sweep_stops_at_its_listing_bound_and_continues_with_a_cursor_job(
    cleaner, world, monkeypatch, aws
):
    _settings(monkeypatch, CLEANUP_ORPHAN_MIN_AGE_HOURS=0, CLEANUP_BATCH_SIZE=2, CLEANUP_MAX_LISTED_KEYS=2)
    for name in ("a", "b", "c"):
        _put(f"attachments/{name}.png")
    cleaner.send(_cleanup("expired-attachments"))
    cleaner.poll_once()
    [queued] = queue_messages(aws, "CleanupQueue")
    cursor = json.loads(json.loads(queued["Body"])["data"]["cursor"])
    assert cursor == {"step": "expired-attachments/orphans", "after": "attachments/b.png"}


def _run_and_read_stats(cleaner, body: dict[str, Any], caplog) -> dict[str, int]:
    """Run the job and return the statistics it logged."""
    with caplog.at_level("INFO"):
        _run(cleaner, body)
    logged = [r.__dict__["stats"] for r in caplog.records if r.getMessage() == "cleanup rounds done"]
    return {k: v for stats in logged for k, v in stats.items()}
