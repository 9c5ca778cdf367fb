"""What is sent to each provider: payloads and requests, checked against botocore's own service models (so
a field the installed botocore does not know, such as SES v2 Simple ``Headers``, fails here, not in AWS)."""

from __future__ import annotations

import json
import uuid

import botocore.session
import pytest
from botocore.validate import validate_parameters

from shared.services.notifications.channels import (
    PUSH_PAYLOAD_BYTES,
    SMS_MAX_CHARS,
    NotificationContent,
    email_request,
    push_request,
    sms_request,
)

CONVERSATION = uuid.UUID("cccccccc-cccc-4ccc-8ccc-cccccccccccc")
MESSAGE = uuid.UUID("aaaaaaa1-0000-4000-8000-000000000001")
USER = uuid.UUID("22222222-2222-4222-8222-222222222222")
ENDPOINT = "arn:aws:sns:us-east-1:123456789012:endpoint/APNS/app/1"


def content(**changes) -> NotificationContent:
    fields = {
        "user_id": USER,
        "category": "message",
        "title": "Alice",
        "body": "dinner at 8?",
        "data": {"deep_link": "chat/1", "count": 3},
        "conversation_id": CONVERSATION,
        "message_id": MESSAGE,
        **changes,
    }
    return NotificationContent(**fields)


def valid_for(service: str, operation: str, request: dict) -> None:
    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    validate_parameters(request, model.input_shape)


def platform_payload(request: dict) -> dict:
    envelope = json.loads(request["Message"])
    (key,) = set(envelope) - {"default"}
    return json.loads(envelope[key])


def test_apns_payload_has_an_alert_badge_sound_and_a_thread_per_conversation():
    request = push_request(ENDPOINT, "apns", content(), badge=4)
    valid_for("sns", "Publish", request)
    assert (request["TargetArn"], request["MessageStructure"]) == (ENDPOINT, "json")
    assert set(json.loads(request["Message"])) == {"default", "APNS"}
    payload = platform_payload(request)
    assert payload["aps"] == {
        "alert": {"title": "Alice", "body": "dinner at 8?"},
        "badge": 4,
        "sound": "default",
        "thread-id": str(CONVERSATION),
    }
    assert payload["data"]["message_id"] == str(MESSAGE) and payload["data"]["count"] == "3"
    assert request["MessageAttributes"]["AWS.SNS.MOBILE.APNS.PUSH_TYPE"]["StringValue"] == "alert"


def test_apns_sandbox_endpoints_get_the_sandbox_key():
    assert set(json.loads(push_request(ENDPOINT, "apns_sandbox", content(), None)["Message"])) == {
        "default",
        "APNS_SANDBOX",
    }
    assert "badge" not in platform_payload(push_request(ENDPOINT, "apns_sandbox", content(), None))["aps"]


def test_fcm_payload_collapses_a_conversations_burst_into_one():
    request = push_request(ENDPOINT, "fcm", content(), badge=4)
    valid_for("sns", "Publish", request)
    message = platform_payload(request)["fcmV1Message"]["message"]
    assert message["notification"] == {"title": "Alice", "body": "dinner at 8?"}
    assert message["android"]["collapse_key"] == str(CONVERSATION)
    assert message["android"]["notification"]["tag"] == str(CONVERSATION)
    assert all(isinstance(v, str) for v in message["data"].values())
    assert "MessageAttributes" not in request


def test_a_notification_without_conversation_groups_by_category():
    payload = platform_payload(push_request(ENDPOINT, "fcm", content(conversation_id=None), None))
    assert payload["fcmV1Message"]["message"]["android"]["collapse_key"] == "message"


@pytest.mark.parametrize("platform", ["apns", "fcm"])
def test_push_payloads_fit_the_platform_limit_dropping_extra_data_then_shortening_the_body(platform):
    huge = content(body="😀" * 4_000, data={"blob": "x" * 10_000})
    request = push_request(ENDPOINT, platform, huge, badge=1)
    envelope = json.loads(request["Message"])
    raw = envelope["GCM" if platform == "fcm" else "APNS"]
    assert len(raw.encode()) <= PUSH_PAYLOAD_BYTES
    payload = json.loads(raw)
    data = payload["fcmV1Message"]["message"]["data"] if platform == "fcm" else payload["data"]
    assert "blob" not in data and data["message_id"] == str(MESSAGE)
    body = (
        payload["fcmV1Message"]["message"]["notification"]["body"]
        if platform == "fcm"
        else payload["aps"]["alert"]["body"]
    )
    assert body.startswith("😀") and body.endswith("…")


def test_email_has_text_and_escaped_html_bodies_and_list_unsubscribe():
    request = email_request(
        "bob@example.org",
        content(title="Hi\r\nBcc: x", body='<b>"ok"</b>\nbye'),
        sender="Switchboard <notify@example.com>",
        configuration_set="events",
    )
    valid_for("sesv2", "SendEmail", request)
    simple = request["Content"]["Simple"]
    assert simple["Subject"]["Data"] == "Hi Bcc: x"
    assert simple["Body"]["Text"]["Data"].startswith('<b>"ok"</b>\nbye\n')
    assert "&lt;b&gt;&quot;ok&quot;&lt;/b&gt;<br>\nbye" in simple["Body"]["Html"]["Data"]
    assert simple["Headers"] == [
        {"Name": "List-Unsubscribe", "Value": "<mailto:notify@example.com?subject=unsubscribe>"}
    ]
    assert request["FromEmailAddress"] == "Switchboard <notify@example.com>"
    assert request["Destination"] == {"ToAddresses": ["bob@example.org"]}
    assert request["ConfigurationSetName"] == "events"


def test_email_offers_one_click_unsubscribe_when_a_url_is_configured():
    request = email_request(
        "bob@example.org",
        content(),
        sender="notify@example.com",
        unsubscribe_url="https://chat.example.com/unsubscribe?user={user_id}",
    )
    valid_for("sesv2", "SendEmail", request)
    headers = {h["Name"]: h["Value"] for h in request["Content"]["Simple"]["Headers"]}
    assert headers["List-Unsubscribe"] == (
        f"<https://chat.example.com/unsubscribe?user={USER}>, <mailto:notify@example.com?subject=unsubscribe>"
    )
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (
        f"https://chat.example.com/unsubscribe?user={USER}"
        in request["Content"]["Simple"]["Body"]["Html"]["Data"]
    )
    assert "ConfigurationSetName" not in request


def test_sms_is_transactional_short_and_names_the_sender_only_when_set():
    request = sms_request("+14155550123", content(body="y" * 1_000), sender_id="Switchbd")
    valid_for("sns", "Publish", request)
    assert request["PhoneNumber"] == "+14155550123"
    assert len(request["Message"]) == SMS_MAX_CHARS and request["Message"].startswith("Alice: yyy")
    attributes = request["MessageAttributes"]
    assert attributes["AWS.SNS.SMS.SMSType"]["StringValue"] == "Transactional"
    assert attributes["AWS.SNS.SMS.SenderID"]["StringValue"] == "Switchbd"
    assert "AWS.SNS.SMS.SenderID" not in sms_request("+14155550123", content())["MessageAttributes"]
