"""notification through NotificationFunction: real PostgreSQL; moto's SNS (platform endpoints, SMS), SES v2
and API Gateway management API, read back from moto's backends. Throttling, which moto never answers, uses
botocore's Stubber on the cached client."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from sqlalchemy import insert, select, update

from shared.aws import client
from shared.db.models import (
    DeviceEndpoint,
    InAppNotification,
    JobFailure,
    JobInbox,
    MutedConversation,
    NotificationDelivery,
    NotificationPreference,
)
from shared.jobs import NOTIFICATION
from shared.services.notifications import service as notifications
from tests.conftest import queue_messages, ws_frames
from tests.world import job

pytestmark = pytest.mark.integration

ACCOUNT, REGION = "123456789012", "us-east-1"
SENDER_DOMAIN = "example.com"  # NOTIFICATION_EMAIL_FROM defaults to notifications@example.com
# A Wednesday in January: New York is UTC-5, Tokyo UTC+9, Berlin UTC+1.
NOON_UTC = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)


# --- fixtures and helpers ---------------------------------------------------------------------------------


@pytest.fixture
def notifier(function):
    return function("NotificationFunction")


@pytest.fixture
def sns(aws):
    return boto3.client("sns", region_name=REGION)


@pytest.fixture
def apps(sns):
    """The platform applications of the template's default parameters, created in moto."""
    return {
        platform: sns.create_platform_application(Name="switchboard-local", Platform=kind, Attributes={})[
            "PlatformApplicationArn"
        ]
        for platform, kind in (("apns", "APNS"), ("fcm", "GCM"))
    }


@pytest.fixture
def ses_identity(aws):
    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity=SENDER_DOMAIN)


@pytest.fixture
def at(monkeypatch):
    """``at(instant)``: the notification service's clock reads ``instant``."""

    def set_clock(instant: datetime) -> None:
        monkeypatch.setattr(notifications, "clock", lambda: instant)

    set_clock(NOON_UTC)
    return set_clock


def device(db, sns, apps, user_id, platform="apns", *, enabled=True) -> str:
    """A device registered the way the chat API does it: an SNS endpoint plus its device_endpoints row."""
    token = uuid.uuid4().hex * 2
    arn = sns.create_platform_endpoint(PlatformApplicationArn=apps[platform], Token=token)["EndpointArn"]
    with db.begin() as conn:
        conn.execute(
            insert(DeviceEndpoint).values(
                id=uuid.uuid4(),
                user_id=user_id,
                platform=platform,
                token=token,
                sns_endpoint_arn=arn,
                enabled=enabled,
            )
        )
    return arn


def preference(db, user_id, channel, enabled=True, quiet=None, time_zone="UTC") -> None:
    start, end = quiet or (None, None)
    with db.begin() as conn:
        conn.execute(
            insert(NotificationPreference).values(
                user_id=user_id,
                channel=channel,
                enabled=enabled,
                quiet_start=start,
                quiet_end=end,
                time_zone=time_zone,
            )
        )


def notification(user_id, **data) -> dict:
    return job(
        "notification",
        {"user_id": str(user_id), "category": "message", "title": "Alice", "body": "dinner at 8?", **data},
    )


def pushes(arn: str) -> list[dict]:
    """Messages moto's SNS accepted for a platform endpoint: the platform's payload, decoded."""
    from moto.sns.models import sns_backends

    endpoint = sns_backends[ACCOUNT][REGION].platform_endpoints[arn]
    decoded = []
    for message in endpoint.messages.values():
        envelope = json.loads(message)
        (key,) = set(envelope) - {"default"}
        decoded.append({"platform": key, **json.loads(envelope[key])})
    return decoded


def texts() -> list[tuple[str, str]]:
    from moto.sns.models import sns_backends

    return list(sns_backends[ACCOUNT][REGION].sms_messages.values())


def emails() -> list:
    from moto.ses.models import ses_backends

    return list(ses_backends[ACCOUNT][REGION].sent_messages)


def deliveries(world, body) -> dict[tuple[str, str], Any]:
    rows = world.rows(
        select(NotificationDelivery).where(NotificationDelivery.job_id == uuid.UUID(body["job_id"]))
    )
    return {(row.channel, row.target): row for row in rows}


def outcomes(world, body) -> dict[str, list[tuple[str, str | None]]]:
    """channel -> [(status, error)] of a job's delivery rows."""
    found: dict[str, list[tuple[str, str | None]]] = {}
    for (channel, _), row in sorted(deliveries(world, body).items()):
        found.setdefault(channel, []).append((row.status, row.error))
    return found


def run(notifier, *bodies):
    notifier.send(*bodies)
    _, response = notifier.poll_once()
    return response


# --- each channel ----------------------------------------------------------------------------------------


def test_push_reaches_every_enabled_device_with_its_platform_payload(notifier, world, db, sns, apps, at):
    # Given bob with an iPhone, an Android phone and an old disabled device, in a conversation
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    iphone, android = device(db, sns, apps, bob, "apns"), device(db, sns, apps, bob, "fcm")
    old = device(db, sns, apps, bob, "apns", enabled=False)
    message_id = str(uuid.uuid4())
    body = notification(
        bob, conversation_id=str(conversation), message_id=message_id, data={"deep_link": "chat/1", "n": 2}
    )
    # When the notification job runs
    assert run(notifier, body) == {"batchItemFailures": []}
    # Then the iPhone gets an APNs alert grouped by conversation, with a badge
    [apns] = pushes(iphone)
    assert apns["platform"] == "APNS"
    assert apns["aps"]["alert"] == {"title": "Alice", "body": "dinner at 8?"}
    assert apns["aps"]["thread-id"] == str(conversation)
    assert apns["aps"]["sound"] == "default"
    assert apns["aps"]["badge"] == 1  # the in-app notification just created is unread
    assert apns["data"]["message_id"] == message_id and apns["data"]["deep_link"] == "chat/1"
    # And the Android phone an FCM v1 message collapsed per conversation (string data only)
    [fcm] = pushes(android)
    message = fcm["fcmV1Message"]["message"]
    assert message["notification"] == {"title": "Alice", "body": "dinner at 8?"}
    assert message["android"]["collapse_key"] == str(conversation)
    assert message["android"]["notification"]["tag"] == str(conversation)
    assert message["data"]["n"] == "2" and message["data"]["conversation_id"] == str(conversation)
    # And nothing goes to the disabled device; each endpoint has a sent row with SNS's message id
    assert pushes(old) == []
    rows = deliveries(world, body)
    for arn in (iphone, android):
        row = rows[("push", arn)]
        assert (row.status, row.attempts, row.error) == ("sent", 1, None)
        assert row.provider_message_id
    assert ("push", old) not in rows


def test_in_app_notification_is_stored_and_framed_to_live_connections(notifier, world, at):
    bob = world.user("bob")
    phone, laptop = world.connect(bob), world.connect(bob)
    body = notification(bob, category="mention", data={"k": "v"})
    assert run(notifier, body) == {"batchItemFailures": []}
    [stored] = world.rows(select(InAppNotification))
    assert (stored.user_id, stored.category, stored.title, stored.body, stored.data, stored.read_at) == (
        bob,
        "mention",
        "Alice",
        "dinner at 8?",
        {"k": "v"},
        None,
    )
    for connection in (phone, laptop):
        [frame] = ws_frames(connection)
        assert frame == {
            "type": "notification.new",
            "notification": {
                "id": str(stored.id),
                "category": "mention",
                "title": "Alice",
                "body": "dinner at 8?",
                "data": {"k": "v"},
                "conversation_id": None,
                "message_id": None,
                "created_at": stored.created_at.isoformat(),
            },
        }
    assert outcomes(world, body)["in_app"] == [("sent", None)]
    assert deliveries(world, body)[("in_app", str(stored.id))].status == "sent"


def test_email_goes_through_ses_with_an_escaped_html_body(notifier, world, db, ses_identity, at):
    bob = world.user("bob", email="bob@example.org")
    preference(db, bob, "email", enabled=True)
    body = notification(bob, title="Alice <3", body="<script>alert(1)</script>\nsee you")
    assert run(notifier, body) == {"batchItemFailures": []}
    [sent] = emails()
    assert sent.source == "notifications@example.com"
    assert sent.destinations == {"ToAddresses": ["bob@example.org"]}
    assert sent.subject == "Alice <3"
    # moto keeps the HTML part of a Simple message: the content is escaped in it
    assert "&lt;script&gt;alert(1)&lt;/script&gt;<br>" in sent.body and "<script>" not in sent.body
    [row] = [r for (channel, _), r in deliveries(world, body).items() if channel == "email"]
    assert (row.target, row.status, row.provider_message_id) == ("bob@example.org", "sent", sent.id)


def test_sms_goes_through_sns_to_an_e164_number(notifier, world, db, at):
    bob = world.user("bob", phone="+14155550123")
    preference(db, bob, "sms", enabled=True)
    body = notification(bob, body="x" * 1000)
    assert run(notifier, body) == {"batchItemFailures": []}
    [(number, text)] = texts()
    assert number == "+14155550123"
    assert text.startswith("Alice: xxx") and len(text) == 320 and text.endswith("…")
    assert deliveries(world, body)[("sms", "+14155550123")].status == "sent"


# --- choosing channels -----------------------------------------------------------------------------------


def test_by_default_only_push_and_in_app_go(notifier, world, db, sns, apps, ses_identity, at):
    bob = world.user("bob", email="bob@example.org", phone="+14155550123")
    phone = device(db, sns, apps, bob)
    body = notification(bob)
    run(notifier, body)
    assert len(pushes(phone)) == 1
    assert emails() == [] and texts() == []
    assert set(outcomes(world, body)) == {"push", "in_app"}


def test_preferences_turn_channels_on_and_off(notifier, world, db, sns, apps, ses_identity, at):
    bob = world.user("bob", email="bob@example.org", phone="+14155550123")
    phone = device(db, sns, apps, bob)
    preference(db, bob, "push", enabled=False)
    preference(db, bob, "in_app", enabled=False)
    preference(db, bob, "email", enabled=True)
    preference(db, bob, "sms", enabled=True)
    body = notification(bob)
    run(notifier, body)
    assert pushes(phone) == [] and world.rows(select(InAppNotification)) == []
    assert len(emails()) == 1 and len(texts()) == 1
    assert set(outcomes(world, body)) == {"email", "sms"}


def test_job_channels_override_defaults_but_never_a_users_opt_out(notifier, world, db, ses_identity, at):
    bob = world.user("bob", email="bob@example.org", phone="+14155550123")
    preference(db, bob, "sms", enabled=False)
    body = notification(bob, channels=["email", "sms"])
    run(notifier, body)
    assert len(emails()) == 1 and texts() == []
    assert outcomes(world, body) == {"email": [("sent", None)], "sms": [("skipped", "disabled-by-user")]}


@pytest.mark.parametrize(
    ("time_zone", "window", "instant", "quiet"),
    [
        # 22:00-07:00 wraps midnight; 03:30 UTC is 22:30 in New York but 12:30 in Tokyo
        ("America/New_York", (time(22), time(7)), datetime(2026, 1, 14, 3, 30, tzinfo=UTC), True),
        ("Asia/Tokyo", (time(22), time(7)), datetime(2026, 1, 14, 3, 30, tzinfo=UTC), False),
        # 12:00 UTC is 21:00 in Tokyo (before the window) and 07:00 in New York (the end is exclusive)
        ("Asia/Tokyo", (time(22), time(7)), NOON_UTC, False),
        ("America/New_York", (time(22), time(7)), NOON_UTC, False),
        ("America/New_York", (time(22), time(7)), NOON_UTC - timedelta(minutes=1), True),
        # a daytime window: 12:00 UTC is 13:00 in Berlin
        ("Europe/Berlin", (time(9), time(17)), NOON_UTC, True),
        ("Europe/Berlin", (time(9), time(17)), NOON_UTC + timedelta(hours=4), False),
        # summer time: 12:00 UTC in July is 14:00 in Berlin
        ("Europe/Berlin", (time(14), time(15)), datetime(2026, 7, 1, 12, tzinfo=UTC), True),
    ],
)
def test_quiet_hours_hold_back_push_and_sms_in_the_users_time_zone(
    notifier, world, db, sns, apps, ses_identity, at, time_zone, window, instant, quiet
):
    bob = world.user("bob", email="bob@example.org", phone="+14155550123")
    phone = device(db, sns, apps, bob)
    for channel in ("push", "sms", "email"):
        preference(db, bob, channel, quiet=window, time_zone=time_zone)
    at(instant)
    body = notification(bob)
    run(notifier, body)
    found = outcomes(world, body)
    if quiet:
        assert pushes(phone) == [] and texts() == []
        assert found["push"] == found["sms"] == [("skipped", "quiet-hours")]
    else:
        assert len(pushes(phone)) == 1 and len(texts()) == 1
        assert found["push"] == found["sms"] == [("sent", None)]
    # In-app and email go either way (email's own window is ignored)
    assert found["in_app"] == found["email"] == [("sent", None)]
    assert len(emails()) == 1


def test_muted_conversation_notifies_in_app_only(notifier, world, db, sns, apps, ses_identity, at):
    alice, bob = world.user("alice"), world.user("bob", email="bob@example.org")
    muted, other = world.conversation([alice, bob]), world.conversation([alice, bob])
    preference(db, bob, "email", enabled=True)
    phone = device(db, sns, apps, bob)
    with db.begin() as conn:
        conn.execute(insert(MutedConversation).values(user_id=bob, conversation_id=muted, until=None))
        # a mute that has expired no longer holds anything back
        conn.execute(
            insert(MutedConversation).values(
                user_id=bob, conversation_id=other, until=NOON_UTC - timedelta(minutes=1)
            )
        )
    in_muted, in_other = (
        notification(bob, conversation_id=str(muted)),
        notification(bob, conversation_id=str(other)),
    )
    run(notifier, in_muted)
    assert outcomes(world, in_muted) == {
        "in_app": [("sent", None)],
        "push": [("skipped", "muted-conversation")],
        "email": [("skipped", "muted-conversation")],
    }
    assert pushes(phone) == [] and emails() == []
    run(notifier, in_other)
    assert len(pushes(phone)) == 1 and len(emails()) == 1


def test_missing_contact_data_skips_each_channel_with_its_reason(notifier, world, at):
    bob = world.user("bob")
    body = notification(bob, channels=["push", "email", "sms", "in_app"])
    assert run(notifier, body) == {"batchItemFailures": []}
    assert outcomes(world, body) == {
        "email": [("skipped", "no-email-address")],
        "in_app": [("sent", None)],
        "push": [("skipped", "no-enabled-device")],
        "sms": [("skipped", "no-phone-number")],
    }
    assert deliveries(world, body)[("push", "")].status == "skipped"


def test_invalid_email_and_phone_fail_their_channel_only(notifier, world, db, sns, apps, at):
    bob = world.user("bob", email="bob at example", phone="0044 20 7946 0000")
    phone = device(db, sns, apps, bob)
    body = notification(bob, channels=["push", "email", "sms"])
    assert run(notifier, body) == {"batchItemFailures": []}
    assert outcomes(world, body) == {
        "email": [("failed", "invalid-email-address")],
        "push": [("sent", None)],
        "sms": [("failed", "invalid-phone-number")],
    }
    assert len(pushes(phone)) == 1 and emails() == [] and texts() == []


def test_an_email_ses_rejects_fails_that_channel_only(notifier, world, db, sns, apps, at):
    # Given no verified SES identity for the sender: SES answers MessageRejected
    bob = world.user("bob", email="bob@example.org")
    phone = device(db, sns, apps, bob)
    body = notification(bob, channels=["push", "email"])
    assert run(notifier, body) == {"batchItemFailures": []}
    assert outcomes(world, body) == {"email": [("failed", "MessageRejected")], "push": [("sent", None)]}
    assert len(pushes(phone)) == 1
    assert world.rows(select(JobInbox.effects_pending, JobInbox.completed_at))[0][0] == []


# --- failures of providers -------------------------------------------------------------------------------


def test_a_disabled_endpoint_is_marked_disabled_and_not_retried(notifier, world, db, sns, apps, at):
    bob = world.user("bob")
    dead, live = device(db, sns, apps, bob, "fcm"), device(db, sns, apps, bob, "apns")
    # SNS disabled the endpoint after the platform refused its token: publish raises EndpointDisabled
    sns.set_endpoint_attributes(EndpointArn=dead, Attributes={"Enabled": "false"})
    body = notification(bob)
    assert run(notifier, body) == {"batchItemFailures": []}
    rows = deliveries(world, body)
    assert (rows[("push", dead)].status, rows[("push", dead)].error) == ("failed", "EndpointDisabled")
    assert rows[("push", live)].status == "sent" and len(pushes(live)) == 1
    endpoints = {r.sns_endpoint_arn: r for r in world.rows(select(DeviceEndpoint))}
    assert (endpoints[dead].enabled, endpoints[dead].disabled_reason) == (False, "EndpointDisabled")
    assert endpoints[live].enabled is True
    # And the next notification does not try it again
    again = notification(bob)
    run(notifier, again)
    in_app_id = NOTIFICATION.load(again).child_job_id("in-app")
    assert set(deliveries(world, again)) == {("push", live), ("in_app", str(in_app_id))}


def test_a_redelivered_job_sends_nothing_twice(notifier, world, db, sns, apps, ses_identity, at):
    bob = world.user("bob", email="bob@example.org", phone="+14155550123")
    preference(db, bob, "email", enabled=True)
    preference(db, bob, "sms", enabled=True)
    phone = device(db, sns, apps, bob)
    connection = world.connect(bob)
    body = notification(bob)
    run(notifier, body)
    # When SQS delivers the same job again (e.g. after a lost delete)
    assert run(notifier, body) == {"batchItemFailures": []}
    # Then nothing is sent again and nothing is written again
    assert len(pushes(phone)) == 1 and len(emails()) == 1 and len(texts()) == 1
    assert len(ws_frames(connection)) == 1
    assert len(world.rows(select(InAppNotification))) == 1
    assert {row.attempts for row in deliveries(world, body).values() if row.channel != "in_app"} == {1}


def test_a_throttled_channel_is_retried_alone(notifier, world, db, sns, apps, at):
    # Given bob with a phone and email on, and SES throttling
    bob = world.user("bob", email="bob@example.org")
    preference(db, bob, "email", enabled=True)
    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity=SENDER_DOMAIN)
    phone = device(db, sns, apps, bob)
    body = notification(bob)
    notifier.send(body)
    with Stubber(client("sesv2")) as ses:
        ses.add_client_error(
            "send_email", service_error_code="TooManyRequestsException", http_status_code=429
        )
        event, response = notifier.poll_once()
        ses.assert_no_pending_responses()
    # Then the job is retried, with push sent and only the email effect still pending
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [event["Records"][0]["messageId"]]
    assert len(pushes(phone)) == 1 and emails() == []
    email = deliveries(world, body)[("email", "bob@example.org")]
    assert (email.status, email.attempts) == ("pending", 1)
    assert "TooManyRequestsException" in email.error
    [pending] = world.rows(select(JobInbox.effects_pending))[0]
    assert [(e["kind"], e["channel"]) for e in pending] == [("notification.deliver", "email")]
    # When the job is redelivered and SES accepts
    assert notifier.invoke(event) == {"batchItemFailures": []}
    # Then the email is sent and the push is not repeated
    assert len(emails()) == 1 and len(pushes(phone)) == 1
    email = deliveries(world, body)[("email", "bob@example.org")]
    assert (email.status, email.attempts, email.error) == ("sent", 2, None)
    assert world.rows(select(JobInbox.effects_pending))[0][0] == []


@pytest.mark.parametrize(
    ("code", "status"),
    [("Throttling", 400), ("InternalError", 500), ("AuthorizationError", 403)],
)
def test_sns_errors_that_retrying_can_fix_keep_the_sms_pending(notifier, world, db, at, code, status):
    bob = world.user("bob", phone="+14155550123")
    preference(db, bob, "sms", enabled=True)
    body = notification(bob)
    notifier.send(body)
    with Stubber(client("sns")) as stub:
        stub.add_client_error("publish", service_error_code=code, http_status_code=status)
        _, response = notifier.poll_once()
    assert len(response["batchItemFailures"]) == 1
    row = deliveries(world, body)[("sms", "+14155550123")]
    assert (row.status, row.attempts) == ("pending", 1) and code in row.error
    assert world.rows(select(JobFailure)) == []


def test_email_without_a_configured_sender_is_retried_until_configured(
    notifier, world, db, sns, apps, ses_identity, at, monkeypatch
):
    from shared.config import get_settings

    bob = world.user("bob", email="bob@example.org")
    preference(db, bob, "email", enabled=True)
    phone = device(db, sns, apps, bob)
    monkeypatch.setenv("NOTIFICATION_EMAIL_FROM", "")
    get_settings.cache_clear()
    body = notification(bob)
    notifier.send(body)
    event, response = notifier.poll_once()
    # A deployment problem: the email waits (retried, then dead-lettered if never fixed); push is done
    assert len(response["batchItemFailures"]) == 1
    email = deliveries(world, body)[("email", "bob@example.org")]
    assert email.status == "pending" and "NOTIFICATION_EMAIL_FROM" in email.error
    assert len(pushes(phone)) == 1 and emails() == []
    # Once configured, the redelivery sends the email and only the email
    monkeypatch.setenv("NOTIFICATION_EMAIL_FROM", "notifications@example.com")
    get_settings.cache_clear()
    assert notifier.invoke(event) == {"batchItemFailures": []}
    assert len(emails()) == 1 and len(pushes(phone)) == 1


def test_a_number_that_opted_out_fails_its_sms_for_good(notifier, world, db, at):
    bob = world.user("bob", phone="+14155550123")
    preference(db, bob, "sms", enabled=True)
    body = notification(bob)
    notifier.send(body)
    with Stubber(client("sns")) as stub:
        stub.add_client_error("publish", service_error_code="OptedOut", http_status_code=400)
        _, response = notifier.poll_once()
    assert response == {"batchItemFailures": []}
    row = deliveries(world, body)[("sms", "+14155550123")]
    assert (row.status, row.error) == ("failed", "OptedOut")


# --- bad jobs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["unknown", "deleted"])
def test_unknown_or_deleted_user_is_dead_lettered(notifier, world, aws, at, case):
    user = uuid.uuid4() if case == "unknown" else world.user("gone", deleted=True)
    body = notification(user)
    assert run(notifier, body) == {"batchItemFailures": []}
    [dead] = queue_messages(aws, "NotificationDLQ")
    assert json.loads(dead["Body"]) == body
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "unknown-entity"
    assert world.rows(select(NotificationDelivery)) == [] and world.rows(select(InAppNotification)) == []


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        {"channels": ["pigeon"]},
        {"title": ""},
        {"user_id": "not-a-uuid"},
        {"category": "gossip"},
        {"extra": "field"},
    ],
)
def test_bad_payloads_go_to_the_dead_letter_queue_with_nothing_written(notifier, world, aws, at, payload):
    bob = world.user("bob")
    if isinstance(payload, str):
        body: str | dict = payload
    else:
        body = notification(bob)
        body["data"].update(payload)
    notifier.send(body)
    _, response = notifier.poll_once()
    assert response == {"batchItemFailures": []}
    [dead] = queue_messages(aws, "NotificationDLQ")
    assert dead["Body"] == (body if isinstance(body, str) else json.dumps(body))
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "invalid-job"
    assert world.rows(select(NotificationDelivery)) == []
    [failure] = world.rows(select(JobFailure))
    assert failure.reason == "invalid-job" and "dinner" not in failure.detail


# --- set-based ------------------------------------------------------------------------------------------


def test_statements_per_job_do_not_grow_with_the_number_of_devices(notifier, world, db, sns, apps, at):
    from tests.integration.test_statements import counting

    def statements_for(devices: int) -> list[str]:
        user = world.user("u")
        for i in range(devices):
            device(db, sns, apps, user, "apns" if i % 2 else "fcm")
        notifier.send(notification(user))
        with counting(db) as statements:
            assert notifier.poll_once()[1] == {"batchItemFailures": []}
        return statements

    assert len(statements_for(1)) == len(statements_for(8))


# --- end to end ------------------------------------------------------------------------------------------


def test_a_message_to_an_offline_recipient_ends_as_a_push_to_their_device(function, world, db, sns, apps, at):
    # Given alice online and bob offline with an iPhone
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    world.connect(alice)
    iphone = device(db, sns, apps, bob, "apns")
    data = world.send_message_data(conversation, alice, "are you coming tonight?")
    # When alice's message goes through send-message, then the notification queue
    send = function("SendMessageFunction")
    send.send(job("send-message", data))
    assert send.poll_once()[1] == {"batchItemFailures": []}
    notifier = function("NotificationFunction")
    assert notifier.drain() == 1
    # Then bob's iPhone shows alice's message in the conversation's thread
    [push] = pushes(iphone)
    assert push["aps"]["alert"] == {"title": "alice", "body": "are you coming tonight?"}
    assert push["aps"]["thread-id"] == str(conversation)
    assert push["data"]["message_id"] == data["message_id"]
    # And bob has it in-app too, tied to the message
    [stored] = world.rows(select(InAppNotification))
    assert (stored.user_id, str(stored.message_id)) == (bob, data["message_id"])
    assert world.rows(select(JobFailure)) == []


def test_delivery_rows_are_unique_per_job_channel_and_target_with_checked_statuses(world, db):
    bob = world.user("bob")
    job_id = uuid.uuid4()
    row = {"job_id": job_id, "user_id": bob, "channel": "push", "target": "arn", "status": "pending"}
    with db.begin() as conn:
        conn.execute(insert(NotificationDelivery).values(row))
    from sqlalchemy.exc import DBAPIError, IntegrityError

    with pytest.raises(IntegrityError), db.begin() as conn:
        conn.execute(insert(NotificationDelivery).values(row))
    with pytest.raises(DBAPIError, match="ck_notification_deliveries_status"), db.begin() as conn:
        conn.execute(update(NotificationDelivery).values(status="delivered"))
