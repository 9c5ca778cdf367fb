"""Every sample event under events/ runs through its handler (the same files `sam local invoke -e` takes)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"
ALICE = uuid.UUID("11111111-1111-4111-8111-111111111111")
BOB = uuid.UUID("22222222-2222-4222-8222-222222222222")
CONVERSATION = uuid.UUID("cccccccc-cccc-4ccc-8ccc-cccccccccccc")
# Events run in this order: confirmations refer to the messages the send-message event creates.
ORDER = ["send_message.json", "delivery_confirmation.json", "notification.json"]
# WebSocket events (API Gateway's shapes; file = handler module + optional _variant): Bob is authorized,
# connects, acks Alice's first message, pings, leaves; then the sweeper runs.
WEBSOCKET_ORDER = [
    "ws_authorizer.json",
    "ws_connect.json",
    "ws_default_ack.json",
    "ws_default_ping.json",
    "ws_disconnect.json",
    "ws_sweeper.json",
]
# The secret, issuer and audience the sample authorizer event's token was made with (events/README.md).
SAMPLE_TOKEN_SETTINGS = {
    "JWT_SECRET": "switchboard-sample-events-secret-not-for-production",
    "JWT_ISSUER": "switchboard-local",
    "JWT_AUDIENCE": "switchboard",
}


def test_every_event_file_is_covered():
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(ORDER + WEBSOCKET_ORDER)


def test_every_event_runs_through_its_handler(function, template, db):
    from sqlalchemy import insert

    from infra.seed import add_conversation, add_users

    with db.begin() as conn:
        add_users(conn, ["Alice", "Bob"], ids=[ALICE, BOB])
        add_conversation(conn, [ALICE, BOB], conversation_id=CONVERSATION)
        # Bob's phone, registered with SNS (moto) as the chat API would: notification.json pushes to it.
        import boto3

        from shared.db.models import DeviceEndpoint

        sns = boto3.client("sns", region_name="us-east-1")
        app = sns.create_platform_application(Name="switchboard-local", Platform="GCM", Attributes={})
        arn = sns.create_platform_endpoint(PlatformApplicationArn=app["PlatformApplicationArn"], Token="bob")
        conn.execute(
            insert(DeviceEndpoint).values(
                id=uuid.uuid4(), user_id=BOB, platform="fcm", token="bob", sns_endpoint_arn=arn["EndpointArn"]
            )
        )
    handlers = {spec.module.rsplit(".", 1)[-1]: logical_id for logical_id, spec in template.functions.items()}
    for name in ORDER:
        event = json.loads((EVENTS / name).read_text())
        harness = function(handlers[name.removesuffix(".json")])
        response = harness.invoke(event)
        assert response == {"batchItemFailures": []}, name
        from sqlalchemy import func, select

        from shared.db.models import JobFailure, JobInbox

        with db.connect() as conn:
            assert conn.execute(select(func.count()).select_from(JobFailure)).scalar_one() == 0, name
            job_ids = {uuid.UUID(json.loads(r["body"])["job_id"]) for r in event["Records"]}
            done = conn.execute(select(JobInbox.job_id).where(JobInbox.job_id.in_(job_ids))).scalars().all()
            assert set(done) == job_ids, name
    from shared.db.models import NotificationDelivery

    with db.connect() as conn:
        sent = conn.execute(select(NotificationDelivery.channel, NotificationDelivery.status)).all()
    assert sorted(sent) == [("in_app", "sent")] * 2 + [("push", "sent")] * 2  # notification.json


def test_every_websocket_event_runs_through_its_function(websocket_function, template, db, aws):
    from sqlalchemy import insert

    from shared.db.models import User
    from tests.conftest import queue_messages, ws_frames

    with db.begin() as conn:
        conn.execute(insert(User), [{"id": u, "display_name": str(u)} for u in (ALICE, BOB)])
    modules = {spec.module.rsplit(".", 1)[-1]: logical_id for logical_id, spec in template.functions.items()}
    responses = {}
    for name in WEBSOCKET_ORDER:
        stem = name.removesuffix(".json")
        (module,) = [m for m in modules if stem == m or stem.startswith(f"{m}_")]
        invoke = websocket_function(modules[module], **SAMPLE_TOKEN_SETTINGS)
        responses[name] = invoke(json.loads((EVENTS / name).read_text()))
    connection_id = json.loads((EVENTS / "ws_connect.json").read_text())["requestContext"]["connectionId"]
    assert responses["ws_authorizer.json"]["principalId"] == str(BOB)
    assert responses["ws_authorizer.json"]["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert responses["ws_authorizer.json"]["context"] == {"user_id": str(BOB)}
    for name in ("ws_connect.json", "ws_default_ack.json", "ws_default_ping.json", "ws_disconnect.json"):
        assert responses[name] == {"statusCode": 200}, name
    assert responses["ws_sweeper.json"]["complete"] is True
    (ack,) = [json.loads(m["Body"]) for m in queue_messages(aws, "DeliveryConfirmationQueue")]
    assert ack["data"]["recipient_id"] == str(BOB)
    assert ws_frames(connection_id) == [{"type": "pong"}]
