"""One notification to one target through its provider: SNS mobile push (APNs, FCM), SES v2 email, SNS SMS.

Every ``send_*`` returns the provider's message id, or raises

* :class:`DeliveryRejected` when the provider refuses that target for good (a disabled or unknown endpoint,
  an address SES rejects, a number that opted out): the caller records it and does not retry;
* :class:`DependencyThrottled` for everything retrying can fix: throttling and 5xx (after botocore's own
  retries), timeouts and connection errors, and errors that are not about the target (missing permission,
  unknown configuration set), so a deployment problem is retried, then dead-lettered, never dropped.

The ``*_request`` builders are pure: what is sent is testable without AWS. Exceptions and logs carry error
codes only, never addresses or content."""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.aws import AwsClients
from shared.config import Settings
from shared.errors import DeliveryRejected, DependencyThrottled

PUSH_PAYLOAD_BYTES = 4096  # APNs and FCM both refuse larger notification payloads
PUSH_BODY_CHARS = 1_000
SMS_MAX_CHARS = 320  # two concatenated segments at most
SNS_PLATFORM_KEYS = {"apns": "APNS", "apns_sandbox": "APNS_SANDBOX", "fcm": "GCM"}

# Provider codes that refuse the target itself. Anything else that is not a success is retried.
PUSH_REJECTIONS = frozenset(
    {"EndpointDisabled", "InvalidParameter", "NotFound", "PlatformApplicationDisabled"}
)
# Of those, the ones that mean the endpoint will not work again until the device registers anew.
ENDPOINT_GONE = frozenset({"EndpointDisabled", "InvalidParameter", "NotFound"})
EMAIL_REJECTIONS = frozenset({"MessageRejected", "BadRequestException", "InvalidParameterValue"})
SMS_REJECTIONS = frozenset({"InvalidParameter", "InvalidParameterValue", "OptedOut"})


@dataclass(frozen=True)
class NotificationContent:
    """What a notification says, as the job carries it (plus the in-app notification id, when one exists)."""

    user_id: uuid.UUID
    category: str
    title: str
    body: str
    data: dict[str, Any] = field(default_factory=dict)
    conversation_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None
    notification_id: uuid.UUID | None = None

    @property
    def thread(self) -> str:
        """What groups a burst into one notification on the device: the conversation, else the category."""
        return str(self.conversation_id) if self.conversation_id else self.category

    def references(self) -> dict[str, str]:
        ids = {
            "category": self.category,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "notification_id": self.notification_id,
        }
        return {k: str(v) for k, v in ids.items() if v is not None}


# --- push (SNS mobile push) -----------------------------------------------------------------------------


def push_request(
    endpoint_arn: str, platform: str, content: NotificationContent, badge: int | None
) -> dict[str, Any]:
    """``sns.publish`` arguments for one platform endpoint (``MessageStructure="json"``)."""
    if platform == "fcm":
        payload = _fit(content.body, lambda body, extra: _fcm_payload(content, body, extra))
    else:
        payload = _fit(content.body, lambda body, extra: _apns_payload(content, body, extra, badge))
    request: dict[str, Any] = {
        "TargetArn": endpoint_arn,
        "MessageStructure": "json",
        "Message": json.dumps(
            {"default": content.title, SNS_PLATFORM_KEYS[platform]: payload}, ensure_ascii=False
        ),
    }
    if platform != "fcm":
        request["MessageAttributes"] = {
            "AWS.SNS.MOBILE.APNS.PUSH_TYPE": {"DataType": "String", "StringValue": "alert"},
            "AWS.SNS.MOBILE.APNS.PRIORITY": {"DataType": "String", "StringValue": "10"},
        }
    return request


def _apns_payload(content: NotificationContent, body: str, extra: bool, badge: int | None) -> dict[str, Any]:
    aps: dict[str, Any] = {
        "alert": {"title": content.title, "body": body},
        "sound": "default",
        "thread-id": content.thread,
    }
    if badge is not None:
        aps["badge"] = badge
    return {"aps": aps, "data": _push_data(content, extra)}


def _fcm_payload(content: NotificationContent, body: str, extra: bool) -> dict[str, Any]:
    # FCM HTTP v1: collapse_key folds undelivered messages of a conversation into one; the notification tag
    # makes a newer one replace the older one in the tray, so a burst shows as one.
    return {
        "fcmV1Message": {
            "message": {
                "notification": {"title": content.title, "body": body},
                "data": _push_data(content, extra),
                "android": {
                    "priority": "high",
                    "collapse_key": content.thread,
                    "notification": {"tag": content.thread},
                },
            }
        }
    }


def _push_data(content: NotificationContent, extra: bool) -> dict[str, str]:
    # FCM data values must be strings; APNs gets the same map for one client code path.
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in content.data.items()} if extra else {}
    return {**data, **content.references()}


def _fit(body: str, build: Callable[[str, bool], dict[str, Any]]) -> str:
    """The platform payload as JSON within PUSH_PAYLOAD_BYTES: the job's extra data goes first, then the
    body is shortened (ids, title and a body prefix always remain)."""
    body = _shorten(body, PUSH_BODY_CHARS)
    extra = True
    while True:
        encoded = json.dumps(build(body, extra), ensure_ascii=False, separators=(",", ":"))
        overflow = len(encoded.encode()) - PUSH_PAYLOAD_BYTES
        if overflow <= 0 or not body:
            return encoded
        if extra:
            extra = False
            continue
        # A character is at most 4 bytes in UTF-8: cut at least that much, and always something.
        keep = len(body) - overflow // 4 - 2
        body = _shorten(body, keep) if keep > 1 else ""


# --- email (SES v2) ---------------------------------------------------------------------------------------


def email_request(
    address: str,
    content: NotificationContent,
    *,
    sender: str,
    configuration_set: str | None = None,
    unsubscribe_url: str | None = None,
) -> dict[str, Any]:
    """``sesv2.send_email`` arguments: Simple content with a text and an HTML body (HTML-escaped) and a
    ``List-Unsubscribe`` header (plus ``List-Unsubscribe-Post`` for one-click when an https URL is set)."""
    link = unsubscribe_url.replace("{user_id}", str(content.user_id)) if unsubscribe_url else None
    targets = [f"<{link}>"] if link else []
    targets.append(f"<mailto:{parseaddr(sender)[1]}?subject=unsubscribe>")
    headers = [{"Name": "List-Unsubscribe", "Value": ", ".join(targets)}]
    if link and link.startswith("https://"):
        headers.append({"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"})
    subject = " ".join(content.title.split())  # no line breaks in a header
    footer = "You get this email because email notifications are on for your account."
    text = f"{content.body}\n\n--\n{footer}\n" + (f"Unsubscribe: {link}\n" if link else "")
    unsubscribe_html = f' <a href="{html.escape(link, quote=True)}">Unsubscribe</a>' if link else ""
    body_html = html.escape(content.body).replace("\n", "<br>\n")
    page = (
        '<!doctype html><html><body style="font-family:sans-serif">'
        f"<h2>{html.escape(content.title)}</h2><p>{body_html}</p>"
        f'<p style="color:#777;font-size:12px">{html.escape(footer)}{unsubscribe_html}</p>'
        "</body></html>"
    )
    request: dict[str, Any] = {
        "FromEmailAddress": sender,
        "Destination": {"ToAddresses": [address]},
        "Content": {
            "Simple": {
                "Subject": {"Data": subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": text, "Charset": "UTF-8"},
                    "Html": {"Data": page, "Charset": "UTF-8"},
                },
                "Headers": headers,
            }
        },
        "EmailTags": [{"Name": "category", "Value": content.category}],
    }
    if configuration_set:
        request["ConfigurationSetName"] = configuration_set
    return request


# --- SMS (SNS) --------------------------------------------------------------------------------------------


def sms_request(
    phone_number: str, content: NotificationContent, *, sender_id: str | None = None
) -> dict[str, Any]:
    """``sns.publish`` arguments for a transactional SMS of at most SMS_MAX_CHARS characters."""
    attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
    if sender_id:
        attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": sender_id}
    return {
        "PhoneNumber": phone_number,
        "Message": _shorten(f"{content.title}: {content.body}", SMS_MAX_CHARS),
        "MessageAttributes": attributes,
    }


# --- sending -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Providers:
    """The providers' clients and settings a delivery uses. Each send returns the provider's message id, or
    raises :class:`DeliveryRejected` (this target, for good) or :class:`DependencyThrottled` (retry)."""

    aws: AwsClients
    settings: Settings

    def send_push(
        self, endpoint_arn: str, platform: str, content: NotificationContent, badge: int | None
    ) -> str:
        request = push_request(endpoint_arn, platform, content, badge)
        return _call("sns", "push", PUSH_REJECTIONS, lambda: self.aws.sns().publish(**request))

    def send_email(self, address: str, content: NotificationContent) -> str:
        request = email_request(
            address,
            content,
            sender=self.settings.require_notification_email_from(),
            configuration_set=self.settings.ses_configuration_set or None,
            unsubscribe_url=self.settings.notification_unsubscribe_url or None,
        )
        return _call("sesv2", "email", EMAIL_REJECTIONS, lambda: self.aws.sesv2().send_email(**request))

    def send_sms(self, phone_number: str, content: NotificationContent) -> str:
        request = sms_request(phone_number, content, sender_id=self.settings.sms_sender_id or None)
        return _call("sns", "sms", SMS_REJECTIONS, lambda: self.aws.sns().publish(**request))


# --- shared -----------------------------------------------------------------------------------------------


def _call(service: str, channel: str, rejections: frozenset[str], send: Callable[[], Any]) -> str:
    try:
        response = send()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in rejections and status < 500:
            raise DeliveryRejected(code) from exc
        raise DependencyThrottled(f"{service} refused the {channel} send: {code}") from exc
    except BotoCoreError as exc:
        raise DependencyThrottled(
            f"{service} unreachable for the {channel} send: {type(exc).__name__}"
        ) from exc
    return str(response["MessageId"])


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"
