"""delivery-confirmation (DESIGN §6): monotonic per-recipient receipts, ``message_reads``, the message's
aggregate status, and ``message.status`` frames to the senders — a constant number of statements for any
number of messages."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import ARRAY, bindparam, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Session

from shared.errors import NotARecipient, UnknownEntity
from shared.jobs import DeliveryConfirmationJob
from shared.services.effects import Broadcast, Effect

_UUIDS = ARRAY(UUID(as_uuid=True))

# Statuses only move forward: pending < delivered < read ('failed' may still be confirmed).
_ADVANCE = text(
    """
    UPDATE message_deliveries d
       SET status = :status,
           delivered_at = COALESCE(d.delivered_at, :at),
           read_at = CASE WHEN :status = 'read' THEN COALESCE(d.read_at, :at) ELSE d.read_at END,
           updated_at = now()
     WHERE d.recipient_id = :recipient
       AND d.message_id = ANY(:ids)
       AND (d.status IN ('pending', 'failed') OR (d.status = 'delivered' AND :status = 'read'))
    RETURNING d.message_id
    """
).bindparams(bindparam("ids", type_=_UUIDS))

_RECORD_READS = text(
    """
    INSERT INTO message_reads (message_id, user_id, read_at)
    SELECT unnest(:ids), :recipient, :at
    ON CONFLICT DO NOTHING
    """
).bindparams(bindparam("ids", type_=_UUIDS))

# The message becomes delivered/read when every recipient is; returns every touched message with its sender.
_AGGREGATE = text(
    """
    WITH agg AS (
        SELECT message_id,
               CASE WHEN bool_and(status = 'read') THEN 'read'
                    WHEN bool_and(status IN ('delivered', 'read')) THEN 'delivered' END AS status
          FROM message_deliveries
         WHERE message_id = ANY(:ids)
         GROUP BY message_id
    ), changed AS (
        UPDATE messages m
           SET status = agg.status
          FROM agg
         WHERE m.id = agg.message_id
           AND agg.status IS NOT NULL
           AND m.status IN ('sending', 'sent', 'delivered')
           AND NOT (m.status = 'delivered' AND agg.status = 'delivered')
        RETURNING m.id, m.status
    )
    SELECT m.id, m.sender_id, COALESCE(changed.status, m.status) AS message_status
      FROM messages m LEFT JOIN changed ON changed.id = m.id
     WHERE m.id = ANY(:ids)
    """
).bindparams(bindparam("ids", type_=_UUIDS))

_READ_UP_TO_TARGETS = text(
    """
    SELECT m.conversation_id,
           EXISTS (SELECT 1 FROM conversation_participants p
                    WHERE p.conversation_id = m.conversation_id AND p.user_id = :recipient) AS is_participant,
           ARRAY(SELECT d.message_id FROM message_deliveries d JOIN messages e ON e.id = d.message_id
                  WHERE d.recipient_id = :recipient AND e.conversation_id = m.conversation_id
                    AND e.seq <= m.seq AND d.status <> 'read') AS ids
      FROM messages m
     WHERE m.id = :anchor AND m.deleted_at IS NULL
    """
)

_KNOWN_DELIVERIES = text(
    "SELECT count(*) FROM message_deliveries WHERE recipient_id = :recipient AND message_id = ANY(:ids)"
).bindparams(bindparam("ids", type_=_UUIDS))


def confirm_delivery(job: DeliveryConfirmationJob, session: Session) -> list[Effect]:
    """Apply the receipts of ``job`` and return the ``message.status`` broadcasts for the senders.

    Only a recipient of every message named may confirm (otherwise nothing is written); a receipt never
    downgrades; confirming what is already confirmed changes nothing and broadcasts nothing."""
    data = job.data
    targets = _targets(session, data.recipient_id, data.message_ids, data.read_up_to)
    params = {"recipient": data.recipient_id, "status": data.status, "at": data.confirmed_at}
    advanced = [row.message_id for row in session.execute(_ADVANCE, {**params, "ids": targets})]
    if not advanced:
        return []
    if data.status == "read":
        session.execute(_RECORD_READS, {**params, "ids": advanced})
    messages = session.execute(_AGGREGATE, {"ids": advanced}).all()
    return _status_broadcasts(messages, data.recipient_id, data.status, data.confirmed_at.isoformat())


def _targets(
    session: Session, recipient: uuid.UUID, message_ids: list[uuid.UUID] | None, read_up_to: uuid.UUID | None
) -> list[uuid.UUID]:
    if message_ids is not None:
        unique = list(dict.fromkeys(message_ids))
        known = session.execute(_KNOWN_DELIVERIES, {"recipient": recipient, "ids": unique}).scalar_one()
        if known != len(unique):
            raise NotARecipient(f"the confirmer is not a recipient of {len(unique) - known} of the messages")
        return unique
    anchor = session.execute(
        _READ_UP_TO_TARGETS, {"recipient": recipient, "anchor": read_up_to}
    ).one_or_none()
    if anchor is None:
        raise UnknownEntity("read_up_to names no message")
    if not anchor.is_participant:
        raise NotARecipient("the confirmer is not a participant of the conversation")
    return list(anchor.ids)


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
