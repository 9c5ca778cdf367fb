"""Every query of the notifications domain: the recipient with preferences, devices, mute and unread count
(one query), the in-app row, the delivery rows, and settling them (one ``UPDATE ... FROM (VALUES ...)``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, time
from typing import Any

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
from shared.errors import UnknownEntity
from shared.services.notifications.channels import NotificationContent
from shared.services.notifications.routing import ChannelPreference, Device, PlannedDelivery, Recipient

BADGE_CAP = 999  # unread notifications counted for the APNs badge, at most


def lock_pending_targets(session: Session, job_id: uuid.UUID, channel: str, targets: list[str]) -> set[str]:
    """The ``targets`` of a job's channel whose delivery row is still ``pending``, locked until commit (a
    concurrent duplicate delivery of the job waits, then finds them settled)."""
    return set(
        session.execute(
            select(NotificationDelivery.target)
            .where(
                NotificationDelivery.job_id == job_id,
                NotificationDelivery.channel == channel,
                NotificationDelivery.target.in_(targets),
                NotificationDelivery.status == "pending",
            )
            .with_for_update()
        ).scalars()
    )


def settle_deliveries(
    session: Session,
    job_id: uuid.UUID,
    channel: str,
    outcomes: Sequence[tuple[str, str, str | None, str | None]],
) -> None:
    """Record every (target, status, provider id, error) in one statement."""
    if not outcomes:
        return
    settled = values(
        column("target", String),
        column("status", String),
        column("provider_message_id", String),
        column("error", String),
        name="settled",
    ).data(list(outcomes))
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


def disable_endpoints(session: Session, gone: list[tuple[str, str]]) -> None:
    """Disable the SNS endpoints (arn, reason) a provider reported dead."""
    dead = values(column("arn", String), column("reason", String), name="dead").data(gone)
    session.execute(
        update(DeviceEndpoint)
        .where(DeviceEndpoint.sns_endpoint_arn == dead.c.arn)
        .values(enabled=False, disabled_reason=dead.c.reason, updated_at=func.now())
    )


def load_recipient(
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


def insert_in_app(session: Session, content: NotificationContent, in_app_id: uuid.UUID) -> datetime:
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


def insert_deliveries(
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
