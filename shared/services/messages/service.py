"""send-message (docs/contracts.md §5): persist a message with the next per-conversation ``seq``, one pending
delivery per recipient, in a constant number of statements whatever the number of recipients; then, after
commit, index it, broadcast ``message.new`` and notify the recipients no connection reached.

In a conversation with ``encryption_enabled`` the content is sealed inline (shared/services/crypto) and
plaintext is never at rest: the row holds only the sealed columns, the pending ``message.new`` effect holds
the message id (it reads and opens the message when performed), notifications carry a generic body, and the
indexing job builds the message's blind index (shared/services/search/blind.py), never a plaintext one."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from shared.errors import ConflictingJob, EncryptionNotAvailable, NotAParticipant, UnknownEntity
from shared.jobs import INDEXING, NOTIFICATION, IndexingData, Job, SendMessageData
from shared.runtime.effects import Effect
from shared.services.connections.broadcast import broadcast
from shared.services.connections.gateway import connections_api
from shared.services.crypto import repository as crypto_repository
from shared.services.crypto.keys import KeyRing
from shared.services.messages import repository
from shared.services.notifications.jobs import notification_jobs
from shared.services.queues import EnqueueJobs, send_jobs

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies

NOTIFICATION_PREVIEW_CHARS = 140


def send_message(job: Job[SendMessageData], session: Session, keys: KeyRing | None = None) -> list[Effect]:
    """Persist the message of ``job`` and return its post-commit effects.

    The same ``message_id`` sent again (under another job id) is one message: nothing is written and nothing
    is broadcast twice. A message pre-inserted by the chat API in status ``sending`` becomes ``sent`` here,
    atomically with its deliveries. ``keys`` seals the content of an encrypted conversation; without it such a
    conversation is refused (``encryption-not-available``)."""
    data = job.data
    context = repository.load_conversation(session, data.conversation_id, data.sender_id, data.reply_to_id)
    if context is None or context.deleted_at is not None:
        raise UnknownEntity("conversation not found or deleted")
    participants: list[uuid.UUID] = context.participants or []
    if data.sender_id not in participants:
        raise NotAParticipant("the sender is not an active participant of the conversation")
    encrypted = bool(context.encryption_enabled)
    if encrypted and keys is None:
        raise EncryptionNotAvailable("conversation requires encryption at rest; no key ring configured")
    if data.reply_to_id is not None and not context.reply_to_found:
        raise UnknownEntity("reply_to_id is not a message of this conversation")
    recipients = _recipients(participants, data.sender_id, data.recipient_ids)

    sealed = (
        keys.seal(session, data.conversation_id, data.message_id, data.content)
        if keys is not None and encrypted
        else None
    )
    stored = repository.insert_message(session, data, sealed)
    if stored is None:
        existing = repository.message_owner(session, data.message_id)
        if (existing.conversation_id, existing.sender_id) != (data.conversation_id, data.sender_id):
            raise ConflictingJob("message_id already belongs to another conversation or sender")
        return []
    repository.insert_pending_deliveries(session, data.message_id, recipients)
    if data.attachment_ids:
        wanted = len(set(data.attachment_ids))
        linked = repository.link_attachments(session, data.message_id, data.sender_id, data.attachment_ids)
        if linked != wanted:
            # Counts only: never the ids, which could tell whose upload an id is.
            raise UnknownEntity(
                f"{wanted - linked} of {wanted} attachment(s) unknown, deleted, attached to another message "
                "or not uploaded by the sender"
            )
    if keys is not None and stored.content is not None and encrypted:
        # a row the chat API pre-inserted with plaintext: sealed in this transaction too
        resealed = keys.seal(session, data.conversation_id, data.message_id, stored.content)
        crypto_repository.store_sealed(
            session,
            data.message_id,
            resealed.ciphertext,
            resealed.nonce,
            resealed.key_version,
            resealed.algorithm,
        )
    _count_in_batch(job, session, "sent", _single(recipients))
    return _effects(job, stored, participants, recipients, context.sender_name, encrypted)


def record_dead_letter(job: Job[SendMessageData], session: Session) -> None:
    """A send-message job that can never succeed still counts towards its batch (as failed), once, and only
    when its sender is the batch's sender. Its recipient is recorded when the job names exactly one (the
    conversation's participants are not looked up on this path)."""
    data = job.data
    named = [user_id for user_id in dict.fromkeys(data.recipient_ids or []) if user_id != data.sender_id]
    _count_in_batch(job, session, "failed", _single(named))


def _count_in_batch(
    job: Job[SendMessageData], session: Session, outcome: repository.BatchOutcome, recipient: uuid.UUID | None
) -> None:
    """With a ``batch_id``: count this job in the batch, at most once per job whatever the path or the number
    of deliveries, and only if the job's sender is the batch's (repository.count_in_batch); a job naming
    another sender's batch, or a batch that does not exist, changes nothing."""
    data = job.data
    if data.batch_id is None:
        return
    repository.count_in_batch(
        session,
        batch_id=data.batch_id,
        job_id=job.job_id,
        sender_id=data.sender_id,
        message_id=data.message_id,
        recipient_id=recipient,
        outcome=outcome,
    )


def _single(user_ids: list[uuid.UUID]) -> uuid.UUID | None:
    return user_ids[0] if len(user_ids) == 1 else None


def _recipients(
    participants: list[uuid.UUID], sender_id: uuid.UUID, requested: list[uuid.UUID] | None
) -> list[uuid.UUID]:
    if requested is None:
        return [user_id for user_id in participants if user_id != sender_id]
    wanted = dict.fromkeys(user_id for user_id in requested if user_id != sender_id)
    outsiders = set(wanted) - set(participants)
    if outsiders:
        raise NotAParticipant(
            f"{len(outsiders)} recipient(s) are not active participants of the conversation"
        )
    return list(wanted)


class OfflineNotification(BaseModel):
    """A notification for each of ``recipient_ids`` that no connection reached (``user_id`` is filled in)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    recipient_ids: list[uuid.UUID]
    notification: dict[str, Any]


class BroadcastNewMessage(Effect):
    """Post the ``message.new`` frame to every live connection of the participants, then notify the recipients
    no connection reached (a 410 Gone counts as not reached): the rule of who gets a notification is this
    domain's, not the broadcast service's."""

    kind: Literal["message.new"] = "message.new"
    user_ids: list[uuid.UUID]
    frames: list[dict[str, Any]]
    notify_offline: OfflineNotification | None = None
    # A sealed message: the frames' ``message.content`` is filled in from it (opened in memory) at perform.
    sealed_message_id: uuid.UUID | None = None

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        frames = self.frames
        if self.sealed_message_id is not None:
            message = crypto_repository.sealed_message(session, self.sealed_message_id)
            if message is None or (message.content_ciphertext is None and message.content is None):
                return []  # deleted or purged since: nothing left to show
            content = message.content
            if message.content_ciphertext is not None:
                content = KeyRing.of(deps).open(session, message)
            frames = [{**frame, "message": {**frame["message"], "content": content}} for frame in frames]
        result = broadcast(session, connections_api(deps), self.user_ids, frames, deps.settings)
        offline = self.notify_offline
        if offline is None:
            return []
        unreached = [user_id for user_id in offline.recipient_ids if user_id not in result.reached_user_ids]
        if not unreached:
            return []
        return [NotifyOffline(user_ids=unreached, notification=offline.notification)]


class NotifyOffline(Effect):
    """Enqueue one notification job per user of ``user_ids`` (docs/contracts.md §2: one job, one user),
    built from the one ``notification`` template, validated once (shared/services/notifications/jobs.py).
    Stored, if it must be retried, as the template and the user ids rather than as N whole jobs."""

    kind: Literal["notify-offline"] = "notify-offline"
    user_ids: list[uuid.UUID] = Field(min_length=1)
    notification: dict[str, Any]

    def perform(self, job: Job[Any], session: Session, deps: Dependencies) -> list[Effect]:
        jobs = notification_jobs(self.notification, self.user_ids, job)
        # entries built only from validated jobs: botocore's own validation of them would repeat that work
        send_jobs(deps.aws.sqs_prevalidated(), deps.settings.queue_url(NOTIFICATION), NOTIFICATION, jobs)
        return []


def _effects(
    job: Job[SendMessageData],
    stored: Any,
    participants: list[uuid.UUID],
    recipients: list[uuid.UUID],
    sender_name: str | None,
    encrypted: bool = False,
) -> list[Effect]:
    data = job.data
    indexing = INDEXING.new(
        IndexingData(message_id=data.message_id, operation="index"),
        job_id=job.child_job_id("indexing"),
        correlation_id=job.follow_up_correlation_id,
    )
    frame = {
        "type": "message.new",
        "message": {
            "id": str(stored.id),
            "conversation_id": str(data.conversation_id),
            "sender_id": str(data.sender_id),
            "seq": stored.seq,
            "content": None if encrypted else stored.content,
            "content_type": stored.content_type,
            "created_at": stored.created_at.isoformat(),
            "reply_to_id": str(data.reply_to_id) if data.reply_to_id else None,
            "attachment_ids": [str(a) for a in data.attachment_ids or []],
        },
    }
    preview = "" if encrypted else stored.content or ""
    if encrypted:  # no plaintext in notification rows or a provider's payload
        body = f"New message from {sender_name}"[:4_000] if sender_name else "New message"
    elif len(preview) > NOTIFICATION_PREVIEW_CHARS:
        body = preview[:NOTIFICATION_PREVIEW_CHARS] + "…"
    else:
        body = preview or "New message"
    notification = {
        "category": "message",
        "title": (sender_name or "New message")[:200],
        "body": body,
        "conversation_id": str(data.conversation_id),
        "message_id": str(data.message_id),
        "data": {"conversation_id": str(data.conversation_id), "message_id": str(data.message_id)},
    }
    broadcast_effect = BroadcastNewMessage(
        user_ids=participants,
        frames=[frame],
        notify_offline=OfflineNotification(recipient_ids=recipients, notification=notification)
        if recipients
        else None,
        sealed_message_id=data.message_id if encrypted else None,
    )
    return [EnqueueJobs.of(INDEXING, [indexing]), broadcast_effect]
