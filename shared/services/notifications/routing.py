"""Which channels and targets a notification goes to (docs/contracts.md §5): pure rules, no I/O.

Defaults, for a channel the user has no preference row for: ``push`` and ``in_app`` on, ``email`` and ``sms``
off (they reach people outside the app and cost money per message, so they are opt-in).

* A job without ``channels`` goes to every channel that is on. A job's ``channels`` picks channels
  regardless of the defaults, but never one the user turned off (a ``disabled-by-user`` skip).
* A muted conversation (``until`` NULL or in the future) sends nothing but in-app (``muted-conversation``).
* Quiet hours hold back push and sms (``quiet-hours``); in-app and email still go. Each channel's window is
  its own preference row's, read in that row's IANA time zone; a window whose start is after its end wraps
  midnight, equal bounds mean no quiet hours, and an unknown time zone is read as UTC (and logged).
* A channel with no target skips (``no-enabled-device``, ``no-email-address``, ``no-phone-number``); an
  email address or phone number (E.164) that is not valid fails that channel only (``invalid-…``).

Skips and failures decided here are channel-wide rows with target ``""``; an address that is not valid is
recorded under that address."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from functools import lru_cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.jobs import NotificationChannel
from shared.observability import logger

DeliveryStatus = Literal["pending", "sent", "failed", "skipped"]

CHANNELS: tuple[NotificationChannel, ...] = get_args(NotificationChannel)
DEFAULT_ON: frozenset[NotificationChannel] = frozenset({"push", "in_app"})
QUIET_HOURS_CHANNELS: frozenset[NotificationChannel] = frozenset({"push", "sms"})
CHANNEL_WIDE = ""  # the target of a row about a channel as a whole

DISABLED_BY_USER = "disabled-by-user"
MUTED_CONVERSATION = "muted-conversation"
QUIET_HOURS = "quiet-hours"
NO_ENABLED_DEVICE = "no-enabled-device"
NO_EMAIL_ADDRESS = "no-email-address"
NO_PHONE_NUMBER = "no-phone-number"
INVALID_EMAIL_ADDRESS = "invalid-email-address"
INVALID_PHONE_NUMBER = "invalid-phone-number"

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# What SES accepts without SMTPUTF8: an ASCII local part and a (punycoded) host name with a dot.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
MAX_EMAIL_LENGTH = 254


@dataclass(frozen=True)
class ChannelPreference:
    enabled: bool = True
    quiet_start: time | None = None
    quiet_end: time | None = None
    time_zone: str = "UTC"


@dataclass(frozen=True)
class Device:
    """An enabled push endpoint of the user."""

    endpoint_arn: str
    platform: str


@dataclass(frozen=True)
class Recipient:
    user_id: uuid.UUID
    email: str | None = None
    phone: str | None = None
    devices: tuple[Device, ...] = ()
    preferences: Mapping[str, ChannelPreference] = field(default_factory=dict)
    conversation_muted: bool = False


@dataclass(frozen=True)
class PlannedDelivery:
    """One delivery row to write: ``pending`` ones are sent after commit, the others are final."""

    channel: NotificationChannel
    target: str
    status: DeliveryStatus
    error: str | None = None
    platform: str | None = None


def plan_deliveries(
    recipient: Recipient,
    requested: Sequence[NotificationChannel] | None,
    now: datetime,
    in_app_id: uuid.UUID,
) -> list[PlannedDelivery]:
    """Every delivery row of one notification, in channel order (in_app, push, email, sms).

    Channels not chosen get no row; the in-app row is ``sent`` (it is written in the job's transaction,
    under ``in_app_id``)."""
    wanted = set(requested) if requested is not None else None
    plan: list[PlannedDelivery] = []
    for channel in ("in_app", "push", "email", "sms"):
        preference = recipient.preferences.get(channel)
        if wanted is None:
            if not _is_on(channel, preference):
                continue
        elif channel not in wanted:
            continue
        elif preference is not None and not preference.enabled:
            plan.append(PlannedDelivery(channel, CHANNEL_WIDE, "skipped", DISABLED_BY_USER))
            continue
        plan.extend(_plan_channel(channel, recipient, preference, now, in_app_id))
    return plan


def _is_on(channel: NotificationChannel, preference: ChannelPreference | None) -> bool:
    return preference.enabled if preference is not None else channel in DEFAULT_ON


def _plan_channel(
    channel: NotificationChannel,
    recipient: Recipient,
    preference: ChannelPreference | None,
    now: datetime,
    in_app_id: uuid.UUID,
) -> list[PlannedDelivery]:
    if channel == "in_app":
        return [PlannedDelivery(channel, str(in_app_id), "sent")]
    if recipient.conversation_muted:
        return [PlannedDelivery(channel, CHANNEL_WIDE, "skipped", MUTED_CONVERSATION)]
    if channel in QUIET_HOURS_CHANNELS and preference is not None and _quiet(preference, now):
        return [PlannedDelivery(channel, CHANNEL_WIDE, "skipped", QUIET_HOURS)]
    if channel == "push":
        devices = {device.endpoint_arn: device for device in recipient.devices}
        if not devices:
            return [PlannedDelivery(channel, CHANNEL_WIDE, "skipped", NO_ENABLED_DEVICE)]
        return [PlannedDelivery(channel, arn, "pending", platform=d.platform) for arn, d in devices.items()]
    if channel == "email":
        return [_address(channel, recipient.email, valid_email, NO_EMAIL_ADDRESS, INVALID_EMAIL_ADDRESS)]
    return [_address(channel, recipient.phone, valid_phone_number, NO_PHONE_NUMBER, INVALID_PHONE_NUMBER)]


def _address(
    channel: NotificationChannel,
    value: str | None,
    valid: Callable[[str], bool],
    missing: str,
    invalid: str,
) -> PlannedDelivery:
    address = (value or "").strip()
    if not address:
        return PlannedDelivery(channel, CHANNEL_WIDE, "skipped", missing)
    if not valid(address):
        return PlannedDelivery(channel, address[:1024], "failed", invalid)
    return PlannedDelivery(channel, address, "pending")


def _quiet(preference: ChannelPreference, now: datetime) -> bool:
    if preference.quiet_start is None or preference.quiet_end is None:
        return False
    return in_quiet_hours(now, preference.quiet_start, preference.quiet_end, preference.time_zone)


def in_quiet_hours(now: datetime, start: time, end: time, time_zone: str) -> bool:
    """Whether the aware instant ``now`` falls in the local-time window ``[start, end)`` of ``time_zone``.

    A window with ``start > end`` wraps midnight (22:00-07:00); ``start == end`` is no window at all."""
    if start == end:
        return False
    local = now.astimezone(zone(time_zone)).time().replace(tzinfo=None)
    start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; UTC (with a warning) when it is unknown or malformed."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("unknown time zone in notification preferences; using UTC", extra={"time_zone": name})
        return ZoneInfo("UTC")


def valid_email(address: str) -> bool:
    """An address SES can send to: ASCII, one ``@``, a host name with at least one dot."""
    return len(address) <= MAX_EMAIL_LENGTH and _EMAIL.fullmatch(address) is not None


def valid_phone_number(number: str) -> bool:
    """E.164: ``+``, country code, at most 15 digits in all."""
    return E164.fullmatch(number) is not None
