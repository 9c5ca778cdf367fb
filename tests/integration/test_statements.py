"""Set-based SQL: statements per job do not grow with the number of recipients (docs/contracts.md §4)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import event

from tests.world import job

pytestmark = pytest.mark.integration


@contextmanager
def counting(engine):
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _statements_for_send(send, world, db, size, online):
    conversation, members = world.group(size)
    for member in members[:online]:
        world.connect(member)
    send.send(job("send-message", world.send_message_data(conversation, members[0])))
    with counting(db) as statements:
        _, response = send.poll_once()
    assert response == {"batchItemFailures": []}
    assert len(world.deliveries(world.messages(conversation)[0].id)) == size - 1
    return statements


def test_statements_per_send_message_job_are_the_same_for_2_and_1000_recipients(function, world, db):
    send = function("SendMessageFunction")
    small = _statements_for_send(send, world, db, 2, online=2)
    large = _statements_for_send(send, world, db, 1000, online=50)
    assert len(small) == len(large), (small, large)
    assert len(small) <= 10


def test_statements_per_confirmation_do_not_grow_with_the_number_of_messages(function, world, db):
    send, confirm = function("SendMessageFunction"), function("DeliveryConfirmationFunction")
    from datetime import UTC, datetime

    conversation, (alice, bob) = world.group(2)
    ids = []
    for _ in range(40):
        data = world.send_message_data(conversation, alice)
        ids.append(data["message_id"])
        send.send(job("send-message", data))
    send.drain()
    confirm = function("DeliveryConfirmationFunction")
    counts = []
    for batch in (ids[:1], ids[1:40]):
        confirm.send(
            job(
                "delivery-confirmation",
                {
                    "recipient_id": str(bob),
                    "status": "read",
                    "confirmed_at": datetime.now(UTC).isoformat(),
                    "message_ids": batch,
                },
            )
        )
        with counting(db) as statements:
            _, response = confirm.poll_once()
        assert response == {"batchItemFailures": []}
        counts.append(len(statements))
    assert counts[0] == counts[1]
