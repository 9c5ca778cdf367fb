"""End to end through the real local stack (`switchboard dev` in a subprocess): moto server, poller
processes, embedded PostgreSQL, the local WebSocket gateway, and real WebSocket clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from infra.dev_demo import (
    mint_token,
    receive,
    search_until_found,
    seed_conversation,
    send_text,
    stack_client,
)
from infra.seed import add_conversation, add_users
from shared.config import Settings
from shared.db.engine import build_engine
from shared.db.models import Message, MessageSearch, WsConnection
from shared.jobs import JOB_KINDS

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


class RunningStack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def start(self, *, fresh: bool = False) -> None:
        dev_json = self.data_dir / "dev.json"
        dev_json.unlink(missing_ok=True)
        args = [
            sys.executable,
            "-m",
            "infra.cli",
            "dev",
            "--data-dir",
            str(self.data_dir),
            "--aws-port",
            "0",
            "--websocket-port",
            "0",
            "--management-port",
            "0",
            "--management-api-port",
            "0",
            "--log-level",
            "WARNING",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DATABASE_URL"))}
        self.log = self.data_dir.parent / f"{self.data_dir.name}.log"
        output = self.log.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            [*args, *(["--fresh"] if fresh else [])],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        output.close()
        deadline = time.monotonic() + 90
        while not dev_json.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"switchboard dev exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("switchboard dev did not come up in 90 s")
            time.sleep(0.2)
        self.info = json.loads(dev_json.read_text())
        self.engine = build_engine(Settings(database_url=self.info["database_url"]))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if getattr(self, "engine", None) is not None:
            self.engine.dispose()

    def sqs(self) -> Any:
        return stack_client(self.info, "sqs")

    def ws(self, user_id: uuid.UUID) -> Any:
        return connect(
            f"{self.info['websocket_url']}?token={mint_token(self.info, user_id)}", open_timeout=10
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    running = RunningStack(tmp_path_factory.mktemp("stack"))
    running.start(fresh=True)
    yield running
    running.stop()


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """``predicate()``'s first truthy value, polled every ``interval`` s for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout:.0f} s (last value: {value!r})")
        time.sleep(interval)


def test_dev_json_describes_the_stack(stack):
    info = stack.info
    assert set(info) >= {
        "aws_endpoint_url",
        "region",
        "database_url",
        "websocket_url",
        "jwt_secret",
        "queues",
    }
    assert set(info["queues"]) == set(JOB_KINDS)
    send = info["queues"]["send-message"]
    assert send["url"].endswith(".fifo") and send["dlq_url"].endswith(".fifo")


def test_a_valid_token_connects_and_a_bad_one_is_refused_at_the_handshake(stack):
    _, (alice, _) = seed_conversation(stack.info, ["Alice", "Bob"])
    with stack.ws(alice) as socket:
        socket.send(json.dumps({"action": "ping"}))
        assert receive(socket, lambda f: f.get("type") == "pong")["type"] == "pong"
    for token in (
        "",
        "not-a-jwt",
        mint_token({**stack.info, "jwt_secret": "a-wrong-secret-of-sufficient-length-000"}, alice),
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{stack.info['websocket_url']}?token={token}", open_timeout=10)
        assert refused.value.response.status_code in (401, 403)


def test_a_message_reaches_both_sockets_and_the_ack_reaches_the_sender(stack):
    conversation, (alice, bob) = seed_conversation(stack.info, ["Alice", "Bob"])
    with stack.ws(alice) as alice_ws, stack.ws(bob) as bob_ws:
        message_id = str(uuid.uuid4())
        send_text(stack.info, conversation, alice, "round trip", message_id=message_id)
        for socket in (alice_ws, bob_ws):
            frame = receive(socket, lambda f: f.get("type") == "message.new")
            assert frame["message"]["id"] == message_id and frame["message"]["content"] == "round trip"
        bob_ws.send(json.dumps({"action": "ack", "status": "read", "message_ids": [message_id]}))
        status = receive(alice_ws, lambda f: f.get("type") == "message.status")
        assert (status["message_id"], status["recipient_id"], status["status"], status["message_status"]) == (
            message_id,
            str(bob),
            "read",
            "read",
        )


def test_a_real_websocket_client_finds_a_sent_message_by_search(stack):
    conversation, (alice, bob) = seed_conversation(stack.info, ["Alice", "Bob"])
    _, (carol, _) = seed_conversation(stack.info, ["Carol", "Dave"])
    with stack.ws(bob) as bob_ws, stack.ws(carol) as carol_ws:
        message_id = str(uuid.uuid4())
        send_text(stack.info, conversation, alice, "the quarterly harbour report", message_id=message_id)
        found = search_until_found(bob_ws, "harbour", message_id)
        (result,) = [r for r in found["results"] if r["message_id"] == message_id]
        assert result["conversation_id"] == str(conversation) and "<mark>harbour</mark>" in result["snippet"]
        carol_ws.send(json.dumps({"action": "search", "request_id": "c1", "query": "harbour"}))
        answer = receive(carol_ws, lambda f: f.get("request_id") == "c1")
        assert answer["type"] == "search.results" and answer["results"] == []  # not Carol's conversation
        carol_ws.send(json.dumps({"action": "search", "request_id": "c2", "query": "  "}))
        assert receive(carol_ws, lambda f: f.get("request_id") == "c2")["code"] == "invalid-query"


def test_in_an_encrypted_conversation_a_real_client_finds_a_message_by_its_blind_index(stack):
    with stack.engine.begin() as conn:
        alice, bob = add_users(conn, ["Alice", "Bob"])
        conversation = add_conversation(conn, [alice, bob], encrypted=True)
    with stack.ws(bob) as bob_ws:
        message_id = str(uuid.uuid4())
        send_text(stack.info, conversation, alice, "the quarterly lighthouse report", message_id=message_id)
        found = search_until_found(bob_ws, "lighthouse", message_id)
        (result,) = [r for r in found["results"] if r["message_id"] == message_id]
        assert "lighthouse" in result["snippet"]  # decrypted in memory for the snippet
    with stack.engine.connect() as conn:
        stored = conn.execute(select(Message.content).where(Message.id == uuid.UUID(message_id))).scalar_one()
        entry = conn.execute(
            select(MessageSearch.document, MessageSearch.blind_tokens).where(
                MessageSearch.message_id == uuid.UUID(message_id)
            )
        ).one()
    assert stored is None and entry.document is None and entry.blind_tokens  # no plaintext at rest


def test_a_client_that_drops_without_closing_is_removed_on_the_next_broadcast(stack):
    conversation, (alice, bob) = seed_conversation(stack.info, ["Alice", "Bob"])
    dropped = stack.ws(bob)
    with stack.engine.connect() as conn:
        rows = conn.execute(select(WsConnection.connection_id).where(WsConnection.user_id == bob)).all()
    assert len(rows) == 1
    dropped.socket.close()  # the TCP connection dies, no close frame: API Gateway misses the $disconnect
    with stack.ws(alice) as alice_ws:
        send_text(stack.info, conversation, alice, "anyone there?")
        receive(alice_ws, lambda f: f.get("type") == "message.new")

        def bob_gone() -> bool:
            with stack.engine.connect() as conn:
                return (
                    conn.execute(
                        select(func.count()).select_from(WsConnection).where(WsConnection.user_id == bob)
                    ).scalar_one()
                    == 0
                )

        wait_for(bob_gone)


def test_a_poison_job_ends_in_the_dlq_intact_and_its_neighbours_are_processed(stack):
    conversation, (alice, _) = seed_conversation(stack.info, ["Alice", "Bob"])
    sqs = stack.sqs()
    queue = stack.info["queues"]["delivery-confirmation"]
    poison = '{"job_type": "delivery-confirmation", "this is": "not a job"'
    sqs.send_message(QueueUrl=queue["url"], MessageBody=poison)
    good_ids = []
    for i in range(3):
        message_id = str(uuid.uuid4())
        good_ids.append(message_id)
        send_text(stack.info, conversation, alice, f"neighbour {i}", message_id=message_id)

    def dead_letters() -> list[dict[str, Any]]:
        return sqs.receive_message(
            QueueUrl=queue["dlq_url"],
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        ).get("Messages", [])

    [dead] = wait_for(dead_letters)
    assert dead["Body"] == poison
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "invalid-job"

    def all_sent() -> bool:
        with stack.engine.connect() as conn:
            return (
                conn.execute(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.id.in_([uuid.UUID(m) for m in good_ids]), Message.status == "sent")
                ).scalar_one()
                == 3
            )

    wait_for(all_sent)


def test_the_stack_shows_each_notification_sent_with_its_channel_and_target(stack):
    from sqlalchemy import insert, update

    from shared.db.models import DeviceEndpoint, NotificationPreference, User

    conversation, (alice, bob) = seed_conversation(stack.info, ["Alice", "Bob"])
    sns = stack_client(stack.info, "sns")
    [apns] = [
        a["PlatformApplicationArn"]
        for a in sns.list_platform_applications()["PlatformApplications"]
        if ":app/APNS/" in a["PlatformApplicationArn"]
    ]
    token = uuid.uuid4().hex
    endpoint = sns.create_platform_endpoint(PlatformApplicationArn=apns, Token=token)["EndpointArn"]
    email = f"bob-{token[:8]}@example.com"
    with stack.engine.begin() as conn:
        conn.execute(update(User).where(User.id == bob).values(email=email))
        conn.execute(
            insert(DeviceEndpoint).values(
                id=uuid.uuid4(), user_id=bob, platform="apns", token=token, sns_endpoint_arn=endpoint
            )
        )
        conn.execute(insert(NotificationPreference).values(user_id=bob, channel="email", enabled=True))
    # Bob is offline: Alice's message becomes a notification job, then a push and an email
    send_text(stack.info, conversation, alice, "are you there?")
    wait_for(lambda: f"[notification] email -> {email}" in stack.log.read_text())
    wait_for(
        lambda: (
            f"[notification] push  -> endpoint {endpoint.rsplit('/', 1)[-1]} (APNS)" in stack.log.read_text()
        )
    )


def test_the_stack_runs_a_poller_for_every_sqs_fed_function_of_the_template(stack):
    from infra.template import load_template

    fed = {logical_id for logical_id, spec in load_template().functions.items() if spec.sqs_events}
    assert {"BatchMessageFunction", "CleanupFunction"} <= fed
    assert {"batch-message", "cleanup"} <= set(stack.info["queues"])


def test_the_sender_watches_batch_progress_then_completion_over_a_real_websocket(stack):
    from infra.dev_demo import send_job
    from infra.seed import add_users

    with stack.engine.begin() as conn:
        sender, *recipients = add_users(conn, ["Sender", *(f"R{i}" for i in range(5))])
    unknown = uuid.uuid4()
    batch_id = uuid.uuid4()
    with stack.ws(sender) as sender_ws:
        send_job(
            stack.info,
            "batch-message",
            {
                "batch_id": str(batch_id),
                "sender_id": str(sender),
                "content": "fan-out over the local stack",
                "recipient_ids": [str(r) for r in [*recipients, unknown]],
                "chunk_size": 2,
            },
        )
        progress: list[dict[str, Any]] = []
        while True:  # settle checks run every BATCH_SETTLE_CHECK_SECONDS (10 s) once all chunks are out
            frame = receive(sender_ws, lambda f: f.get("type") in ("batch.progress", "batch.completed"), 60)
            assert frame["batch"]["id"] == str(batch_id)
            if frame["type"] == "batch.completed":
                break
            progress.append(frame["batch"])
    assert len(progress) >= 3  # one per chunk of 2 out of 6 recipients
    assert [p["status"] for p in progress] == ["running"] * len(progress)
    assert all(p["total"] == 6 for p in progress)
    done = [p["sent"] + p["failed"] for p in progress]
    assert done == sorted(done)  # counts never go back
    summary = frame["batch"]
    assert (summary["status"], summary["total"], summary["sent"], summary["failed"], summary["percent"]) == (
        "completed_with_failures",
        6,
        5,
        1,
        100.0,
    )
    assert summary["finished_at"] is not None
    with stack.engine.connect() as conn:
        sent = conn.execute(
            select(func.count()).select_from(Message).where(Message.sender_id == sender)
        ).scalar_one()
    assert sent == 5


def test_switchboard_cleanup_sends_a_job_that_the_stack_runs(stack, capsys):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from infra.cli import main
    from shared.db.models import JobInbox

    conversation, (alice, _) = seed_conversation(stack.info, ["Alice", "Bob"])
    message_id = uuid.uuid4()
    send_text(stack.info, conversation, alice, "old news", message_id=str(message_id))

    def stored() -> bool:
        with stack.engine.connect() as conn:
            return conn.execute(select(Message.id).where(Message.id == message_id)).first() is not None

    wait_for(stored)
    with stack.engine.begin() as conn:
        conn.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(created_at=datetime.now(UTC) - timedelta(days=400))
        )

    def finished(job_id: uuid.UUID) -> bool:
        with stack.engine.connect() as conn:
            completed = conn.execute(
                select(JobInbox.completed_at).where(JobInbox.job_id == job_id)
            ).scalar_one_or_none()
        return completed is not None

    def content() -> str | None:
        with stack.engine.connect() as conn:
            return conn.execute(select(Message.content).where(Message.id == message_id)).scalar_one()

    args = ["cleanup", "--data-dir", str(stack.data_dir), "--task", "old-messages"]
    assert main([*args, "--dry-run"]) == 0
    dry_run = uuid.UUID(capsys.readouterr().out.strip())
    wait_for(lambda: finished(dry_run), timeout=30)
    assert content() == "old news"  # a dry run deletes nothing
    assert main(args) == 0
    real = uuid.UUID(capsys.readouterr().out.strip())
    wait_for(lambda: finished(real), timeout=30)
    assert content() is None


def test_a_restart_with_the_same_data_dir_keeps_messages(stack):
    conversation, (alice, _) = seed_conversation(stack.info, ["Alice", "Bob"])
    message_id = uuid.uuid4()
    send_text(stack.info, conversation, alice, "survives restarts", message_id=str(message_id))

    def stored() -> bool:
        with stack.engine.connect() as conn:
            return conn.execute(select(Message.id).where(Message.id == message_id)).first() is not None

    wait_for(stored)
    stack.stop()
    stack.start()
    with stack.engine.connect() as conn:
        assert (
            conn.execute(select(Message.content).where(Message.id == message_id)).scalar_one()
            == "survives restarts"
        )
