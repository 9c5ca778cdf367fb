"""notification (docs/contracts.md §5): one notification to one user, on the channels their preferences allow.

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

Routing rules and defaults are in :mod:`shared.services.notifications.routing`; the providers' requests in
:mod:`shared.services.notifications.channels`."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from shared.errors import DeliveryRejected, DependencyThrottled, SwitchboardError
from shared.jobs import Job, NotificationData
from shared.observability import logger, metrics
from shared.runtime.effects import Effect
from shared.services.connections.broadcast import Broadcast
from shared.services.notifications import repository
from shared.services.notifications.channels import ENDPOINT_GONE, NotificationContent, Providers
from shared.services.notifications.repository import BADGE_CAP
from shared.services.notifications.routing import plan_deliveries

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies


def _utc_now() -> datetime:
    return datetime.now(UTC)


# The clock quiet hours and mutes are judged by; tests replace it.
clock: Callable[[], datetime] = _utc_now


def notify(
    job: Job[NotificationData],
    session: Session,
    deps: Dependencies | None = None,
    *,
    now: datetime | None = None,
) -> list[Effect]:
    """Decide and record every delivery of ``job`` in ``session``; return the sends to perform after commit.

    Raises :class:`UnknownEntity` when the user does not exist or is deleted."""
    data = job.data
    now = now or clock()
    recipient, unread = repository.load_recipient(session, data.user_id, data.conversation_id, now)
    in_app_id = job.child_job_id("in-app")
    plan = plan_deliveries(recipient, data.channels, now, in_app_id)
    in_app = any(p.channel == "in_app" and p.status == "sent" for p in plan)
    content = _content(job, in_app_id if in_app else None)
    effects: list[Effect] = []
    if in_app:
        created_at = repository.insert_in_app(session, content, in_app_id)
        effects.append(Broadcast(user_ids=[data.user_id], frames=[_frame(content, in_app_id, created_at)]))
    if plan:
        repository.insert_deliveries(session, job.job_id, data.user_id, plan)
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

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        content = _content(job, self.notification_id)
        targets = [t.address for t in self.targets]
        still_pending = repository.lock_pending_targets(session, job.job_id, self.channel, targets)
        providers = Providers(deps.aws, deps.settings)
        outcomes = [
            self._send(providers, target, content)
            for target in self.targets
            if target.address in still_pending
        ]
        repository.settle_deliveries(
            session,
            job.job_id,
            self.channel,
            [(o.target, o.status, o.provider_id, o.error) for o in outcomes],
        )
        gone = [(o.target, o.error) for o in outcomes if self.channel == "push" and o.error in ENDPOINT_GONE]
        if gone:
            repository.disable_endpoints(session, gone)
            logger.info("push endpoints disabled", extra={"count": len(gone)})
        _count(self.channel, outcomes)
        retry = [o.retry for o in outcomes if o.retry is not None]
        if not retry:
            return []
        if isinstance(retry[0], DependencyThrottled):
            raise DependencyThrottled(
                f"{len(retry)} {self.channel} target(s) to retry: {retry[0]}"
            ) from retry[0]
        raise retry[0]

    def _send(self, providers: Providers, target: DeliveryTarget, content: NotificationContent) -> _Outcome:
        try:
            if self.channel == "push":
                provider_id = providers.send_push(target.address, target.platform or "", content, self.badge)
            elif self.channel == "email":
                provider_id = providers.send_email(target.address, content)
            else:
                provider_id = providers.send_sms(target.address, content)
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


def _content(job: Job[NotificationData], notification_id: uuid.UUID | None) -> NotificationContent:
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
