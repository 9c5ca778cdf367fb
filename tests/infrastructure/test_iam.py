"""Least privilege against behaviour (tests/iam.py): every AWS call a function makes in the tests is allowed
by its role as the SAM transform expands template.yaml. The check runs last, over the calls recorded in the
whole session, and first drives each SQS-fed function through success, a permanent and a transient failure
itself, so it holds whatever ran before it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest
from sqlalchemy import insert, update

from infra.template import ACCOUNT_ID, Template
from shared.config import get_settings
from shared.db.models import Attachment, Conversation, DeviceEndpoint, Message, NotificationPreference
from shared.errors import TransientJobError
from shared.services.crypto.keys import DATA_KEYS
from tests.conftest import WEBSOCKET_ENDPOINT
from tests.faults import failing_statements
from tests.iam import (
    IAM_CALLS,
    Statement,
    allows,
    iam_action,
    not_allowed,
    policy_context,
    role_policies,
    sam_expand,
)
from tests.world import job

REGION = "us-east-1"
API_ID = str(urlparse(WEBSOCKET_ENDPOINT).hostname).split(".")[0]  # the API the tests post to
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:switchboard"
# Every optional feature configured, so every conditional statement is in the role.
CONFIGURED = {
    "DatabaseSecretArn": f"{SECRET}-db",
    "JwtSecretArn": f"{SECRET}-jwt",
    "JwtJwksUrl": "https://auth.switchboard.test/.well-known/jwks.json",
    "JwtIssuer": "https://auth.switchboard.test/",
    "JwtAudience": "switchboard",
    "SesConfigurationSetName": "switchboard",
    "SmsSenderId": "Switchboard",
    "NotificationUnsubscribeUrl": "https://switchboard.test/unsubscribe/{user_id}",
    "AttachmentsBucketName": "switchboard-attachments",
    "AttachmentsPrefix": "attachments/",
}
SNS = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}"


@pytest.fixture(scope="module")
def policies(template: Template) -> dict[str, list[Statement]]:
    expanded = sam_expand(template, parameters=CONFIGURED, region=REGION)
    return role_policies(
        expanded, policy_context(template, parameters=CONFIGURED, api_id=API_ID, region=REGION)
    )


# --- the evaluation itself --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signing_name", "operation", "action"),
    [
        ("sqs", "SendMessageBatch", "sqs:SendMessage"),
        ("sqs", "ChangeMessageVisibilityBatch", "sqs:ChangeMessageVisibility"),
        ("sqs", "GetQueueUrl", "sqs:GetQueueUrl"),
        ("execute-api", "PostToConnection", "execute-api:ManageConnections"),
        ("execute-api", "DeleteConnection", "execute-api:ManageConnections"),
        ("ses", "SendEmail", "ses:SendEmail"),  # SES v2 signs as "ses"
        ("sns", "Publish", "sns:Publish"),
        ("s3", "ListObjectsV2", "s3:ListBucket"),  # a listing is authorized on the bucket
        ("secretsmanager", "GetSecretValue", "secretsmanager:GetSecretValue"),
    ],
)
def test_operations_map_to_the_iam_actions_that_authorize_them(signing_name, operation, action):
    assert iam_action(signing_name, operation) == action


def statement(**raw: Any) -> Statement:
    return Statement.of({"Effect": "Allow", **raw})


def test_actions_match_case_insensitively_with_wildcards_and_resources_exactly():
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:jobs"
    assert allows([statement(Action="SQS:send*", Resource=queue)], "sqs:SendMessage", queue)
    assert not allows(
        [statement(Action="sqs:SendMessage", Resource=queue)], "sqs:SendMessage", queue + "-dlq"
    )
    assert allows(
        [statement(Action="sqs:SendMessage", Resource=f"{queue}?dlq")], "sqs:SendMessage", queue + "-dlq"
    )
    assert not allows([statement(Action="sqs:SendMessage", Resource=queue.upper())], "sqs:SendMessage", queue)
    assert not allows([statement(NotAction="sqs:*", Resource="*")], "sqs:SendMessage", queue)
    # an unknown resource is matched on the action alone
    assert allows(
        [statement(Action="ses:SendEmail", Resource="arn:aws:ses:r:a:identity/x")], "ses:SendEmail", None
    )


def test_a_deny_wins_and_a_conditional_allow_is_not_counted():
    allow = statement(Action="sns:Publish", Resource="*")
    assert not allows(
        [allow, statement(Effect="Deny", Action="sns:*", Resource=f"{SNS}:*")], "sns:Publish", f"{SNS}:t"
    )
    conditional = statement(
        Action="sns:Publish", Resource="*", Condition={"Bool": {"aws:SecureTransport": "true"}}
    )
    assert not allows([conditional], "sns:Publish", "+14155550123")


def test_a_string_condition_on_a_recorded_key_is_evaluated():
    bucket = "arn:aws:s3:::b"
    listing = statement(
        Action="s3:ListBucket", Resource=bucket, Condition={"StringLike": {"s3:prefix": "attachments/*"}}
    )
    assert allows([listing], "s3:ListBucket", bucket, [("s3:prefix", "attachments/")])
    assert not allows([listing], "s3:ListBucket", bucket, [("s3:prefix", "other/")])
    assert not allows([listing], "s3:ListBucket", bucket)  # no prefix: the whole bucket
    exact = statement(
        Action="s3:ListBucket", Resource=bucket, Condition={"StringEquals": {"s3:prefix": "a/"}}
    )
    assert allows([exact], "s3:ListBucket", bucket, [("s3:prefix", "a/")])
    assert not allows([exact], "s3:ListBucket", bucket, [("s3:prefix", "a/b")])
    other = statement(
        Action="s3:ListBucket", Resource=bucket, Condition={"StringNotLike": {"s3:prefix": "x/*"}}
    )
    assert not allows([other], "s3:ListBucket", bucket, [("s3:prefix", "a/")])


# --- the template as SAM expands it ----------------------------------------------------------------------


def test_every_function_has_a_role_with_its_inline_policies(template: Template, policies):
    assert set(policies) == set(template.functions)
    for logical_id, fn in template.functions.items():
        declared = sum(
            len(p.get("Statement", [])) for p in fn.policies if isinstance(p, dict) and "Statement" in p
        )
        assert len(policies[logical_id]) >= declared, logical_id


def test_sms_publishes_are_allowed_to_phone_numbers_only(template: Template, policies):
    # The statement: sns:Publish on everything that is not an SNS ARN
    raw = template.resources["NotificationFunction"]["Properties"]["Policies"][0]["Statement"]
    [sms] = [s for s in raw if s.get("Sid") == "SendSmsToPhoneNumbers"]
    assert "Resource" not in sms
    assert sms["NotResource"] == {"Fn::Sub": "arn:${AWS::Partition}:sns:*:*:*"}
    # What the role then allows: SMS and the endpoints of the two platform applications, no topic
    notification = policies["NotificationFunction"]
    assert allows(notification, "sns:Publish", "+14155550123")
    assert allows(notification, "sns:Publish", f"{SNS}:endpoint/APNS/switchboard-local/{uuid.uuid4()}")
    assert allows(notification, "sns:Publish", f"{SNS}:endpoint/GCM/switchboard-local/{uuid.uuid4()}")
    assert not allows(notification, "sns:Publish", f"{SNS}:endpoint/GCM/another-app/{uuid.uuid4()}")
    assert not allows(notification, "sns:Publish", f"{SNS}:alarms")
    assert not allows(notification, "sns:Publish", "arn:aws:sns:eu-west-1:210987654321:someone-elses-topic")
    others = {
        logical_id for logical_id, statements in policies.items() if allows(statements, "sns:Publish", "+1")
    }
    assert others == {"NotificationFunction"}


# --- the calls the functions make ------------------------------------------------------------------------


def _drive(harness, success: list[dict[str, Any]], transient: dict[str, Any], db, *, group: str) -> None:
    """Success, then a body that is no job (dead-lettered), then a job whose every statement fails
    (reported, its redelivery delayed): the runner's three paths."""
    harness.send(*success)
    assert harness.poll_once()[1] == {"batchItemFailures": []}
    harness.send("not a job", group_id=group)
    assert harness.poll_once()[1] == {"batchItemFailures": []}
    harness.send(transient)
    with failing_statements(db, lambda: TransientJobError("injected"), when=lambda _: True):
        assert len(harness.poll_once()[1]["batchItemFailures"]) == 1


def _drive_the_sqs_fed_functions(function, world, db, monkeypatch) -> str:
    """Each SQS-fed function through its three paths; returns the push endpoint notified."""
    alice, bob, carol = (
        world.user("alice"),
        world.user("bob", email="bob@example.org", phone="+14155550123"),
        world.user(),
    )
    conversation = world.conversation([alice, bob, carol])
    for user in (alice, bob):  # online: posts to their connections
        world.connect(user)
    # send-message: bob is online (a post), carol is not (a notification job), and every message is indexed
    message = world.send_message_data(conversation, alice)
    _drive(
        function("SendMessageFunction"),
        [job("send-message", message)],
        job("send-message", world.send_message_data(conversation, alice)),
        db,
        group="iam-send",
    )
    # delivery-confirmation: bob's receipt is posted to alice
    receipt = {"recipient_id": str(bob), "status": "delivered", "message_ids": [message["message_id"]]}
    _drive(
        function("DeliveryConfirmationFunction"),
        [job("delivery-confirmation", {**receipt, "confirmed_at": "2026-01-14T12:00:00+00:00"})],
        job("delivery-confirmation", {**receipt, "confirmed_at": "2026-01-14T12:01:00+00:00"}),
        db,
        group="iam-confirm",
    )
    # notification: every channel (push to a device, email, SMS, in-app to a live connection)
    sns = boto3.client("sns", region_name=REGION)
    app = sns.create_platform_application(Name="switchboard-local", Platform="APNS", Attributes={})
    token = uuid.uuid4().hex * 2
    endpoint = sns.create_platform_endpoint(PlatformApplicationArn=app["PlatformApplicationArn"], Token=token)
    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity="example.com")
    with db.begin() as conn:
        conn.execute(
            insert(DeviceEndpoint).values(
                id=uuid.uuid4(),
                user_id=bob,
                platform="apns",
                token=token,
                sns_endpoint_arn=endpoint["EndpointArn"],
            )
        )
        for channel in ("email", "sms"):
            conn.execute(insert(NotificationPreference).values(user_id=bob, channel=channel, enabled=True))
    notification = {"user_id": str(bob), "category": "message", "title": "Alice", "body": "dinner at 8?"}
    _drive(
        function("NotificationFunction"),
        [job("notification", notification)],
        job("notification", notification),
        db,
        group="iam-notify",
    )
    # batch-message: one chunk to bob (his send-message job, the continuation) and a frame to alice
    batch = {"sender_id": str(alice), "content": "all hands at 10", "recipient_ids": [str(bob)]}
    _drive(
        function("BatchMessageFunction"),
        [job("batch-message", {**batch, "batch_id": str(uuid.uuid4())})],
        job("batch-message", {**batch, "batch_id": str(uuid.uuid4())}),
        db,
        group="iam-batch",
    )
    # encryption: a message of an encrypted conversation sealed (a data key from KMS), then opened again
    secret = world.conversation([alice, bob], encrypted=True)
    sealed = [uuid.uuid4(), uuid.uuid4()]
    with db.begin() as conn:
        for seq, message_id in enumerate(sealed, start=1):
            conn.execute(
                insert(Message).values(
                    id=message_id, conversation_id=secret, sender_id=alice, seq=seq, content="x"
                )
            )
    encryption = function("EncryptionFunction")
    _drive(
        encryption,
        [job("encryption", {"message_id": str(sealed[0]), "operation": "encrypt"})],
        job("encryption", {"message_id": str(sealed[1]), "operation": "encrypt"}),
        db,
        group="iam-encrypt",
    )
    DATA_KEYS.clear()  # opening it again unwraps the data key
    with db.begin() as conn:
        conn.execute(update(Conversation).where(Conversation.id == secret).values(encryption_enabled=False))
    encryption.send(job("encryption", {"message_id": str(sealed[0]), "operation": "decrypt"}))
    assert encryption.poll_once()[1] == {"batchItemFailures": []}
    # cleanup: one round of expired attachments (an S3 deletion), then its continuation
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=CONFIGURED["AttachmentsBucketName"])
    s3.put_object(Bucket=CONFIGURED["AttachmentsBucketName"], Key="attachments/iam.png", Body=b"x")
    with db.begin() as conn:
        conn.execute(
            insert(Attachment).values(
                id=uuid.uuid4(),
                storage_key="attachments/iam.png",
                content_type="image/png",
                size_bytes=1,
                expires_at=datetime.now(UTC) - timedelta(days=1),
            )
        )
    cleaner = function("CleanupFunction")
    monkeypatch.setenv("ATTACHMENTS_BUCKET", CONFIGURED["AttachmentsBucketName"])
    monkeypatch.setenv("ATTACHMENTS_PREFIX", CONFIGURED["AttachmentsPrefix"])  # the sweep lists it
    monkeypatch.setenv("CLEANUP_TIME_BUDGET_SECONDS", "0")  # one round per job: continuations are sent
    get_settings.cache_clear()
    cleaner.send(job("cleanup", {"task": "all", "cursor": '{"step":"expired-attachments"}'}))
    cleaner.drain()
    monkeypatch.setenv("CLEANUP_TIME_BUDGET_SECONDS", "60")  # one job does it all: nothing else queued
    get_settings.cache_clear()
    cleanup = {"task": "expired-attachments"}
    _drive(cleaner, [job("cleanup", cleanup)], job("cleanup", cleanup), db, group="iam-cleanup")
    return str(endpoint["EndpointArn"])


@pytest.mark.integration
@pytest.mark.runs_last
def test_every_aws_call_a_function_made_is_allowed_by_its_role(
    function, world, db, aws, policies, monkeypatch
):
    # Given the queues the policies name are the ones the functions use
    ctx = policy_context(aws.template, parameters=CONFIGURED, api_id=API_ID, region=REGION)
    assert {k: v for k, v in ctx.attributes.items() if k[1] == "Arn" and ":sqs:" in v} == {
        (logical_id, "Arn"): arn for logical_id, arn in aws.queue_arns.items()
    }
    # When each SQS-fed function has run its success and failure paths (and every other test has run)
    endpoint = _drive_the_sqs_fed_functions(function, world, db, monkeypatch)
    # (the recorder saw them: dead-lettering, enqueueing, backoff, pushes, SMS, email, posts)
    arns = aws.queue_arns
    expected = {
        "SendMessageFunction": {
            ("sqs:SendMessage", arns["SendMessageDLQ"]),
            ("sqs:SendMessage", arns["IndexingQueue"]),
            ("sqs:SendMessage", arns["NotificationQueue"]),
            ("sqs:ChangeMessageVisibility", arns["SendMessageQueue"]),
        },
        "DeliveryConfirmationFunction": {
            ("sqs:SendMessage", arns["DeliveryConfirmationDLQ"]),
            ("sqs:ChangeMessageVisibility", arns["DeliveryConfirmationQueue"]),
        },
        "BatchMessageFunction": {
            ("sqs:SendMessage", arns["BatchMessageDLQ"]),
            ("sqs:SendMessage", arns["SendMessageQueue"]),
            ("sqs:SendMessage", arns["BatchMessageQueue"]),
            ("sqs:ChangeMessageVisibility", arns["BatchMessageQueue"]),
            ("kms:GenerateDataKey", aws.attributes[("EncryptionKey", "Arn")]),  # content sealed for retries
        },
        "NotificationFunction": {
            ("sqs:SendMessage", arns["NotificationDLQ"]),
            ("sqs:ChangeMessageVisibility", arns["NotificationQueue"]),
            ("sns:Publish", endpoint),
            ("sns:Publish", "+14155550123"),
            ("ses:SendEmail", None),
        },
        "EncryptionFunction": {
            ("sqs:SendMessage", arns["EncryptionDLQ"]),
            ("sqs:ChangeMessageVisibility", arns["EncryptionQueue"]),
            ("kms:GenerateDataKey", aws.attributes[("EncryptionKey", "Arn")]),
            ("kms:Decrypt", aws.attributes[("EncryptionKey", "Arn")]),
        },
        "CleanupFunction": {
            ("sqs:SendMessage", arns["CleanupDLQ"]),
            ("sqs:SendMessage", arns["CleanupQueue"]),
            ("sqs:ChangeMessageVisibility", arns["CleanupQueue"]),
            ("s3:DeleteObject", "arn:aws:s3:::switchboard-attachments/attachments/iam.png"),
            ("s3:ListBucket", "arn:aws:s3:::switchboard-attachments"),
        },
    }
    for logical_id, calls in expected.items():
        recorded = IAM_CALLS.of(logical_id)
        assert calls <= {(call.action, call.resource) for call in recorded}, logical_id
        if logical_id not in ("CleanupFunction", "EncryptionFunction"):  # they post to no connection
            assert "execute-api:ManageConnections" in {call.action for call in recorded}, logical_id
    # Then every call recorded in the session is allowed by its function's role
    refused = not_allowed(IAM_CALLS.calls, policies)
    if refused:
        pytest.fail("AWS calls the function's role does not allow:\n" + "\n".join(map(str, refused)), False)
