"""Which channels and targets a notification goes to: preferences, defaults, mutes, quiet hours, contacts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time

import pytest

from shared.services.notifications.routing import (
    ChannelPreference,
    Device,
    PlannedDelivery,
    Recipient,
    in_quiet_hours,
    plan_deliveries,
    valid_email,
    valid_phone_number,
    zone,
)

IN_APP = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
NOW = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)
PHONE = Device("arn:aws:sns:us-east-1:123456789012:endpoint/APNS/app/1", "apns")


def reachable(**changes) -> Recipient:
    fields = {
        "user_id": uuid.uuid4(),
        "email": "bob@example.org",
        "phone": "+14155550123",
        "devices": (PHONE,),
        **changes,
    }
    return Recipient(**fields)


def summary(plan: list[PlannedDelivery]) -> dict[str, tuple[str, str | None]]:
    return {p.channel: (p.status, p.error) for p in plan}


@pytest.mark.parametrize(
    ("start", "end", "local", "quiet"),
    [
        (time(22), time(7), time(23, 30), True),
        (time(22), time(7), time(0, 0), True),
        (time(22), time(7), time(6, 59), True),
        (time(22), time(7), time(7, 0), False),  # the end is exclusive
        (time(22), time(7), time(21, 59), False),
        (time(22), time(7), time(22, 0), True),  # the start is inclusive
        (time(9), time(17), time(12), True),
        (time(9), time(17), time(17), False),
        (time(9), time(17), time(8, 59), False),
        (time(8), time(8), time(8), False),  # equal bounds: no window
    ],
)
def test_quiet_hours_window(start, end, local, quiet):
    instant = datetime.combine(NOW.date(), local, tzinfo=UTC)
    assert in_quiet_hours(instant, start, end, "UTC") is quiet


def test_quiet_hours_are_read_in_the_users_zone_across_daylight_saving():
    # 06:30 UTC is 01:30 in New York in January (UTC-5) and 02:30 in July (UTC-4)
    winter, summer = datetime(2026, 1, 14, 6, 30, tzinfo=UTC), datetime(2026, 7, 14, 6, 30, tzinfo=UTC)
    assert in_quiet_hours(winter, time(1), time(2), "America/New_York") is True
    assert in_quiet_hours(summer, time(1), time(2), "America/New_York") is False
    # Kathmandu is UTC+05:45: 12:00 UTC is 17:45
    assert in_quiet_hours(NOW, time(17, 30), time(18), "Asia/Kathmandu") is True


def test_an_unknown_time_zone_is_read_as_utc():
    assert str(zone("Mars/Olympus_Mons")) == "UTC"
    assert str(zone("../etc/passwd")) == "UTC"
    assert in_quiet_hours(NOW, time(11), time(13), "Not/AZone") is True


def test_defaults_are_push_and_in_app():
    plan = plan_deliveries(reachable(), None, NOW, IN_APP)
    assert summary(plan) == {"in_app": ("sent", None), "push": ("pending", None)}
    assert [p.target for p in plan] == [str(IN_APP), PHONE.endpoint_arn]
    assert plan[1].platform == "apns"


def test_preference_rows_turn_channels_on_and_off():
    preferences = {
        "push": ChannelPreference(enabled=False),
        "email": ChannelPreference(enabled=True),
        "sms": ChannelPreference(enabled=True),
    }
    plan = plan_deliveries(reachable(preferences=preferences), None, NOW, IN_APP)
    assert summary(plan) == {"in_app": ("sent", None), "email": ("pending", None), "sms": ("pending", None)}


def test_requested_channels_pick_among_channels_but_a_user_opt_out_wins():
    preferences = {"sms": ChannelPreference(enabled=False)}
    plan = plan_deliveries(reachable(preferences=preferences), ["email", "sms"], NOW, IN_APP)
    assert summary(plan) == {"email": ("pending", None), "sms": ("skipped", "disabled-by-user")}
    assert plan[1].target == ""


def test_muted_conversation_leaves_in_app_only():
    plan = plan_deliveries(
        reachable(conversation_muted=True), ["push", "email", "sms", "in_app"], NOW, IN_APP
    )
    assert summary(plan) == {
        "in_app": ("sent", None),
        "push": ("skipped", "muted-conversation"),
        "email": ("skipped", "muted-conversation"),
        "sms": ("skipped", "muted-conversation"),
    }


def test_quiet_hours_hold_back_push_and_sms_only():
    window = ChannelPreference(quiet_start=time(11), quiet_end=time(13), time_zone="UTC")
    preferences = dict.fromkeys(("push", "email", "sms", "in_app"), window)
    plan = plan_deliveries(reachable(preferences=preferences), None, NOW, IN_APP)
    assert summary(plan) == {
        "in_app": ("sent", None),
        "push": ("skipped", "quiet-hours"),
        "email": ("pending", None),
        "sms": ("skipped", "quiet-hours"),
    }


def test_missing_contact_data_skips_with_a_reason():
    nobody = Recipient(user_id=uuid.uuid4(), email="  ", phone=None)
    plan = plan_deliveries(nobody, ["push", "email", "sms"], NOW, IN_APP)
    assert summary(plan) == {
        "push": ("skipped", "no-enabled-device"),
        "email": ("skipped", "no-email-address"),
        "sms": ("skipped", "no-phone-number"),
    }


def test_invalid_addresses_fail_under_the_address():
    plan = plan_deliveries(reachable(email="bob@", phone="4155550123"), ["email", "sms"], NOW, IN_APP)
    assert [(p.channel, p.target, p.status, p.error) for p in plan] == [
        ("email", "bob@", "failed", "invalid-email-address"),
        ("sms", "4155550123", "failed", "invalid-phone-number"),
    ]


def test_one_row_per_device():
    twice = (PHONE, PHONE, Device("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/2", "fcm"))
    plan = plan_deliveries(reachable(devices=twice), ["push"], NOW, IN_APP)
    assert [(p.target, p.platform) for p in plan] == [
        (PHONE.endpoint_arn, "apns"),
        ("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/2", "fcm"),
    ]


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("+14155550123", True),
        ("+447911123456", True),
        ("+12", True),
        ("+123456789012345", True),
        ("+1234567890123456", False),  # 16 digits
        ("+0123456", False),
        ("14155550123", False),
        ("+1 415 555 0123", False),
        ("+1-415-555-0123", False),
        ("", False),
    ],
)
def test_phone_numbers_must_be_e164(number, valid):
    assert valid_phone_number(number) is valid


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("bob@example.org", True),
        ("bob.smith+chat@mail.example.co.uk", True),
        ("bob@localhost", False),
        ("bob@@example.org", False),
        ("bob example@example.org", False),
        ("bob@example.org\r\nBcc: eve@example.org", False),
        ("bøb@example.org", False),  # SES needs an ASCII local part
        ("a" * 65 + "@example.org", False),
        ("b@" + "a" * 250 + ".org", False),
    ],
)
def test_email_addresses_are_checked_before_sending(address, valid):
    assert valid_email(address) is valid
