"""``switchboard dev --demo`` / ``switchboard demo --stack``: a scripted conversation between two real
WebSocket clients through a running local stack, printing what each client receives."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def mint_token(info: dict[str, Any], user_id: uuid.UUID, *, ttl: timedelta = timedelta(hours=1)) -> str:
    """A token the local stack's authorizer accepts for ``user_id``."""
    import jwt

    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "iss": info["jwt_issuer"],
        "aud": info["jwt_audience"],
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, info["jwt_secret"], algorithm="HS256")


def load_info(data_dir: Path = Path(".switchboard")) -> dict[str, Any]:
    path = data_dir / "dev.json"
    if not path.exists():
        raise SystemExit(f"{path} not found: start the stack first with `switchboard dev`")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def seed_conversation(info: dict[str, Any], names: list[str]) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Users and a conversation between them, written to the stack's database (as the chat API would)."""
    from infra.seed import add_conversation, add_users
    from shared.config import Settings
    from shared.db.engine import build_engine

    engine = build_engine(Settings(database_url=info["database_url"]))
    with engine.begin() as conn:
        users = add_users(conn, names)
        conversation = add_conversation(conn, users)
    engine.dispose()
    return conversation, users


def stack_client(info: dict[str, Any], service: str) -> Any:
    """A boto3 client for the running local stack's moto server."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=info["aws_endpoint_url"],
        region_name=info["region"],
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
    )


def send_job(
    info: dict[str, Any], job_type: str, data: dict[str, Any], *, correlation_id: str = "dev-demo"
) -> str:
    """Validate ``data`` as a ``job_type`` job and send it to the stack's queue as a producer would (FIFO
    group and de-duplication ids from the job type's declaration); returns the job id."""
    from shared.jobs import JOB_KINDS
    from shared.services.queues import send_jobs

    kind = JOB_KINDS[job_type]
    job = kind.new(kind.data.model_validate(data), correlation_id=correlation_id)
    send_jobs(stack_client(info, "sqs"), info["queues"][job_type]["url"], kind, [job])
    return str(job.job_id)


def send_text(
    info: dict[str, Any],
    conversation: uuid.UUID,
    sender: uuid.UUID,
    content: str,
    *,
    message_id: str | uuid.UUID | None = None,
) -> str:
    """Send a text message as ``sender`` through the send-message queue; returns the message id."""
    message_id = str(message_id or uuid.uuid4())
    send_job(
        info,
        "send-message",
        {
            "message_id": message_id,
            "conversation_id": str(conversation),
            "sender_id": str(sender),
            "content": content,
        },
    )
    return message_id


def receive(socket: Any, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict[str, Any]:
    """The next frame on ``socket`` matching ``predicate`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching frame arrived")
        frame = json.loads(socket.recv(timeout=remaining))
        if predicate(frame):
            return dict(frame)


def search_until_found(socket: Any, query: str, message_id: str, timeout: float = 15) -> dict[str, Any]:
    """Search over ``socket`` until ``message_id`` is among the results (the indexing job runs after the
    message is broadcast); returns that ``search.results`` frame."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        request_id = f"search-{attempt}"
        socket.send(json.dumps({"action": "search", "request_id": request_id, "query": query}))
        frame = receive(socket, _answer_to(request_id))
        if frame.get("type") != "search.results":
            raise RuntimeError(f"search refused: {frame.get('code')}")
        if any(result["message_id"] == message_id for result in frame["results"]):
            return frame
        if time.monotonic() > deadline:
            raise TimeoutError(f"message {message_id} was not found by search within {timeout} s")
        time.sleep(0.2)


def _answer_to(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("request_id") == request_id


def _status_frame(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("type") == "message.status" and frame.get("status") == status


def play(info: dict[str, Any], out: Callable[[str], None] = print) -> None:
    from websockets.sync.client import connect

    conversation, (alice, bob) = seed_conversation(info, ["Alice", "Bob"])
    names = {str(alice): "Alice", str(bob): "Bob"}
    url = info["websocket_url"]
    out("\n-- demo: Alice and Bob connect over WebSocket --")
    with (
        connect(f"{url}?token={mint_token(info, alice)}") as alice_ws,
        connect(f"{url}?token={mint_token(info, bob)}") as bob_ws,
    ):
        message_id = str(uuid.uuid4())
        send_text(info, conversation, alice, "Hi Bob! Lunch at 12:30?", message_id=message_id)
        out("Alice's app -> send-message job on the SendMessage queue")
        for name, ws in (("Alice", alice_ws), ("Bob", bob_ws)):
            frame = receive(ws, lambda f: f.get("type") == "message.new")
            message = frame["message"]
            out(
                f"  {name:5} <- message.new    #{message['seq']} from {names[message['sender_id']]}: "
                f"{message['content']!r}"
            )
        for status in ("delivered", "read"):
            bob_ws.send(json.dumps({"action": "ack", "status": status, "message_ids": [message_id]}))
            out(f"Bob's app  -> ack {status}")
            frame = receive(alice_ws, _status_frame(status))
            out(
                f"  Alice <- message.status {frame['status']} by {names[frame['recipient_id']]} "
                f"(message is now {frame['message_status']})"
            )
        bob_ws.send(json.dumps({"action": "ping"}))
        out(f"  Bob   <- {receive(bob_ws, lambda f: f.get('type') == 'pong')['type']}")
        results = search_until_found(bob_ws, "lunch", message_id)
        out("Bob's app  -> search 'lunch'")
        for result in results["results"]:
            out(f"  Bob   <- search.results #{result['seq']}: {result['snippet']!r}")
    _offline_part(info, conversation, alice, bob, out)
    out("-- demo done --")


def _offline_part(
    info: dict[str, Any],
    conversation: uuid.UUID,
    alice: uuid.UUID,
    bob: uuid.UUID,
    out: Callable[[str], None],
) -> None:
    """Bob is offline now, with a phone registered and email notifications on: Alice's next message reaches
    him as a notification job (push, email, in-app)."""
    from sqlalchemy import insert, select, update

    from shared.config import Settings
    from shared.db.engine import build_engine
    from shared.db.models import DeviceEndpoint, NotificationDelivery, NotificationPreference, User

    sns = stack_client(info, "sns")
    apns = next(
        a["PlatformApplicationArn"]
        for a in sns.list_platform_applications()["PlatformApplications"]
        if ":app/APNS/" in a["PlatformApplicationArn"]
    )
    token = uuid.uuid4().hex * 2
    endpoint = sns.create_platform_endpoint(PlatformApplicationArn=apns, Token=token)["EndpointArn"]
    engine = build_engine(Settings(database_url=info["database_url"]))
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == bob).values(email="bob@example.com"))
        conn.execute(
            insert(DeviceEndpoint).values(
                id=uuid.uuid4(), user_id=bob, platform="apns", token=token, sns_endpoint_arn=endpoint
            )
        )
        conn.execute(insert(NotificationPreference).values(user_id=bob, channel="email", enabled=True))
    out("\nBob closes the app (an iPhone registered, email notifications on)")
    send_text(info, conversation, alice, "Running 5 min late!")
    out("Alice's app -> send-message job; Bob has no live connection -> a notification job")
    deadline = time.monotonic() + 20
    rows: Any = []
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    NotificationDelivery.channel, NotificationDelivery.target, NotificationDelivery.status
                ).where(NotificationDelivery.user_id == bob)
            ).all()
        if (
            rows
            and all(r.status != "pending" for r in rows)
            and {r.channel for r in rows} >= {"push", "email"}
        ):
            break
        time.sleep(0.2)
    engine.dispose()
    for row in sorted(rows):
        target = row.target.rsplit("/", 1)[-1] if row.channel == "push" else row.target or "-"
        out(f"  Bob   <- {row.channel:6} {row.status:7} {target}")
