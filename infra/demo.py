"""``switchboard demo``: the whole pipeline in one process with no AWS account and no Docker.

Embedded PostgreSQL + moto (queues created from template.yaml), two users with a live WebSocket connection
each (moto's API Gateway management API records what is posted), a few messages through
SendMessageFunction, receipts through DeliveryConfirmationFunction, and what each client received."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.moto_frames import posted_frames

DEMO_WEBSOCKET_ENDPOINT = "https://demo.execute-api.us-east-1.amazonaws.com/prod"


def run_demo(out: Callable[[str], None] = print) -> None:
    import warnings

    # Metrics are disabled for a readable demo; Powertools then never clears its dimensions and warns.
    warnings.filterwarnings("ignore", message="Dimension 'job_type' has already been added")
    warnings.filterwarnings("ignore", category=ResourceWarning)
    from infra.embedded_postgres import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="switchboard-demo-") as tmp:
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "demo",
                "AWS_SECRET_ACCESS_KEY": "demo",
                "AWS_DEFAULT_REGION": "us-east-1",
                "POWERTOOLS_TRACE_DISABLED": "1",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
                "POWERTOOLS_METRICS_DISABLED": "1",
            }
        )
        os.environ.pop("AWS_ENDPOINT_URL", None)
        out("starting embedded PostgreSQL ...")
        with embedded_postgres(Path(tmp) / "pg", keep=False) as database_url:
            os.environ["DATABASE_URL"] = database_url
            _play(out)


def _play(out: Callable[[str], None]) -> None:
    import boto3
    from moto import mock_aws
    from sqlalchemy import select

    from infra.local_lambda import SqsFunctionRunner
    from infra.seed import add_connections, add_conversation, add_users
    from infra.template import load_template, provision
    from shared.db.engine import get_engine
    from shared.db.migrations import upgrade
    from shared.db.models import Message
    from shared.jobs import SCHEMA_VERSION

    engine = get_engine()
    upgrade(engine)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        template = load_template()
        stack = provision(template, sqs_client=sqs, stack_name="switchboard-demo")
        out(f"moto: {len(stack.queue_urls)} queues created from template.yaml")

        def runner(logical_id: str) -> SqsFunctionRunner:
            spec = template.functions[logical_id]
            environment = stack.function_environment(spec)
            environment["WEBSOCKET_ENDPOINT"] = DEMO_WEBSOCKET_ENDPOINT
            environment.pop("DB_SECRET_ARN", None)
            queue = stack.queue_urls[spec.sqs_events[0].queue_logical_id]
            return SqsFunctionRunner(spec, queue, sqs, environment)

        send_fn, confirm_fn = runner("SendMessageFunction"), runner("DeliveryConfirmationFunction")
        connections = {"alice": "alice-phone", "bob": "bob-laptop"}
        with engine.begin() as conn:
            alice, bob = add_users(conn, ["Alice", "Bob"])
            conversation = add_conversation(conn, [alice, bob])
            add_connections(conn, {connections["alice"]: alice, connections["bob"]: bob})

        def job(job_type: str, data: dict[str, Any]) -> dict[str, Any]:
            return {
                "job_id": str(uuid.uuid4()),
                "job_type": job_type,
                "schema_version": SCHEMA_VERSION,
                "created_at": datetime.now(UTC).isoformat(),
                "correlation_id": "demo",
                "data": data,
            }

        script = [(alice, "Hi Bob, lunch today?"), (bob, "Sure! 12:30?"), (alice, "See you there.")]
        message_ids: list[uuid.UUID] = []
        for sender, content in script:
            message_id = uuid.uuid4()
            message_ids.append(message_id)
            body = job(
                "send-message",
                {
                    "message_id": str(message_id),
                    "conversation_id": str(conversation),
                    "sender_id": str(sender),
                    "content": content,
                },
            )
            sqs.send_message(
                QueueUrl=send_fn.queue_url,
                MessageBody=json.dumps(body),
                MessageGroupId=str(conversation),
                MessageDeduplicationId=body["job_id"],
            )
        out(f"sent {send_fn.drain()} send-message jobs through {send_fn.spec.logical_id}")

        alice_messages = [m for m, (s, _) in zip(message_ids, script, strict=True) if s == alice]
        now = datetime.now(UTC).isoformat()
        for data in (
            {
                "recipient_id": str(bob),
                "status": "delivered",
                "confirmed_at": now,
                "message_ids": [str(m) for m in alice_messages],
            },
            {
                "recipient_id": str(bob),
                "status": "read",
                "confirmed_at": now,
                "read_up_to": str(message_ids[-1]),
            },
            {
                "recipient_id": str(alice),
                "status": "read",
                "confirmed_at": now,
                "message_ids": [str(message_ids[1])],
            },
        ):
            sqs.send_message(
                QueueUrl=confirm_fn.queue_url, MessageBody=json.dumps(job("delivery-confirmation", data))
            )
        out(f"applied {confirm_fn.drain()} delivery-confirmation jobs through {confirm_fn.spec.logical_id}")

        for name, connection_id in connections.items():
            out(f"\nframes received by {name} ({connection_id}):")
            for frame in posted_frames(connection_id):
                out("  " + _describe(frame))
        out("\nmessages in PostgreSQL:")
        with engine.connect() as conn:
            for row in conn.execute(
                select(Message.seq, Message.status, Message.content).order_by(Message.seq)
            ):
                out(f"  #{row.seq} [{row.status}] {row.content}")
        dlq_depth = sum(
            int(
                sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
                    "Attributes"
                ]["ApproximateNumberOfMessages"]
            )
            for logical_id, url in stack.queue_urls.items()
            if logical_id.endswith("DLQ")
        )
        notifications = stack.queue_urls.get("NotificationQueue")
        pending_notifications = (
            int(
                sqs.get_queue_attributes(
                    QueueUrl=notifications, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]["ApproximateNumberOfMessages"]
            )
            if notifications
            else 0
        )
        out(
            f"\ndead-lettered jobs: {dlq_depth}; notification jobs for offline users: {pending_notifications}"
        )


def _describe(frame: dict[str, Any]) -> str:
    if frame.get("type") == "message.new":
        message = frame["message"]
        return f"message.new     #{message['seq']} from {message['sender_id'][:8]}: {message['content']!r}"
    if frame.get("type") == "message.status":
        return (
            f"message.status  {frame['message_id'][:8]} -> {frame['status']} by {frame['recipient_id'][:8]}"
            f" (message is now {frame['message_status']})"
        )
    return json.dumps(frame)
