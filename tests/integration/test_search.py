"""Message search (docs/contracts.md §5 indexing, §6 search): the indexing job keeps a stored tsvector per
message, and the WebSocket ``search`` route answers the asking connection with the matches from the user's
own conversations, newest first, a page at a time."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Text, cast, func, insert, literal_column, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shared.aws import AwsClients
from shared.config import get_settings
from shared.db.models import Conversation, Message, MessageSearch
from shared.services.crypto.keys import DATA_KEYS, KeyRing
from shared.services.crypto.service import rotate_conversation_key, shred_conversation
from shared.services.search import blind
from shared.services.search import engine as search_engine
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


def test_the_indexing_function_is_the_indexing_queues_consumer(template):
    (event,) = template.functions["IndexingFunction"].sqs_events
    assert event.queue_logical_id == "IndexingQueue"
    assert event.function_response_types == ("ReportBatchItemFailures",)
    assert template.websocket_routes["search"].logical_id == "WebSocketSearchFunction"


# --- encrypted conversations: the blind index -------------------------------------------------------------


@pytest.fixture
def encrypt(function, aws):
    """``encrypt(*message_ids)``: seal plaintext messages through EncryptionFunction (the ``encrypt``
    operation), with an empty data key cache before and after."""
    DATA_KEYS.clear()
    encryption = function("EncryptionFunction")

    def run(*message_ids: uuid.UUID) -> None:
        for message_id in message_ids:
            encryption.send(job("encryption", {"message_id": str(message_id), "operation": "encrypt"}))
        encryption.drain()
        assert queue_messages(aws, "EncryptionDLQ") == []

    yield run
    DATA_KEYS.clear()


@pytest.fixture
def key_ring(aws, monkeypatch) -> KeyRing:
    monkeypatch.setenv("ENCRYPTION_KEY_ARN", aws.attributes[("EncryptionKey", "Arn")])
    get_settings.cache_clear()
    return KeyRing(AwsClients(), get_settings())


def sealed_message(world, encrypt, index, conversation, sender, content: str, **kwargs: Any) -> uuid.UUID:
    """A message of an encrypted conversation, sealed and then indexed through the real functions."""
    message = add_message(world, conversation, sender, content, **kwargs)
    encrypt(message)
    index(message)
    return message


def index_key_of(db, key_ring: KeyRing, conversation) -> Any:
    with Session(db) as session:
        return key_ring.index_key_of(session, conversation, create=False)


def test_an_encrypted_message_is_indexed_by_blind_tokens_only(world, encrypt, index, key_ring, db):
    alice, bob = world.user("Alice Zephyr"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True, title="Night Ops")
    content = "The EAGLE lands at midnight, the eagle!"
    message = sealed_message(world, encrypt, index, conversation, alice, content)
    row = stored(world, message)
    assert row.document is None and row.search_config is None and row.key_version == 1
    key = index_key_of(db, key_ring, conversation)
    assert key.key_version == 1
    expected = blind.blind_tokens(key.key, content, "Alice Zephyr", "Night Ops")
    assert row.blind_tokens == expected and len(expected) == 9  # distinct: eagle counted once
    with db.connect() as conn:
        at_rest = conn.execute(
            select(cast(func.row_to_json(literal_column("message_search.*")), Text))
            .select_from(MessageSearch)
            .where(MessageSearch.message_id == message)
        ).scalar_one()
        stored_content = conn.execute(select(Message.content).where(Message.id == message)).scalar_one()
    for word in ("eagle", "EAGLE", "midnight", "lands"):
        assert word not in at_rest
    assert stored_content is None


def test_the_database_refuses_a_blind_row_with_a_text_search_configuration(world, db):
    from sqlalchemy.exc import DBAPIError  # pg8000 reports a check violation as a ProgrammingError

    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    message = add_message(world, conversation, alice, "x")
    row = {
        "message_id": message,
        "conversation_id": conversation,
        "created_at": datetime.now(UTC),
        "blind_tokens": [1],
        "key_version": 1,
    }
    with pytest.raises(DBAPIError, match="blind_row_shape"), db.begin() as conn:
        conn.execute(insert(MessageSearch).values(**row, search_config="simple"))
    with pytest.raises(DBAPIError, match="blind_row_shape"), db.begin() as conn:
        conn.execute(insert(MessageSearch).values(**row | {"key_version": 0}))


def test_the_blind_hash_is_keyed_normalised_and_per_conversation(world, encrypt, index, key_ring, db):
    alice, bob = world.user("alice"), world.user("bob")
    first = world.conversation([alice, bob], encrypted=True)
    second = world.conversation([alice, bob], encrypted=True)
    fullwidth = "\uff23\uff21\uff26\u00c9"  # NFKC and lower-casing make it café
    a = sealed_message(world, encrypt, index, first, alice, fullwidth)
    b = sealed_message(world, encrypt, index, second, alice, "café")
    key_a, key_b = index_key_of(db, key_ring, first), index_key_of(db, key_ring, second)
    assert blind.token_hash(key_a.key, "café") in stored(world, a).blind_tokens
    assert blind.token_hash(key_b.key, "café") in stored(world, b).blind_tokens
    assert not set(stored(world, a).blind_tokens) & set(stored(world, b).blind_tokens)


def test_search_in_an_encrypted_conversation_matches_whole_tokens_newest_first(world, encrypt, index, search):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    now = datetime.now(UTC)
    older = sealed_message(
        world, encrypt, index, conversation, alice, "meet at the harbour", at=now - timedelta(minutes=3)
    )
    newer = sealed_message(
        world, encrypt, index, conversation, bob, "Harbour it is", at=now - timedelta(minutes=2)
    )
    sealed_message(
        world, encrypt, index, conversation, bob, "harbours are nice", at=now - timedelta(minutes=1)
    )
    connection = world.connect(bob)
    answer = search(connection, query="HARBOUR", conversation_id=str(conversation))
    assert ids(answer) == [str(newer), str(older)]
    assert answer["results"][0]["snippet"] == "<mark>Harbour</mark> it is"
    assert answer["results"][1]["snippet"] == "meet at the <mark>harbour</mark>"
    assert answer["results"][0]["seq"] == 2 and answer["results"][0]["sender_id"] == str(bob)
    assert ids(search(connection, query="harb")) == []  # whole tokens: no prefixes, no stemming
    assert ids(search(connection, query="meet harbour")) == [str(older)]  # AND
    assert ids(search(connection, query="harbour -meet")) == [str(newer)]  # exclusion
    assert ids(search(connection, query='"it harbour"')) == [str(newer)]  # a phrase: AND of its tokens


def test_encrypted_snippets_are_escaped_and_centred_on_the_match(world, encrypt, index, search):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    words = " ".join(f"w{i}" for i in range(40))
    escaped = sealed_message(world, encrypt, index, conversation, alice, "<b>tent</b> & co")
    long = sealed_message(world, encrypt, index, conversation, alice, f"{words} lantern {words}")
    connection = world.connect(bob)
    [hit] = search(connection, query="co tent")["results"]
    assert hit["message_id"] == str(escaped)
    assert hit["snippet"] == "&lt;b&gt;<mark>tent</mark>&lt;/b&gt; &amp; <mark>co</mark>"
    [hit] = search(connection, query="lantern")["results"]
    assert hit["message_id"] == str(long)
    snippet = hit["snippet"].split()
    assert len(snippet) == blind.SNIPPET_WORDS and snippet[blind.SNIPPET_LEAD] == "<mark>lantern</mark>"


def test_pages_of_an_encrypted_conversation_follow_the_before_cursor(world, encrypt, index, search):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    now = datetime.now(UTC)
    messages = [
        sealed_message(world, encrypt, index, conversation, alice, f"tide {i}", at=now - timedelta(minutes=i))
        for i in range(5)
    ]
    connection = world.connect(bob)
    seen: list[str] = []
    before = None
    while True:
        frame = {"query": "tide", "limit": 2} | ({"before": before} if before else {})
        answer = search(connection, **frame)
        seen += ids(answer)
        before = answer["next_before"]
        if before is None:
            break
    assert seen == [str(m) for m in messages]


def test_a_search_across_conversations_mixes_plaintext_and_encrypted_ones(world, encrypt, index, search):
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    plain = world.conversation([alice, bob])
    secret = world.conversation([alice, bob], encrypted=True)
    not_mine = world.conversation([alice, carol], encrypted=True)
    now = datetime.now(UTC)
    a = add_message(world, plain, alice, "lunch at noon", at=now - timedelta(minutes=3))
    index(a)
    b = sealed_message(world, encrypt, index, secret, alice, "Lunch tomorrow", at=now - timedelta(minutes=2))
    c = add_message(world, plain, alice, "more lunch", at=now - timedelta(minutes=1))
    index(c)
    sealed_message(world, encrypt, index, not_mine, alice, "lunch for carol", at=now)
    answer = search(world.connect(bob), query="lunch")
    assert ids(answer) == [str(c), str(b), str(a)]
    snippets = [r["snippet"] for r in answer["results"]]
    assert snippets == [
        "more <mark>lunch</mark>",
        "<mark>Lunch</mark> tomorrow",
        "<mark>lunch</mark> at noon",
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("tent or lantern", "'or' is not supported"),
        ("!!! ...", "no searchable words"),
        ("-tent", "no searchable"),
    ],
    ids=["or", "punctuation-only", "exclusion-only"],
)
def test_a_query_the_blind_index_cannot_answer_gets_an_error_frame(
    world, encrypt, index, search, query, message
):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    sealed_message(world, encrypt, index, conversation, alice, "tent")
    answer = search(world.connect(bob), query=query, conversation_id=str(conversation))
    assert answer["type"] == "error" and answer["code"] == "invalid-query" and answer["request_id"] == "r1"
    assert message in answer["message"]


def test_a_search_over_too_many_encrypted_conversations_is_refused(world, search, monkeypatch):
    alice, bob = world.user("alice"), world.user("bob")
    for _ in range(3):
        world.conversation([alice, bob], encrypted=True)
    monkeypatch.setattr(search_engine, "MAX_ENCRYPTED_CONVERSATIONS", 2)
    answer = search(world.connect(bob), query="anything")
    assert answer["code"] == "invalid-query" and "conversation_id" in answer["message"]


def test_after_shredding_a_search_finds_nothing_and_indexing_is_refused(
    world, encrypt, index, search, indexing, aws, db
):
    alice, bob = world.user("alice"), world.user("bob")
    plain = world.conversation([alice, bob])
    conversation = world.conversation([alice, bob], encrypted=True)
    message = sealed_message(world, encrypt, index, conversation, alice, "shred me")
    visible = add_message(world, plain, alice, "shred me too")
    index(visible)
    connection = world.connect(bob)
    assert set(ids(search(connection, query="shred"))) == {str(message), str(visible)}
    with Session(db) as session, session.begin():
        assert shred_conversation(session, conversation) == 1
    assert stored(world, message) is not None  # the rows stay, unusable
    answer = search(connection, query="shred", conversation_id=str(conversation))
    assert answer == {"type": "search.results", "request_id": "r1", "results": [], "next_before": None}
    assert ids(search(connection, query="shred")) == [str(visible)]
    indexing.send(index_job(message, "update"))
    indexing.drain()
    (dead,) = queue_messages(aws, "IndexingDLQ")
    assert dead["MessageAttributes"]["ErrorReason"]["StringValue"] == "encryption-key-unavailable"


def test_search_still_finds_messages_after_rotation(world, encrypt, index, search, function, key_ring, db):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    now = datetime.now(UTC)
    before = sealed_message(
        world, encrypt, index, conversation, alice, "compass", at=now - timedelta(minutes=1)
    )
    with Session(db) as session, session.begin():
        assert rotate_conversation_key(session, key_ring, conversation) == 2
    rotation = function("EncryptionFunction")
    rotation.send(job("encryption", {"message_id": str(before), "operation": "rotate"}))
    rotation.drain()
    after = sealed_message(world, encrypt, index, conversation, alice, "compass rose", at=now)
    index(before, operation="update")  # re-indexed from its content re-sealed under version 2
    assert world.rows(select(Message.encryption_key_version).where(Message.id.in_([before, after]))) == [
        (2,),
        (2,),
    ]
    assert {stored(world, m).key_version for m in (before, after)} == {1}  # the index key's version
    DATA_KEYS.clear()  # a cold container: the key is unwrapped again
    answer = search(world.connect(bob), query="compass")
    assert ids(answer) == [str(after), str(before)]
    assert answer["results"][1]["snippet"] == "<mark>compass</mark>"


def test_a_message_not_sealed_yet_is_indexed_blind_under_a_first_key(world, index, search, indexing, aws):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)  # just turned on: nothing sealed
    DATA_KEYS.clear()
    message = add_message(world, conversation, alice, "not yet sealed")
    index(message)
    assert queue_messages(aws, "IndexingDLQ") == []
    row = stored(world, message)
    assert row.document is None and row.key_version == 1 and row.blind_tokens
    answer = search(world.connect(bob), query="sealed")
    assert ids(answer) == [str(message)] and answer["results"][0]["snippet"] == "not yet <mark>sealed</mark>"


def test_a_tampered_message_is_found_without_a_snippet_not_a_500(world, encrypt, index, search, db):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    message = sealed_message(world, encrypt, index, conversation, alice, "anchor point")
    with db.begin() as conn:
        conn.execute(update(Message).where(Message.id == message).values(content_nonce=b"\x00" * 12))
    answer = search(world.connect(bob), query="anchor")
    assert ids(answer) == [str(message)] and answer["results"][0]["snippet"] == ""


def test_an_encrypted_search_is_a_constant_number_of_statements_and_kms_calls(
    world, encrypt, index, search, db, kms_decrypts
):
    from sqlalchemy import event

    alice = world.user("alice")

    def costs(conversations: int) -> tuple[int, int]:
        user = world.user("searcher")
        for _ in range(conversations):
            conversation = world.conversation([alice, user], encrypted=True)
            sealed_message(world, encrypt, index, conversation, alice, "needle")
        connection = world.connect(user)
        seen: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany):
            seen.append(statement)

        DATA_KEYS.clear()
        kms_decrypts.clear()
        event.listen(db, "before_cursor_execute", record)
        try:
            assert len(ids(search(connection, query="needle"))) == conversations
        finally:
            event.remove(db, "before_cursor_execute", record)
        cold = len(kms_decrypts)
        search(connection, query="needle")
        assert len(kms_decrypts) == cold  # warm: every key from the cache
        return len(seen), cold

    one, twelve = costs(1), costs(12)
    assert one[0] == twelve[0] <= 4
    assert (one[1], twelve[1]) == (1, 12)  # cold: one unwrap per encrypted conversation


@pytest.fixture
def kms_decrypts(aws):
    """Every KMS Decrypt the code makes."""
    calls: list[str] = []
    client = AwsClients().kms()

    def record(model: Any, **_: Any) -> None:
        if model.name == "Decrypt":
            calls.append(model.name)

    client.meta.events.register("before-parameter-build.kms", record, unique_id="tests.kms_decrypts")
    yield calls
    client.meta.events.unregister("before-parameter-build.kms", unique_id="tests.kms_decrypts")


def test_encrypted_content_and_queries_never_reach_the_logs(world, encrypt, index, search, capsys, caplog):
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob], encrypted=True)
    sealed_message(world, encrypt, index, conversation, alice, "confidential walrusword")
    assert ids(search(world.connect(bob), query="walrusword"))
    captured = capsys.readouterr()
    assert "walrusword" not in captured.out + captured.err + caplog.text
