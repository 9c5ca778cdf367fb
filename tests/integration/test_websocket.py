"""The WebSocket API's functions (docs/contracts.md §6), invoked with API Gateway-shaped events as the local
gateway invokes them: the token authorizer (HS256, and RS256/ES256 against a JWKS served on 127.0.0.1),
$connect, $disconnect, $default (ack -> delivery-confirmation job, ping -> pong, error frames) and the
stale-connection sweeper. Real PostgreSQL, moto for SQS and the @connections API; moto never answers
410 Gone, so those cases use botocore's Stubber."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from botocore.stub import Stubber
from sqlalchemy import insert, select, update

from shared.aws import client
from shared.db.models import WsConnection
from shared.errors import KeySetUnavailable
from shared.services.connections import auth
from tests.conftest import WEBSOCKET_ENDPOINT, queue_messages, ws_frames
from tests.tokens import SigningKey, hs256, jwks_server
from tests.world import job

pytestmark = pytest.mark.integration

API = "a1b2c3d4e5"
METHOD_ARN = f"arn:aws:execute-api:us-east-1:123456789012:{API}/prod/$connect"


def request_context(connection_id: str, route: str, event_type: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "routeKey": route,
        "eventType": event_type,
        "messageDirection": "IN",
        "extendedRequestId": f"ext-{uuid.uuid4().hex[:8]}",
        "requestId": f"req-{uuid.uuid4().hex[:8]}",
        "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "requestTimeEpoch": int(now.timestamp() * 1000),
        "connectedAt": int(now.timestamp() * 1000),
        "stage": "prod",
        "domainName": f"{API}.execute-api.us-east-1.amazonaws.com",
        "connectionId": connection_id,
        "apiId": API,
        "identity": {"sourceIp": "203.0.113.7", "userAgent": "test-client"},
    }


def authorizer_event(token: str | None, connection_id: str = "conn-auth=") -> dict[str, Any]:
    query = {"token": token} if token is not None else {}
    return {
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "headers": {"Host": f"{API}.execute-api.us-east-1.amazonaws.com", "Sec-WebSocket-Version": "13"},
        "multiValueHeaders": {},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
        "stageVariables": {},
        "requestContext": request_context(connection_id, "$connect", "CONNECT"),
    }


def connect_event(connection_id: str, user_id: uuid.UUID | str | None) -> dict[str, Any]:
    authorizer = {"principalId": str(user_id), "user_id": str(user_id)} if user_id is not None else None
    return {
        "headers": {"Host": f"{API}.execute-api.us-east-1.amazonaws.com"},
        "queryStringParameters": {"token": "<the token>"},
        "requestContext": {**request_context(connection_id, "$connect", "CONNECT"), "authorizer": authorizer},
        "isBase64Encoded": False,
    }


def disconnect_event(connection_id: str) -> dict[str, Any]:
    context = request_context(connection_id, "$disconnect", "DISCONNECT")
    return {
        "headers": {},
        "requestContext": {**context, "disconnectStatusCode": 1000, "disconnectReason": "bye"},
        "isBase64Encoded": False,
    }


def message_event(connection_id: str, body: str | dict[str, Any], *, binary: bool = False) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    context = {**request_context(connection_id, "$default", "MESSAGE"), "messageId": "msg-1"}
    if binary:
        return {
            "requestContext": context,
            "body": base64.b64encode(text.encode()).decode(),
            "isBase64Encoded": True,
        }
    return {"requestContext": context, "body": text, "isBase64Encoded": False}


# --- the authorizer ------------------------------------------------------------------------------------


@pytest.fixture
def authorize(websocket_function):
    return websocket_function("WebSocketAuthorizerFunction")


def test_a_valid_token_is_allowed_with_the_user_in_the_context(authorize):
    user = uuid.uuid4()
    # When the authorizer gets a valid token, Then it allows $connect and passes the user on
    assert authorize(authorizer_event(hs256(user))) == {
        "principalId": str(user),
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": METHOD_ARN}],
        },
        "context": {"user_id": str(user)},
    }


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        (hs256(uuid.uuid4(), exp=1_000_000), "expired"),
        (hs256(uuid.uuid4(), secret="not-the-secret-but-long-enough-0123456789"), "bad-signature"),
        (hs256(uuid.uuid4(), aud="another-service"), "wrong-audience"),
        (hs256(uuid.uuid4(), iss="https://another-issuer/"), "wrong-issuer"),
        (hs256("not-a-uuid"), "malformed"),
    ],
    ids=["missing", "expired", "wrong-signature", "wrong-audience", "wrong-issuer", "non-uuid-sub"],
)
def test_a_bad_token_is_denied(authorize, token, reason):
    assert authorize(authorizer_event(token)) == {
        "principalId": "anonymous",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": METHOD_ARN}],
        },
        "context": {"reason": reason},
    }


def test_tokens_never_reach_the_logs(authorize, caplog, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")  # even when event logging is switched on
    good, bad = hs256(uuid.uuid4()), hs256(uuid.uuid4(), aud="x")
    with caplog.at_level("DEBUG"):
        authorize(authorizer_event(good))
        authorize(authorizer_event(bad))
    logged = " ".join(str(record.__dict__) for record in caplog.records)
    assert "connection refused" in logged and "wrong-audience" in logged
    assert good not in logged and bad not in logged


@pytest.fixture
def jwks_authorize(websocket_function):
    """The authorizer against a JWKS (and no shared secret): ``jwks_authorize(url)(event)``."""
    auth.jwks_client.cache_clear()
    yield lambda url: websocket_function("WebSocketAuthorizerFunction", JWT_SECRET=None, JWT_JWKS_URL=url)
    auth.jwks_client.cache_clear()


@pytest.mark.parametrize("make_key", [SigningKey.rsa, SigningKey.ec], ids=["RS256", "ES256"])
def test_an_asymmetric_token_is_verified_against_the_issuers_jwks(jwks_authorize, make_key):
    key, user = make_key(), uuid.uuid4()
    with jwks_server(SigningKey.rsa("other"), key) as url:
        policy = jwks_authorize(url)(authorizer_event(key.token(user)))
    assert policy["principalId"] == str(user)
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"


def test_a_token_signed_by_a_key_the_issuer_does_not_publish_is_denied(jwks_authorize):
    published, rogue = SigningKey.rsa("k1"), SigningKey.rsa("k1")
    with jwks_server(published) as url:
        forged = jwks_authorize(url)(authorizer_event(rogue.token(uuid.uuid4())))
        unknown_kid = jwks_authorize(url)(authorizer_event(rogue.token(uuid.uuid4(), kid="k9")))
    assert forged["context"] == {"reason": "bad-signature"}
    assert unknown_kid["context"] == {"reason": "bad-signature"}


def test_a_token_whose_algorithm_does_not_match_its_key_is_denied(jwks_authorize):
    rsa_key, ec_key = SigningKey.rsa("rsa"), SigningKey.ec("ec")
    with jwks_server(rsa_key, ec_key) as url:
        # an ES256 token that names the RSA key
        policy = jwks_authorize(url)(authorizer_event(ec_key.token(uuid.uuid4(), kid="rsa")))
    assert policy["context"] == {"reason": "bad-signature"}


def test_a_token_without_kid_is_accepted_only_from_a_single_key_issuer(jwks_authorize):
    key = SigningKey.rsa()
    with jwks_server(key) as url:
        single = jwks_authorize(url)(authorizer_event(key.token(uuid.uuid4(), kid=None)))
    auth.jwks_client.cache_clear()
    with jwks_server(key, SigningKey.rsa("other")) as url:
        several = jwks_authorize(url)(authorizer_event(key.token(uuid.uuid4(), kid=None)))
    assert single["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert several["context"] == {"reason": "bad-signature"}


def test_the_jwks_is_fetched_once_per_container(jwks_authorize, monkeypatch):
    key = SigningKey.rsa()
    with jwks_server(key) as url:
        authorize = jwks_authorize(url)
        fetches = []
        original = jwt.PyJWKClient.fetch_data

        def counting(self):
            fetches.append(1)
            return original(self)

        monkeypatch.setattr(jwt.PyJWKClient, "fetch_data", counting)
        for _ in range(3):
            authorize(authorizer_event(key.token(uuid.uuid4())))
    assert len(fetches) == 1


@pytest.mark.parametrize(
    "body", [b'{"keys": []}', b"[]", b"<html>maintenance</html>"], ids=["empty", "array", "html"]
)
def test_an_unusable_jwks_fails_the_authorizer_instead_of_refusing(jwks_authorize, body):
    key = SigningKey.rsa()
    with jwks_server(body=body) as url, pytest.raises(KeySetUnavailable):
        jwks_authorize(url)(authorizer_event(key.token(uuid.uuid4())))


def test_an_unreachable_jwks_fails_the_authorizer_instead_of_refusing(jwks_authorize):
    key = SigningKey.rsa()
    with jwks_server(key) as url:
        pass  # the server is gone: nothing listens on that port any more
    # API Gateway answers 500 to a failed authorizer; the client retries, nobody is told they are refused
    with pytest.raises(KeySetUnavailable):
        jwks_authorize(url)(authorizer_event(key.token(uuid.uuid4())))


# --- $connect / $disconnect ----------------------------------------------------------------------------


def connection_row(world, connection_id: str) -> Any:
    rows = world.rows(select(WsConnection).where(WsConnection.connection_id == connection_id))
    return rows[0] if rows else None


def test_connect_registers_the_connection_of_the_authorized_user(websocket_function, world):
    alice = world.user("alice")
    before = datetime.now(UTC)
    assert websocket_function("WebSocketConnectFunction")(connect_event("c-alice=", alice)) == {
        "statusCode": 200
    }
    row = connection_row(world, "c-alice=")
    assert row.user_id == alice
    assert before - timedelta(seconds=5) <= row.connected_at == row.last_seen_at <= datetime.now(UTC)


def test_connecting_twice_with_the_same_id_keeps_one_row(websocket_function, world):
    alice = world.user("alice")
    connect = websocket_function("WebSocketConnectFunction")
    assert connect(connect_event("c-1=", alice)) == {"statusCode": 200}
    assert connect(connect_event("c-1=", alice)) == {"statusCode": 200}
    assert world.connections() == {"c-1="}


@pytest.mark.parametrize("who", ["unknown", "deleted", "no-authorizer-context", "not-a-uuid", "another-user"])
def test_connect_is_refused_for_a_user_who_cannot_connect(websocket_function, world, who):
    alice = world.user("alice")
    world.connect(alice, "taken=")
    user = {
        "unknown": uuid.uuid4(),
        "deleted": world.user("gone", deleted=True),
        "no-authorizer-context": None,
        "not-a-uuid": "alice",
        "another-user": world.user("mallory"),
    }[who]
    connection_id = "taken=" if who == "another-user" else "c-refused="
    response = websocket_function("WebSocketConnectFunction")(connect_event(connection_id, user))
    assert response == {"statusCode": 403}
    assert world.connections() == {"taken="}
    assert connection_row(world, "taken=").user_id == alice


def test_disconnect_removes_the_connection_and_is_idempotent(websocket_function, world):
    alice = world.user("alice")
    keep, leave = world.connect(alice, "keep="), world.connect(alice, "leave=")
    disconnect = websocket_function("WebSocketDisconnectFunction")
    assert disconnect(disconnect_event(leave)) == {"statusCode": 200}
    assert disconnect(disconnect_event(leave)) == {"statusCode": 200}
    assert world.connections() == {keep}


# --- $default: client frames -------------------------------------------------------------------------


@pytest.fixture
def send_frame(websocket_function):
    return websocket_function("WebSocketDefaultFunction")


def confirmation_jobs(aws) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in queue_messages(aws, "DeliveryConfirmationQueue")]


def test_ack_becomes_a_delivery_confirmation_job_for_the_connections_user(send_frame, world, aws):
    bob = world.user("bob")
    connection = world.connect(bob)
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    before = datetime.now(UTC)
    # When bob's client acks two messages
    response = send_frame(
        message_event(connection, {"action": "ack", "status": "delivered", "message_ids": ids})
    )
    # Then a delivery-confirmation job for bob is queued, and nothing is posted back
    assert response == {"statusCode": 200}
    (queued,) = confirmation_jobs(aws)
    assert queued["job_type"] == "delivery-confirmation"
    assert queued["schema_version"] == 1
    assert queued["correlation_id"].startswith("req-")
    data = queued["data"]
    assert data["recipient_id"] == str(bob)
    assert (data["status"], data["message_ids"], data["read_up_to"]) == ("delivered", ids, None)
    assert before <= datetime.fromisoformat(data["confirmed_at"]) <= datetime.now(UTC)
    assert connection not in posted_to()


def posted_to() -> set[str]:
    """Connections moto's @connections API has received anything for."""
    from urllib.parse import unquote

    from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

    return {unquote(c) for c in apigatewaymanagementapi_backends["123456789012"]["us-east-1"].connections}


def test_ack_read_up_to_becomes_a_job(send_frame, world, aws):
    bob = world.user("bob")
    connection = world.connect(bob)
    message_id = str(uuid.uuid4())
    send_frame(message_event(connection, {"action": "ack", "status": "read", "read_up_to": message_id}))
    (queued,) = confirmation_jobs(aws)
    assert queued["data"]["recipient_id"] == str(bob)
    assert (queued["data"]["status"], queued["data"]["read_up_to"]) == ("read", message_id)
    assert queued["data"]["message_ids"] is None


def test_an_ack_is_confirmed_by_the_delivery_confirmation_function(send_frame, function, world, aws):
    # Given alice's message delivered to bob's live connection
    alice, bob = world.user("alice"), world.user("bob")
    conversation = world.conversation([alice, bob])
    bob_connection = world.connect(bob)
    data = world.send_message_data(conversation, alice, "lunch?")
    sender = function("SendMessageFunction")
    sender.send(job("send-message", data))
    sender.drain()
    assert ws_frames(bob_connection)[0]["type"] == "message.new"
    # When bob's client acks it as read over the WebSocket and the queue is worked
    ack = {"action": "ack", "status": "read", "message_ids": [data["message_id"]]}
    assert send_frame(message_event(bob_connection, ack)) == {"statusCode": 200}
    function("DeliveryConfirmationFunction").drain()
    # Then bob's delivery is read
    assert world.deliveries(data["message_id"])[bob].status == "read"
    assert world.message(data["message_id"]).status == "read"


def test_ping_is_answered_with_pong(send_frame, world):
    connection = world.connect(world.user("bob"))
    assert send_frame(message_event(connection, {"action": "ping"})) == {"statusCode": 200}
    assert ws_frames(connection) == [{"type": "pong"}]


def test_a_binary_frame_is_decoded(send_frame, world):
    connection = world.connect(world.user("bob"))
    send_frame(message_event(connection, {"action": "ping"}, binary=True))
    assert ws_frames(connection) == [{"type": "pong"}]


def test_every_frame_marks_the_connection_as_seen(send_frame, world, db):
    connection = world.connect(world.user("bob"))
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with db.begin() as conn:
        conn.execute(update(WsConnection).values(last_seen_at=long_ago, connected_at=long_ago))
    send_frame(message_event(connection, "not json"))
    row = connection_row(world, connection)
    assert row.connected_at == long_ago
    assert row.last_seen_at > datetime.now(UTC) - timedelta(seconds=5)


def error_frame(connection: str) -> dict[str, Any]:
    (frame,) = ws_frames(connection)
    assert frame["type"] == "error" and isinstance(frame["message"], str) and frame["message"]
    return frame


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{not json", "invalid-json"),
        ("[1, 2]", "invalid-json"),
        ('"ping"', "invalid-json"),
        ("", "invalid-json"),
        ({"action": "dance"}, "unknown-action"),
        ({"status": "read"}, "unknown-action"),
        ({"action": "ack", "status": "seen", "message_ids": [str(uuid.uuid4())]}, "invalid-ack"),
        ({"action": "ack", "status": "read", "message_ids": ["m-1"]}, "invalid-ack"),
        ({"action": "ack", "status": "read", "message_ids": []}, "invalid-ack"),
        (
            {"action": "ack", "status": "read", "message_ids": [str(uuid.uuid4()) for _ in range(501)]},
            "invalid-ack",
        ),
        ({"action": "ack", "status": "read"}, "invalid-ack"),
        (
            {
                "action": "ack",
                "status": "read",
                "message_ids": [str(uuid.uuid4())],
                "read_up_to": str(uuid.uuid4()),
            },
            "invalid-ack",
        ),
        (
            {
                "action": "ack",
                "status": "read",
                "message_ids": [str(uuid.uuid4())],
                "recipient_id": str(uuid.uuid4()),
            },
            "invalid-ack",
        ),
        ("x" * (32 * 1024 + 1), "frame-too-large"),
    ],
    ids=[
        "malformed-json",
        "json-array",
        "json-string",
        "empty",
        "unknown-action",
        "no-action",
        "ack-bad-status",
        "ack-non-uuid-ids",
        "ack-no-ids",
        "ack-too-many-ids",
        "ack-no-target",
        "ack-two-targets",
        "ack-names-another-recipient",
        "oversize",
    ],
)
def test_a_bad_frame_gets_an_error_frame_and_the_connection_stays_open(send_frame, world, aws, body, code):
    connection = world.connect(world.user("bob"))
    assert send_frame(message_event(connection, body)) == {"statusCode": 200}
    assert error_frame(connection)["code"] == code
    assert confirmation_jobs(aws) == []
    assert world.connections() == {connection}


def test_error_messages_do_not_echo_the_frame(send_frame, world):
    connection = world.connect(world.user("bob"))
    secret_looking = "s3cr3t-value-from-the-client"
    send_frame(
        message_event(
            connection, {"action": "ack", "status": secret_looking, "message_ids": [secret_looking]}
        )
    )
    frame = error_frame(connection)
    assert frame["code"] == "invalid-ack"
    assert secret_looking not in frame["message"]


def test_the_frame_limit_is_a_setting(websocket_function, world):
    connection = world.connect(world.user("bob"))
    send = websocket_function("WebSocketDefaultFunction", WEBSOCKET_MAX_FRAME_BYTES="10")
    send(message_event(connection, {"action": "ping"}))
    assert error_frame(connection) == {
        "type": "error",
        "code": "frame-too-large",
        "message": "frames are limited to 10 bytes",
    }


def test_a_frame_from_an_unknown_connection_gets_an_error_frame(send_frame, world, aws):
    ack = {"action": "ack", "status": "read", "message_ids": [str(uuid.uuid4())]}
    assert send_frame(message_event("never-registered=", ack)) == {"statusCode": 200}
    assert error_frame("never-registered=")["code"] == "unknown-connection"
    assert confirmation_jobs(aws) == []


def test_an_ack_that_cannot_be_queued_is_answered_with_unavailable(send_frame, world, aws):
    from botocore.exceptions import ClientError

    from shared.bootstrap import dependencies
    from tests.faults import failing_calls

    connection = world.connect(world.user("bob"))
    ack = {"action": "ack", "status": "read", "message_ids": [str(uuid.uuid4())]}
    throttled = ClientError({"Error": {"Code": "RequestThrottled"}}, "SendMessageBatch")
    with failing_calls(dependencies().aws.sqs(), "SendMessageBatch", lambda: throttled) as failed:
        assert send_frame(message_event(connection, ack)) == {"statusCode": 200}
    assert failed == [1]
    assert error_frame(connection)["code"] == "unavailable"


def test_a_reply_to_a_gone_connection_removes_it(send_frame, world):
    bob = world.user("bob")
    gone, other = world.connect(bob, "gone="), world.connect(bob, "other=")
    api = client("apigatewaymanagementapi", WEBSOCKET_ENDPOINT)
    with Stubber(api) as stub:
        stub.add_client_error("post_to_connection", service_error_code="GoneException", http_status_code=410)
        assert send_frame(message_event(gone, {"action": "ping"})) == {"statusCode": 200}
        stub.assert_no_pending_responses()
    assert world.connections() == {other}


def test_a_reply_that_fails_otherwise_fails_the_invocation(send_frame, world):
    from botocore.exceptions import ClientError

    connection = world.connect(world.user("bob"))
    api = client("apigatewaymanagementapi", WEBSOCKET_ENDPOINT)
    with Stubber(api) as stub:
        stub.add_client_error(
            "post_to_connection", service_error_code="ForbiddenException", http_status_code=403
        )
        with pytest.raises(ClientError):
            send_frame(message_event(connection, {"action": "ping"}))
    assert world.connections() == {connection}


# --- the sweeper -------------------------------------------------------------------------------------


def add_connections(
    db, user_id: uuid.UUID, count: int, *, connected_ago: timedelta, seen_ago: timedelta
) -> list[str]:
    now = datetime.now(UTC)
    ids = [f"c-{uuid.uuid4().hex[:16]}=" for _ in range(count)]
    with db.begin() as conn:
        conn.execute(
            insert(WsConnection),
            [
                {
                    "connection_id": i,
                    "user_id": user_id,
                    "connected_at": now - connected_ago,
                    "last_seen_at": now - seen_ago,
                }
                for i in ids
            ],
        )
    return ids


SCHEDULED_EVENT = {
    "version": "0",
    "id": "5f1f8d6e-0000-4000-8000-000000000000",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-29T10:15:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/switchboard-sweeper"],
    "detail": {},
}


def test_the_sweeper_removes_only_connections_past_the_maximum_duration(websocket_function, world, db):
    bob = world.user("bob")
    fresh = add_connections(db, bob, 2, connected_ago=timedelta(minutes=5), seen_ago=timedelta(minutes=1))
    idle = add_connections(db, bob, 1, connected_ago=timedelta(minutes=90), seen_ago=timedelta(minutes=80))
    expired = add_connections(
        db, bob, 3, connected_ago=timedelta(hours=2, minutes=1), seen_ago=timedelta(minutes=1)
    )
    result = websocket_function("StaleConnectionSweeperFunction")(SCHEDULED_EVENT)
    assert result == {"expired": 3, "idle": 0, "closed": 0, "close_failed": 0, "batches": 1, "complete": True}
    assert world.connections() == set(fresh + idle)
    assert not set(expired) & world.connections()


def test_the_sweeper_closes_idle_connections_when_idleness_is_enabled(websocket_function, world, db):
    bob = world.user("bob")
    fresh = add_connections(db, bob, 1, connected_ago=timedelta(minutes=5), seen_ago=timedelta(minutes=1))
    idle = add_connections(db, bob, 2, connected_ago=timedelta(minutes=90), seen_ago=timedelta(minutes=11))
    sweep = websocket_function("StaleConnectionSweeperFunction", CONNECTION_IDLE_SECONDS="600")
    api = client("apigatewaymanagementapi", WEBSOCKET_ENDPOINT)
    with Stubber(api) as stub:
        stub.add_response("delete_connection", {})
        stub.add_client_error("delete_connection", service_error_code="GoneException", http_status_code=410)
        result = sweep(SCHEDULED_EVENT)
        stub.assert_no_pending_responses()
    assert (result["idle"], result["closed"], result["close_failed"]) == (2, 2, 0)
    assert world.connections() == set(fresh)
    assert idle


def test_a_failure_to_close_an_idle_connection_is_counted_not_raised(websocket_function, world, db):
    bob = world.user("bob")
    add_connections(db, bob, 1, connected_ago=timedelta(minutes=30), seen_ago=timedelta(minutes=20))
    sweep = websocket_function("StaleConnectionSweeperFunction", CONNECTION_IDLE_SECONDS="600")
    api = client("apigatewaymanagementapi", WEBSOCKET_ENDPOINT)
    with Stubber(api) as stub:
        stub.add_client_error(
            "delete_connection", service_error_code="ForbiddenException", http_status_code=403
        )
        result = sweep(SCHEDULED_EVENT)
    assert (result["idle"], result["closed"], result["close_failed"]) == (1, 0, 1)
    assert world.connections() == set()


def test_the_sweeper_works_in_bounded_batches(websocket_function, world, db):
    from shared.services.connections.repository import SWEEP_BATCH

    bob = world.user("bob")
    add_connections(
        db, bob, 2 * SWEEP_BATCH + 7, connected_ago=timedelta(hours=3), seen_ago=timedelta(hours=3)
    )
    result = websocket_function("StaleConnectionSweeperFunction")(SCHEDULED_EVENT)
    assert (result["expired"], result["batches"], result["complete"]) == (2 * SWEEP_BATCH + 7, 3, True)
    assert world.connections() == set()


def test_the_sweeper_stops_before_the_deadline_and_the_next_run_continues(world, db, aws, monkeypatch):
    from shared.config import get_settings
    from shared.services.connections.repository import SWEEP_BATCH
    from shared.services.connections.service import sweep_stale_connections

    monkeypatch.setenv("WEBSOCKET_ENDPOINT", WEBSOCKET_ENDPOINT)
    get_settings.cache_clear()
    bob = world.user("bob")
    add_connections(db, bob, SWEEP_BATCH + 1, connected_ago=timedelta(hours=3), seen_ago=timedelta(hours=3))
    from shared.bootstrap import dependencies

    first = sweep_stale_connections(dependencies(), time_left_ms=lambda: 0)
    assert (first.expired, first.batches, first.complete) == (SWEEP_BATCH, 1, False)
    second = sweep_stale_connections(dependencies(), time_left_ms=lambda: 60_000)
    assert (second.expired, second.complete) == (1, True)
    assert world.connections() == set()
    get_settings.cache_clear()
