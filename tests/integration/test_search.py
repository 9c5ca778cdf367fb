"""Message search (docs/contracts.md §5 indexing, §6 search): the indexing job keeps a stored tsvector per
message, and the WebSocket ``search`` route answers the asking connection with the matches from the user's
own conversations, newest first, a page at a time."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Text, cast, func, insert, select, update
from sqlalchemy.exc import OperationalError

from shared.db.models import Conversation, Message, MessageSearch
from tests.conftest import queue_messages, ws_frames
from tests.faults import failing_statements
from tests.world import job

pytestmark = pytest.mark.integration


# --- helpers ----------------------------------------------------------------------------------------------


def add_message(
    world, conversation_id, sender_id, content: str, *, at: datetime | None = None, seq: int | None = None
) -> uuid.UUID:
    """A sent message written straight to the database (as the chat API or send-message would)."""
    message_id = uuid.uuid4()
    with world.engine.begin() as conn:
        next_seq = (
            seq
            or conn.execute(
                select(func.coalesce(func.max(Message.seq), 0) + 1).where(
                    Message.conversation_id == conversation_id
                )
            ).scalar_one()
        )
        conn.execute(
            insert(Message).values(
                id=message_id,
                conversation_id=conversation_id,
                sender_id=sender_id,
                seq=next_seq,
                content=content,
                status="sent",
                created_at=at or datetime.now(UTC),
            )
        )
    return message_id


def index_job(message_id, operation: str = "index") -> dict[str, Any]:
    return job("indexing", {"message_id": str(message_id), "operation": operation})


@pytest.fixture
def indexing(function):
    return function("IndexingFunction")


@pytest.fixture
def index(indexing):
    """Index messages through IndexingFunction (one job each, drained)."""

    def run(*message_ids, operation: str = "index") -> None:
        for message_id in message_ids:
            indexing.send(index_job(message_id, operation))
        indexing.drain()

    return run


@pytest.fixture
def search(websocket_function):
    """``search(connection, **frame)``: one frame to WebSocketSearchFunction; returns the answer posted to
    that connection (the only frame it received)."""
    invoke = websocket_function("WebSocketSearchFunction")

    def run(connection: str, raw: str | None = None, **frame: Any) -> dict[str, Any]:
        before = len(ws_frames(connection))
        body = raw if raw is not None else json.dumps({"action": "search", "request_id": "r1", **frame})
        event = {
            "requestContext": {
                "routeKey": "search",
                "eventType": "MESSAGE",
                "connectionId": connection,
                "requestId": "req-1",
                "stage": "prod",
                "domainName": "test-api.execute-api.us-east-1.amazonaws.com",
                "apiId": "test-api",
                "messageId": "m-1",
            },
            "body": body,
            "isBase64Encoded": False,
        }
        assert invoke(event) == {"statusCode": 200}
        frames = ws_frames(connection)[before:]
        assert len(frames) == 1, frames
        return frames[0]

    return run


def stored(world, message_id) -> Any:
    rows = world.rows(select(MessageSearch).where(MessageSearch.message_id == message_id))
    return rows[0] if rows else None


def ids(answer: dict[str, Any]) -> list[str]:
    assert answer["type"] == "search.results", answer
    return [result["message_id"] for result in answer["results"]]


# --- indexing ---------------------------------------------------------------------------------------------


def test_a_sent_message_is_indexed_by_the_indexing_job_send_message_enqueues(function, world, indexing):
    send = function("SendMessageFunction")
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], title="Trip planning")
    data = world.send_message_data(conversation, alice, "Bring the tent and the lantern")
    send.send(job("send-message", data))
    send.drain()
    assert indexing.drain() == 1
    row = stored(world, uuid.UUID(data["message_id"]))
    assert row is not None and row.conversation_id == conversation and row.blind_tokens is None
    assert row.search_config == "simple"


def test_the_document_weights_content_a_sender_name_b_and_conversation_title_c(world, index, db):
    alice, bob = world.user("Zelda Quux"), world.user("bob")
    conversation = world.conversation([alice, bob], title="Harbour")
    message = add_message(world, conversation, alice, "lantern")
    index(message)
    with db.connect() as conn:
        document = conn.execute(
            select(cast(MessageSearch.document, Text)).where(MessageSearch.message_id == message)
        ).scalar_one()
    assert "'lantern':1A" in document
    assert "'zelda':2B" in document and "'quux':3B" in document
    assert "'harbour':4C" in document


def test_the_conversations_text_search_configuration_is_used(world, index, search):
    alice, bob = world.user("alice"), world.user("bob")
    english = world.conversation([alice, bob])
    simple = world.conversation([alice, bob])
    with world.engine.begin() as conn:
        conn.execute(update(Conversation).where(Conversation.id == english).values(search_config="english"))
    stemmed = add_message(world, english, alice, "the dogs were running")
    literal = add_message(world, simple, alice, "the dogs were running")
    index(stemmed, literal)
    connection = world.connect(bob)
    assert ids(search(connection, query="run")) == [str(stemmed)]
    assert set(ids(search(connection, query="running"))) == {str(stemmed), str(literal)}


def test_update_reindexes_the_messages_current_content(world, index, search, db):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    message = add_message(world, conversation, alice, "original words")
    index(message)
    with db.begin() as conn:
        conn.execute(update(Message).where(Message.id == message).values(content="edited phrase"))
    index(message, operation="update")
    connection = world.connect(bob)
    assert ids(search(connection, query="original")) == []
    assert ids(search(connection, query="edited")) == [str(message)]


def test_delete_removes_the_message_from_the_index(world, index):
    alice, bob = world.user("alice"), world.user("bob")
    message = add_message(world, world.conversation([alice, bob]), alice, "to be forgotten")
    index(message)
    assert stored(world, message) is not None
    index(message, operation="delete")
    assert stored(world, message) is None
    index(message, operation="delete")  # again: nothing to remove, still a success
    assert stored(world, message) is None


def test_indexing_a_deleted_message_or_one_of_a_deleted_conversation_removes_it(world, index, db):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    deleted = add_message(world, conversation, alice, "gone message")
    other_conversation = world.conversation([alice, bob])
    in_deleted_conversation = add_message(world, other_conversation, alice, "gone conversation")
    index(deleted, in_deleted_conversation)
    with db.begin() as conn:
        conn.execute(update(Message).where(Message.id == deleted).values(deleted_at=func.now()))
        conn.execute(
            update(Conversation).where(Conversation.id == other_conversation).values(deleted_at=func.now())
        )
    index(deleted, in_deleted_conversation, operation="update")
    assert stored(world, deleted) is None and stored(world, in_deleted_conversation) is None


def test_indexing_an_unknown_message_is_dead_lettered_as_unknown_entity(indexing, aws):
    indexing.send(index_job(uuid.uuid4()))
    indexing.drain()
    (dead,) = queue_messages(aws, "IndexingDLQ")
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "unknown-entity"


def test_indexing_the_same_message_twice_keeps_one_row(world, index):
    alice, bob = world.user("alice"), world.user("bob")
    message = add_message(world, world.conversation([alice, bob]), alice, "twice")
    index(message, message)
    assert len(world.rows(select(MessageSearch).where(MessageSearch.message_id == message))) == 1


def test_the_lag_from_creation_to_index_is_a_metric(world, index, capsys):
    alice, bob = world.user("alice"), world.user("bob")
    message = add_message(
        world, world.conversation([alice, bob]), alice, "late", at=datetime.now(UTC) - timedelta(seconds=5)
    )
    capsys.readouterr()
    index(message)
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    lags = [m["IndexLag"] for m in metrics if "IndexLag" in m]
    assert lags and lags[0][0] >= 5000


def test_indexing_content_never_reaches_the_logs(world, index, capsys, caplog):
    alice, bob = world.user("alice"), world.user("bob")
    message = add_message(world, world.conversation([alice, bob]), alice, "confidential-zebra-content")
    index(message, operation="update")
    captured = capsys.readouterr()
    assert "confidential-zebra-content" not in captured.out + captured.err + caplog.text


# --- search -----------------------------------------------------------------------------------------------


def test_search_answers_the_asking_connection_only_newest_first(world, index, search):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    now = datetime.now(UTC)
    older = add_message(world, conversation, alice, "meet at the harbour", at=now - timedelta(minutes=2))
    newer = add_message(world, conversation, bob, "harbour it is", at=now - timedelta(minutes=1))
    add_message(world, conversation, bob, "something else", at=now)
    index(older, newer)
    asking, other = world.connect(bob), world.connect(bob)
    answer = search(asking, query="harbour")
    assert answer["request_id"] == "r1" and answer["next_before"] is None
    assert ids(answer) == [str(newer), str(older)]
    first = answer["results"][0]
    assert first["conversation_id"] == str(conversation) and first["sender_id"] == str(bob)
    assert first["seq"] == 2 and datetime.fromisoformat(first["created_at"]).tzinfo is not None
    assert ws_frames(other) == []


def test_search_covers_only_conversations_where_the_user_is_an_active_participant(world, index, search, db):
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    mine = world.conversation([alice, bob])
    not_mine = world.conversation([alice, carol])
    left = world.conversation([alice, bob, carol])
    deleted = world.conversation([alice, bob])
    messages = {
        name: add_message(world, conversation, alice, "secret plans")
        for name, conversation in {
            "mine": mine,
            "not_mine": not_mine,
            "left": left,
            "deleted": deleted,
        }.items()
    }
    index(*messages.values())
    world.leave(left, bob)
    with db.begin() as conn:
        conn.execute(update(Conversation).where(Conversation.id == deleted).values(deleted_at=func.now()))
    assert ids(search(world.connect(bob), query="plans")) == [str(messages["mine"])]


@pytest.mark.parametrize("whose", ["another users", "left", "unknown"])
def test_searching_a_conversation_the_user_is_not_in_is_forbidden(world, index, search, whose):
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    conversation = {
        "another users": lambda: world.conversation([alice, carol]),
        "left": lambda: world.conversation([alice, bob, carol]),
        "unknown": uuid.uuid4,
    }[whose]()
    if whose == "left":
        world.leave(conversation, bob)
    answer = search(world.connect(bob), query="plans", conversation_id=str(conversation))
    assert answer == {
        "type": "error",
        "code": "forbidden",
        "message": "you are not an active participant of that conversation",
        "request_id": "r1",
    }


def test_search_can_be_limited_to_one_conversation(world, index, search):
    alice, bob = world.user("alice"), world.user("bob")
    first, second = world.conversation([alice, bob]), world.conversation([alice, bob])
    a, b = add_message(world, first, alice, "lunch"), add_message(world, second, alice, "lunch")
    index(a, b)
    assert ids(search(world.connect(bob), query="lunch", conversation_id=str(second))) == [str(b)]


def test_pages_follow_the_before_cursor_without_gaps_or_repeats(world, index, search):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    now = datetime.now(UTC)
    same_time = now - timedelta(hours=1)
    messages = [
        add_message(
            world,
            conversation,
            alice,
            f"ticket number {i}",
            at=same_time if i < 3 else now - timedelta(minutes=i),
        )
        for i in range(7)
    ]
    index(*messages)
    connection = world.connect(bob)
    seen: list[str] = []
    before = None
    for _ in range(5):
        frame: dict[str, Any] = {"query": "ticket", "limit": 2}
        if before:
            frame["before"] = before
        answer = search(connection, **frame)
        seen += ids(answer)
        before = answer["next_before"]
        if before is None:
            break
    assert sorted(seen) == sorted(str(m) for m in messages) and len(seen) == len(set(seen)) == 7
    assert seen[:4] == [str(messages[i]) for i in (3, 4, 5, 6)]  # newest first
    assert set(seen[4:]) == {str(messages[i]) for i in (0, 1, 2)}  # three at the same instant, split by pages


def test_queries_use_web_search_syntax(world, index, search):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    phrase = add_message(world, conversation, alice, "the red boat sails")
    reordered = add_message(world, conversation, alice, "the boat is red")
    other = add_message(world, conversation, alice, "a green car")
    index(phrase, reordered, other)
    connection = world.connect(bob)
    assert ids(search(connection, query='"red boat"')) == [str(phrase)]
    assert set(ids(search(connection, query="sails or car"))) == {str(phrase), str(other)}
    assert ids(search(connection, query="boat -sails")) == [str(reordered)]


def test_snippets_highlight_the_matches_and_escape_html(world, index, search):
    alice, bob = world.user("alice"), world.user("bob")
    content = "we <b>meet</b> at noon & then <script>alert(1)</script> go home"
    message = add_message(world, world.conversation([alice, bob]), alice, content)
    index(message)
    (result,) = search(world.connect(bob), query="noon")["results"]
    snippet = result["snippet"]
    assert "<mark>noon</mark>" in snippet and "&lt;/b&gt;" in snippet and "&amp;" in snippet
    unmarked = snippet.replace("<mark>", "").replace("</mark>", "")
    assert "<" not in unmarked and ">" not in unmarked


def test_a_deleted_message_is_not_found_even_before_it_is_removed_from_the_index(world, index, search, db):
    alice, bob = world.user("alice"), world.user("bob")
    message = add_message(world, world.conversation([alice, bob]), alice, "ephemeral")
    index(message)
    with db.begin() as conn:
        conn.execute(update(Message).where(Message.id == message).values(deleted_at=func.now()))
    assert ids(search(world.connect(bob), query="ephemeral")) == []


def test_a_user_without_conversations_gets_no_results(world, search):
    answer = search(world.connect(world.user("loner")), query="anything")
    assert answer == {"type": "search.results", "request_id": "r1", "results": [], "next_before": None}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"query": ""}, "invalid-query"),
        ({"query": "   "}, "invalid-query"),
        ({"query": "x" * 257}, "invalid-query"),
        ({"query": "the and of"}, "invalid-query"),  # stop words only (english)
        ({"query": "a\u0000b"}, "invalid-query"),
        ({"query": "ok", "before": "not-a-cursor"}, "invalid-cursor"),
        ({"query": "ok", "before": 12}, "invalid-cursor"),
        ({"query": "ok", "limit": 0}, "invalid-request"),
        ({"query": "ok", "limit": 51}, "invalid-request"),
        ({"query": "ok", "limit": True}, "invalid-request"),
        ({"query": "ok", "limit": "5"}, "invalid-request"),
        ({"query": "ok", "conversation_id": "nope"}, "invalid-request"),
        ({"query": "ok", "extra": 1}, "invalid-request"),
        ({"query": 5}, "invalid-request"),
        ({}, "invalid-request"),
    ],
    ids=[
        "empty",
        "blank",
        "too-long",
        "stop-words-only",
        "nul",
        "bad-cursor",
        "cursor-not-a-string",
        "limit-0",
        "limit-51",
        "limit-bool",
        "limit-string",
        "bad-conversation-id",
        "unknown-field",
        "query-not-a-string",
        "no-query",
    ],
)
def test_a_request_that_cannot_be_served_gets_an_error_frame_with_its_request_id(world, search, frame, code):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    with world.engine.begin() as conn:
        conn.execute(
            update(Conversation).where(Conversation.id == conversation).values(search_config="english")
        )
    answer = search(world.connect(bob), **frame)
    assert answer["type"] == "error" and answer["code"] == code and answer["request_id"] == "r1"
    assert answer["message"]


@pytest.mark.parametrize("request_id", [None, "", 7, "x" * 129])
def test_a_request_without_a_usable_request_id_is_refused_without_one(world, search, request_id):
    connection = world.connect(world.user("bob"))
    frame = {"action": "search", "query": "ok"} | (
        {"request_id": request_id} if request_id is not None else {}
    )
    answer = search(connection, raw=json.dumps(frame))
    assert answer["code"] == "invalid-request" and "request_id" not in answer


@pytest.mark.parametrize(("raw", "code"), [("{nope", "invalid-json"), ("[]", "invalid-json")])
def test_a_frame_that_is_not_a_json_object_is_refused(world, search, raw, code):
    assert search(world.connect(world.user("bob")), raw=raw)["code"] == code


def test_a_search_from_an_unknown_connection_gets_an_error_frame(search, world):
    assert search("conn-nobody", query="x")["code"] == "unknown-connection"


def test_error_messages_never_echo_the_request(world, search):
    connection = world.connect(world.user("bob"))
    secret = "s3cr3t-query-value"
    for frame in ({"query": secret * 20}, {"query": "ok", "before": secret}, {"query": "ok", secret: 1}):
        answer = search(connection, **frame)
        assert answer["type"] == "error" and secret not in answer["message"]


def test_a_failing_database_is_answered_unavailable_not_a_500(world, index, search, db):
    alice, bob = world.user("alice"), world.user("bob")
    message = add_message(world, world.conversation([alice, bob]), alice, "anything")
    index(message)
    connection = world.connect(bob)
    with failing_statements(
        db, lambda: OperationalError("search", {}, Exception("down")), when=lambda p: "anything" in str(p)
    ):
        answer = search(connection, query="anything")
    assert answer["code"] == "unavailable" and answer["request_id"] == "r1"


def test_the_query_never_reaches_the_logs(world, index, search, capsys, caplog):
    alice, bob = world.user("alice"), world.user("bob")
    message = add_message(world, world.conversation([alice, bob]), alice, "hush")
    index(message)
    search(world.connect(bob), query="hush zebra-query-term")
    captured = capsys.readouterr()
    assert "zebra-query-term" not in captured.out + captured.err + caplog.text


def test_a_search_is_a_constant_number_of_statements(world, index, search, db):
    from sqlalchemy import event

    alice = world.user("alice")

    def statements_for(conversations: int) -> int:
        user = world.user("searcher")
        for _ in range(conversations):
            conversation = world.conversation([alice, user])
            index(add_message(world, conversation, alice, "needle"))
        connection = world.connect(user)
        seen: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany):
            seen.append(statement)

        event.listen(db, "before_cursor_execute", record)
        try:
            assert len(ids(search(connection, query="needle"))) == conversations
        finally:
            event.remove(db, "before_cursor_execute", record)
        return len(seen)

    assert statements_for(1) == statements_for(12) <= 4


def test_a_message_of_an_encrypted_conversation_is_refused_not_indexed_in_plaintext(world, indexing, aws):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    message = add_message(world, conversation, alice, "never as lexemes")
    indexing.send(index_job(message))
    indexing.drain()
    assert stored(world, message) is None
    (dead,) = queue_messages(aws, "IndexingDLQ")
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "encryption-not-available"


def test_the_indexing_function_is_the_indexing_queues_consumer(template):
    (event,) = template.functions["IndexingFunction"].sqs_events
    assert event.queue_logical_id == "IndexingQueue"
    assert event.function_response_types == ("ReportBatchItemFailures",)
    assert template.websocket_routes["search"].logical_id == "WebSocketSearchFunction"
