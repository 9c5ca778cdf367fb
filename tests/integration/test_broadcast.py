"""The broadcast service: one lookup, concurrent posts, 410 Gone removes the connection, throttling retried.
moto never answers 410 or 429, so those cases use botocore's Stubber on the real client."""

from __future__ import annotations

import json

import pytest
from botocore.stub import Stubber

from shared.aws import client
from shared.bootstrap import dependencies
from shared.errors import DependencyThrottled
from shared.services.connections.broadcast import MAX_FRAME_BYTES, broadcast
from shared.services.connections.gateway import connections_api
from tests.conftest import WEBSOCKET_ENDPOINT

pytestmark = pytest.mark.integration

FRAME = {"type": "message.new", "message": {"id": "m1", "content": "hi"}}


@pytest.fixture
def api(function):
    function("SendMessageFunction")  # the environment of a broadcasting function
    return client("apigatewaymanagementapi", WEBSOCKET_ENDPOINT)


def _run(db, user_ids, frames=(FRAME,)):
    deps = dependencies()
    with deps.unit_of_work() as uow:
        result = broadcast(uow.session, connections_api(deps), user_ids, list(frames), deps.settings)
        uow.commit()
    return result


def test_gone_connection_is_removed_while_other_recipients_still_receive(api, world, db):
    bob, carol = world.user("bob"), world.user("carol")
    stale, live = world.connect(bob, "bob-stale"), world.connect(carol, "carol-live")
    with Stubber(api) as stub:
        # Posts run concurrently: answer by connection id, whichever comes first.
        stub.add_client_error(
            "post_to_connection",
            service_error_code="GoneException",
            http_status_code=410,
            expected_params={
                "ConnectionId": stale,
                "Data": json.dumps(FRAME, separators=(",", ":")).encode(),
            },
        )
        stub.add_response(
            "post_to_connection",
            {},
            expected_params={"ConnectionId": live, "Data": json.dumps(FRAME, separators=(",", ":")).encode()},
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("BROADCAST_CONCURRENCY", "1")  # the stubber answers in order
            from shared.config import get_settings

            get_settings.cache_clear()
            # order the lookup result: stale first (same order as the stubbed answers)
            result = _run(db, [bob, carol])
            get_settings.cache_clear()
        stub.assert_no_pending_responses()
    assert result.reached_user_ids == {carol}
    assert result.gone_connection_ids == [stale]
    assert world.connections() == {live}


def test_throttling_is_retried_then_succeeds(api, world, db):
    bob = world.user("bob")
    connection = world.connect(bob)
    with Stubber(api) as stub:
        stub.add_client_error(
            "post_to_connection", service_error_code="LimitExceededException", http_status_code=429
        )
        stub.add_response("post_to_connection", {})
        result = _run(db, [bob])
        stub.assert_no_pending_responses()
    assert result.reached_user_ids == {bob}
    assert world.connections() == {connection}


def test_persistent_throttling_fails_the_broadcast_as_transient(api, world, db):
    bob = world.user("bob")
    world.connect(bob)
    with Stubber(api) as stub:
        for _ in range(3):
            stub.add_client_error(
                "post_to_connection", service_error_code="LimitExceededException", http_status_code=429
            )
        with pytest.raises(DependencyThrottled):
            _run(db, [bob])


def test_no_connections_means_no_calls(api, world, db):
    bob = world.user("bob")
    with Stubber(api) as stub:  # any call would fail: nothing is stubbed
        result = _run(db, [bob])
        stub.assert_no_pending_responses()
    assert result.posted == 0 and result.reached_user_ids == set()


def test_connections_are_looked_up_in_one_query_and_posted_concurrently(api, world, db):
    from sqlalchemy import event

    users = [world.user(f"u{i}") for i in range(30)]
    for user in users:
        world.connect(user)
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(db, "before_cursor_execute", listener)
    try:
        result = _run(db, users)
    finally:
        event.remove(db, "before_cursor_execute", listener)
    assert result.reached_user_ids == set(users) and result.posted == 30
    assert len([s for s in statements if "ws_connections" in s]) == 1


def test_oversized_frames_are_reduced_not_dropped(api, world, db):
    from tests.conftest import ws_frames

    bob = world.user("bob")
    connection = world.connect(bob)
    big = {"type": "message.new", "message": {"id": "m1", "seq": 1, "content": "é" * (MAX_FRAME_BYTES // 2)}}
    _run(db, [bob], [big])
    [frame] = ws_frames(connection)
    assert frame["message"]["id"] == "m1" and frame["message"]["content_truncated"] is True
    assert 0 < len(frame["message"]["content"]) < MAX_FRAME_BYTES // 2
