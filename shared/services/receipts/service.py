"""delivery-confirmation (docs/contracts.md §5): monotonic receipts per recipient, ``message_reads``, the
messages' aggregate status, and ``message.status`` frames to the senders — a constant number of statements
for any number of messages."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from shared.errors import NotARecipient, UnknownEntity
from shared.jobs import DeliveryConfirmationData, Job
from shared.runtime.effects import Effect
from shared.services.connections.broadcast import Broadcast
from shared.services.receipts import repository

CLIENT_CLOCK_SKEW = timedelta(minutes=5)

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies


def confirm_delivery(
    job: Job[DeliveryConfirmationData], session: Session, deps: Dependencies | None = None
) -> list[Effect]:
    """Apply the receipts of ``job`` and return the ``message.status`` broadcasts for the senders.

    Only a recipient of every message named may confirm (otherwise nothing is written); a receipt never
    downgrades; confirming what is already confirmed changes nothing and broadcasts nothing."""
    data = job.data
    # A confirmer's clock may be off, or lie: a receipt is never dated in the future (beyond a small skew).
    at = min(data.confirmed_at, datetime.now(UTC) + CLIENT_CLOCK_SKEW)
    targets = _targets(session, data.recipient_id, data.message_ids, data.read_up_to)
    advanced = repository.advance_deliveries(session, data.recipient_id, targets, data.status, at)
    if not advanced:
        return []
    if data.status == "read":
        repository.record_reads(session, data.recipient_id, advanced, at)
    messages = repository.settle_message_statuses(session, advanced)
    return _status_broadcasts(messages, data.recipient_id, data.status, at.isoformat())


def _targets(
    session: Session, recipient: uuid.UUID, message_ids: list[uuid.UUID] | None, read_up_to: uuid.UUID | None
) -> list[uuid.UUID]:
    if message_ids is not None:
        unique = list(dict.fromkeys(message_ids))
        known = repository.count_deliveries(session, recipient, unique)
        if known != len(unique):
            raise NotARecipient(f"the confirmer is not a recipient of {len(unique) - known} of the messages")
        return unique
    assert read_up_to is not None  # the job model requires exactly one of message_ids and read_up_to
    anchor = repository.read_up_to_targets(session, recipient, read_up_to)
    if anchor is None:
        raise UnknownEntity("read_up_to names no message")
    if not anchor.is_participant:
        raise NotARecipient("the confirmer is not a participant of the conversation")
    return list(anchor.ids or [])


def _status_broadcasts(messages: Any, recipient: uuid.UUID, status: str, at: str) -> list[Effect]:
    frames_by_sender: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        frames_by_sender[message.sender_id].append(
            {
                "type": "message.status",
                "message_id": str(message.id),
                "recipient_id": str(recipient),
                "status": status,
                "at": at,
                "message_status": message.message_status,
            }
        )
    return [Broadcast(user_ids=[sender], frames=frames) for sender, frames in frames_by_sender.items()]
