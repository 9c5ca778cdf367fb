"""The ``encryption`` job (docs/contracts.md §5 encryption) and crypto-shredding.

* ``encrypt`` seals a plaintext message under its conversation's newest key version, clears the plaintext and
  removes the message's plaintext search entry, in one transaction; a sealed message is left alone. Used when
  a conversation turns encryption on, so its conversation must have ``encryption_enabled``.
* ``decrypt`` restores the plaintext (a conversation turning encryption off: its conversation must no longer
  have ``encryption_enabled``); a plaintext message is left alone. Re-indexing it is the chat API's
  ``indexing`` ``update`` job, as after any change of what search sees.
* ``rotate`` re-seals a sealed message under the newest version (a no-op when it already is), then retires
  every older version of the conversation that no message is sealed under. New versions come from
  :func:`rotate_conversation_key` or from a version reaching its seal limit.

``key_id``, when a job names one, must be the deployment's KMS key (ENCRYPTION_KEY_ARN, its ARN or key id):
this function wraps with that key only. A deleted message (or one in a deleted conversation) and a message
without content are left alone. Jobs return no effects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from shared.errors import ConflictingJob, InvalidJob, UnknownEntity
from shared.jobs import EncryptionData, Job
from shared.observability import logger
from shared.runtime.effects import Effect
from shared.services.crypto import repository
from shared.services.crypto.keys import DATA_KEYS, KeyRing
from shared.services.search.engine import PostgresSearchEngine


def handle_encryption(job: Job[EncryptionData], session: Session, keys: KeyRing) -> list[Effect]:
    data = job.data
    _check_key_id(data.key_id, keys)
    message = repository.lock_message(session, data.message_id)
    if message is None:
        raise UnknownEntity("message not found")
    if message.deleted or (message.content is None and message.content_ciphertext is None):
        outcome = "skipped"
    else:
        outcome = _OPERATIONS[data.operation](session, keys, message)
    logger.info("encryption job done", extra={"operation": data.operation, "outcome": outcome})
    return []


def _encrypt(session: Session, keys: KeyRing, message: Any) -> str:
    if not message.encryption_enabled:
        raise ConflictingJob("encrypt: the conversation does not have encryption enabled")
    if message.content_ciphertext is not None:
        return "unchanged"
    _seal(session, keys, message, message.content)
    # its plaintext lexemes give way to its blind index, in the same transaction
    PostgresSearchEngine(keys).index(session, message.id)
    return "sealed"


def _decrypt(session: Session, keys: KeyRing, message: Any) -> str:
    if message.encryption_enabled:
        raise ConflictingJob("decrypt: the conversation still has encryption enabled")
    if message.content_ciphertext is None:
        return "unchanged"
    repository.store_plaintext(session, message.id, keys.open(session, message))
    PostgresSearchEngine(keys).index(session, message.id)  # its blind index gives way to a plaintext one
    return "opened"


def _rotate(session: Session, keys: KeyRing, message: Any) -> str:
    if message.content_ciphertext is None:
        return "unchanged"
    outcome = "unchanged"
    if message.encryption_key_version != repository.newest_version(session, message.conversation_id):
        _seal(session, keys, message, keys.open(session, message))
        outcome = "resealed"
    repository.retire_unused(session, message.conversation_id)
    return outcome


_OPERATIONS: dict[str, Callable[[Session, KeyRing, Any], str]] = {
    "encrypt": _encrypt,
    "decrypt": _decrypt,
    "rotate": _rotate,
}


def rotate_conversation_key(session: Session, keys: KeyRing, conversation_id: uuid.UUID) -> int:
    """Make the conversation's next key version: new seals use it, and ``rotate`` jobs re-seal its messages
    under it. Returns the new version."""
    return keys.new_version(session, conversation_id)


def shred_conversation(session: Session, conversation_id: uuid.UUID) -> int:
    """Crypto-shredding: delete every wrapped data key of the conversation (and this container's cached
    copies), so its sealed content and blind index can never be opened again, once ``session`` commits.
    Returns how many key versions were deleted."""
    DATA_KEYS.forget(conversation_id)
    return repository.delete_keys(session, conversation_id)


def _seal(session: Session, keys: KeyRing, message: Any, plaintext: str) -> None:
    sealed = keys.seal(session, message.conversation_id, message.id, plaintext)
    repository.store_sealed(
        session, message.id, sealed.ciphertext, sealed.nonce, sealed.key_version, sealed.algorithm
    )


def _check_key_id(key_id: str | None, keys: KeyRing) -> None:
    if key_id is None:
        return
    arn = keys.kms_key_arn
    if key_id not in (arn, arn.rsplit("/", 1)[-1]):
        raise InvalidJob("data.key_id: not the KMS key this deployment encrypts with")
