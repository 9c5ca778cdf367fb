"""notification (DESIGN §6): one notification to one user, on the channels their preferences allow.

In the job's transaction (a constant number of statements whatever the number of devices): the user with
their preferences, enabled devices, mute of the conversation and unread count (one query); the in-app
notification; every delivery row (``pending`` for what is still to send, final for in-app, skips and
invalid addresses). After commit, one :class:`DeliverNotification` effect per external channel sends to that
channel's targets, and a ``notification.new`` frame goes to the user's live connections (:class:`Broadcast`).

What callers may rely on:

* A job is idempotent per channel and target: a delivery row is settled after each send, and a target whose
  row is ``sent`` (or ``failed``) is never sent to again, whatever the redeliveries. A crash between a
  provider's acceptance and the commit of its row can still send twice: at-least-once, never at-most-once.
* Channels are independent: a throttled channel stays pending alone and is retried with its job; a target
  the provider refuses for good is ``failed`` on its row (a dead SNS endpoint is also disabled in
  ``device_endpoints``) and does not fail the job.
* An unknown or deleted user is a permanent failure (``unknown-entity``).

Routing rules and defaults are in :mod:`shared.services.notification_routing`; the providers' requests in
:mod:`shared.services.notification_channels`."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict
from sqlalchemy import String, column, exists, false, func, literal, or_, select, update, values
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from shared.db.models import (
    DeviceEndpoint,
    InAppNotification,
    MutedConversation,
    NotificationDelivery,
    NotificationPreference,
    User,
)
from shared.errors import DeliveryRejected, DependencyThrottled, SwitchboardError, UnknownEntity
from shared.jobs import NotificationJob, child_job_id
from shared.observability import logger, metrics
from shared.services.effects import Broadcast, Effect
from shared.services.notification_channels import (
    ENDPOINT_GONE,
    NotificationContent,
    send_email,
    send_push,
    send_sms,
)
from shared.services.notification_routing import (
    ChannelPreference,
    Device,
    PlannedDelivery,
    Recipient,
    plan_deliveries,
)

BADGE_CAP = 999  # unread notifications counted for the APNs badge, at most


def _utc_now() -> datetime:
    return datetime.now(UTC)


# The clock quiet hours and mutes are judged by; tests replace it.
clock: Callable[[], datetime] = _utc_now


def notify(job: NotificationJob, session: Session, *, now: datetime | None = None) -> list[Effect]:
    """Decide and record every delivery of ``job`` in ``session``; return the sends to perform after commit.

    Raises :class:`UnknownEntity` when the user does not exist or is deleted."""
    data = job.data
    now = now or clock()
    recipient, unread = _load_recipient(session, data.user_id, data.conversation_id, now)
    in_app_id = child_job_id(job.job_id, "in-app")
    plan = plan_deliveries(recipient, data.channels, now, in_app_id)
    in_app = any(p.channel == "in_app" and p.status == "sent" for p in plan)
    content = _content(job, in_app_id if in_app else None)
    effects: list[Effect] = []
    if in_app:
        created_at = _insert_in_app(session, content, in_app_id)
        effects.append(Broadcast(user_ids=[data.user_id], frames=[_frame(content, in_app_id, created_at)]))
    if plan:
        _insert_deliveries(session, job.job_id, data.user_id, plan)
    badge = min(BADGE_CAP, unread + (1 if in_app else 0))
    for channel in ("push", "email", "sms"):
        targets = [
            DeliveryTarget(address=p.target, platform=p.platform)
            for p in plan
            if p.channel == channel and p.status == "pending"
        ]
        if targets:
            effects.append(
                DeliverNotification(
                    channel=channel,
                    targets=targets,
                    badge=badge if channel == "push" else None,
                    notification_id=content.notification_id,
                )
            )
    logger.info(
        "notification planned",
        extra={"deliveries": dict(Counter(f"{p.channel}:{p.error or p.status}" for p in plan))},
    )
    return effects


class DeliveryTarget(BaseModel):
    """An SNS endpoint ARN (with its platform), an email address or a phone number."""

    model_config = ConfigDict(frozen=True)

    address: str
    platform: str | None = None


class DeliverNotification(Effect):
    """Send the job's notification on one external channel to each target whose delivery row is still
    ``pending``; settle every row attempted. Raises :class:`DependencyThrottled` (after recording) when some
    targets are to be retried, which keeps this effect, and only it, pending for the redelivery."""

    kind: Literal["notification.deliver"] = "notification.deliver"
    channel: Literal["push", "email", "sms"]
    targets: list[DeliveryTarget]
    badge: int | None = None
    notification_id: uuid.UUID | None = None

    def perform(self, job: Any, session: Session) -> list[Effect]:
        content = _content(job, self.notification_id)
        # Rows are locked until the runner commits: a concurrent duplicate delivery of this job waits, then
        # finds them settled.
        still_pending = set(
            session.execute(
                select(NotificationDelivery.target)
                .where(
                    NotificationDelivery.job_id == job.job_id,
                    NotificationDelivery.channel == self.channel,
                    NotificationDelivery.target.in_([t.address for t in self.targets]),
                    NotificationDelivery.status == "pending",
                )
                .with_for_update()
            ).scalars()
        )
        outcomes = [self._send(target, content) for target in self.targets if target.address in still_pending]
        _settle(session, job.job_id, self.channel, outcomes)
        _count(self.channel, outcomes)
        retry = [o.retry for o in outcomes if o.retry is not None]
        if not retry:
            return []
        if isinstance(retry[0], DependencyThrottled):
            raise DependencyThrottled(
                f"{len(retry)} {self.channel} target(s) to retry: {retry[0]}"
            ) from retry[0]
        raise retry[0]

    def _send(self, target: DeliveryTarget, content: NotificationContent) -> _Outcome:
        try:
            if self.channel == "push":
                provider_id = send_push(target.address, target.platform or "", content, self.badge)
            elif self.channel == "email":
                provider_id = send_email(target.address, content)
            else:
                provider_id = send_sms(target.address, content)
        except DeliveryRejected as exc:
            return _Outcome(target.address, "failed", error=exc.code)
        except DependencyThrottled as exc:
            # Its message names the provider's error code only; the row stays pending for the retry.
            return _Outcome(target.address, "pending", error=str(exc)[:1000], retry=exc)
        except Exception as exc:  # noqa: BLE001 - settled with the other targets, then raised by perform()
            # A missing setting or a bug: what was already sent in this loop must still be recorded as sent.
            error = str(exc) if isinstance(exc, SwitchboardError) else type(exc).__name__
            return _Outcome(target.address, "pending", error=error[:1000], retry=exc)
        return _Outcome(target.address, "sent", provider_id=provider_id)


@dataclass(frozen=True, slots=True)
class _Outcome:
    target: str
    status: str
    provider_id: str | None = None
    error: str | None = None
    retry: Exception | None = None


def _content(job: NotificationJob, notification_id: uuid.UUID | None) -> NotificationContent:
    data = job.data
    return NotificationContent(
        user_id=data.user_id,
        category=data.category,
        title=data.title,
        body=data.body,
        data=dict(data.data or {}),
        conversation_id=data.conversation_id,
        message_id=data.message_id,
        notification_id=notification_id,
    )


def _settle(session: Session, job_id: uuid.UUID, channel: str, outcomes: Sequence[_Outcome]) -> None:
    """Record every outcome in one statement; dead endpoints are disabled in one more."""
    if not outcomes:
        return
    settled = values(
        column("target", String),
        column("status", String),
        column("provider_message_id", String),
        column("error", String),
        name="settled",
    ).data([(o.target, o.status, o.provider_id, o.error) for o in outcomes])
    session.execute(
        update(NotificationDelivery)
        .where(
            NotificationDelivery.job_id == job_id,
            NotificationDelivery.channel == channel,
            NotificationDelivery.target == settled.c.target,
        )
        .values(
            status=settled.c.status,
            provider_message_id=settled.c.provider_message_id,
            error=settled.c.error,
            attempts=NotificationDelivery.attempts + 1,
            updated_at=func.now(),
        )
    )
    gone = [(o.target, o.error) for o in outcomes if channel == "push" and o.error in ENDPOINT_GONE]
    if gone:
        dead = values(column("arn", String), column("reason", String), name="dead").data(gone)
        session.execute(
            update(DeviceEndpoint)
            .where(DeviceEndpoint.sns_endpoint_arn == dead.c.arn)
            .values(enabled=False, disabled_reason=dead.c.reason, updated_at=func.now())
        )
        logger.info("push endpoints disabled", extra={"count": len(gone)})


def _count(channel: str, outcomes: Sequence[_Outcome]) -> None:
    statuses = Counter("retried" if o.retry is not None else o.status for o in outcomes)
    for status, name in (("sent", "Sent"), ("failed", "Failed"), ("retried", "Retried")):
        if statuses[status]:
            metrics.add_metric(name=f"Notifications{name}", unit=MetricUnit.Count, value=statuses[status])
    logger.info(
        "notification channel delivered",
        extra={
            "channel": channel,
            **{status: statuses[status] for status in ("sent", "failed", "retried")},
            "errors": sorted({o.error for o in outcomes if o.error}),
        },
    )


# --- the job's transaction ------------------------------------------------------------------------------


def _load_recipient(
    session: Session, user_id: uuid.UUID, conversation_id: uuid.UUID | None, now: datetime
) -> tuple[Recipient, int]:
    preferences = (
        select(
            func.jsonb_agg(
                func.jsonb_build_object(
                    "channel",
                    NotificationPreference.channel,
                    "enabled",
                    NotificationPreference.enabled,
                    "quiet_start",
                    NotificationPreference.quiet_start,
                    "quiet_end",
                    NotificationPreference.quiet_end,
                    "time_zone",
                    NotificationPreference.time_zone,
                ),
                type_=JSONB,
            )
        )
        .where(NotificationPreference.user_id == User.id)
        .scalar_subquery()
    )
    devices = (
        select(
            func.jsonb_agg(
                func.jsonb_build_object(
                    "arn", DeviceEndpoint.sns_endpoint_arn, "platform", DeviceEndpoint.platform
                ),
                type_=JSONB,
            )
        )
        .where(DeviceEndpoint.user_id == User.id, DeviceEndpoint.enabled)
        .scalar_subquery()
    )
    muted = (
        exists().where(
            MutedConversation.user_id == User.id,
            MutedConversation.conversation_id == conversation_id,
            or_(MutedConversation.until.is_(None), MutedConversation.until > now),
        )
        if conversation_id is not None
        else false()
    )
    unread_rows = (
        select(literal(1))
        .where(InAppNotification.user_id == User.id, InAppNotification.read_at.is_(None))
        .limit(BADGE_CAP)
        .subquery()
    )
    unread = select(func.count()).select_from(unread_rows).scalar_subquery()
    row = session.execute(
        select(
            User.email,
            User.phone,
            User.deleted_at,
            preferences.label("preferences"),
            devices.label("devices"),
            muted.label("muted"),
            unread.label("unread"),
        ).where(User.id == user_id)
    ).one_or_none()
    if row is None or row.deleted_at is not None:
        raise UnknownEntity("user not found or deleted")
    recipient = Recipient(
        user_id=user_id,
        email=row.email,
        phone=row.phone,
        devices=tuple(Device(d["arn"], d["platform"]) for d in row.devices or []),
        preferences={p["channel"]: _preference(p) for p in row.preferences or []},
        conversation_muted=bool(row.muted),
    )
    return recipient, int(row.unread or 0)


def _preference(raw: dict[str, Any]) -> ChannelPreference:
    start, end = raw.get("quiet_start"), raw.get("quiet_end")
    return ChannelPreference(
        enabled=bool(raw["enabled"]),
        quiet_start=time.fromisoformat(start) if start else None,
        quiet_end=time.fromisoformat(end) if end else None,
        time_zone=raw.get("time_zone") or "UTC",
    )


def _insert_in_app(session: Session, content: NotificationContent, in_app_id: uuid.UUID) -> datetime:
    stmt = insert(InAppNotification).values(
        id=in_app_id,
        user_id=content.user_id,
        category=content.category,
        title=content.title,
        body=content.body,
        data=content.data,
        conversation_id=content.conversation_id,
        message_id=content.message_id,
    )
    # The id derives from the job id: the same job can only ever meet its own row here.
    stmt = stmt.on_conflict_do_update(index_elements=[InAppNotification.id], set_={"id": stmt.excluded.id})
    created_at: datetime = session.execute(stmt.returning(InAppNotification.created_at)).scalar_one()
    return created_at


def _insert_deliveries(
    session: Session, job_id: uuid.UUID, user_id: uuid.UUID, plan: Sequence[PlannedDelivery]
) -> None:
    rows = [
        {
            "job_id": job_id,
            "user_id": user_id,
            "channel": p.channel,
            "target": p.target,
            "status": p.status,
            "error": p.error,
        }
        for p in plan
    ]
    session.execute(insert(NotificationDelivery).values(rows).on_conflict_do_nothing())


def _frame(content: NotificationContent, in_app_id: uuid.UUID, created_at: datetime) -> dict[str, Any]:
    return {
        "type": "notification.new",
        "notification": {
            "id": str(in_app_id),
            "category": content.category,
            "title": content.title,
            "body": content.body,
            "data": content.data,
            "conversation_id": str(content.conversation_id) if content.conversation_id else None,
            "message_id": str(content.message_id) if content.message_id else None,
            "created_at": created_at.isoformat(),
        },
    }
