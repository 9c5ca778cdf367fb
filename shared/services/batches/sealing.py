"""The batch's content sealed at rest, so that its failed recipients can be retried without the producer.

Envelope encryption, as for messages (shared/services/crypto/keys.py) but keyed per batch, not per
conversation: one KMS ``GenerateDataKey`` (``AES_256``, encryption context ``{"batch_id"}``) when the batch
is created, its wrapped form stored beside the AES-256-GCM ciphertext (random 96-bit nonce, associated data
binding the batch id), so a ciphertext copied to another batch, or a wrapped key unwrapped under another
batch's context, does not open. Opening calls KMS ``Decrypt`` with the same context. Neither plaintext nor
key material is ever logged or put in an exception message."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ConfigurationError, EncryptionKeyUnavailable, SealedContentRefused
from shared.services.crypto.keys import NONCE_BYTES, generate_data_key, unwrap_data_key

if TYPE_CHECKING:
    from shared.aws import AwsClients
    from shared.config import Settings

_AAD_PREFIX = b"switchboard/batch-content/v1"


@dataclass(frozen=True)
class SealedContent:
    ciphertext: bytes = field(repr=False)
    nonce: bytes
    wrapped_key: bytes = field(repr=False)
    kms_key_id: str


def _context(batch_id: uuid.UUID) -> dict[str, str]:
    return {"batch_id": str(batch_id)}


def _aad(batch_id: uuid.UUID) -> bytes:
    return b"|".join((_AAD_PREFIX, str(batch_id).encode()))


def seal_content(aws: AwsClients, settings: Settings, batch_id: uuid.UUID, content: str) -> SealedContent:
    """``content`` sealed under a new data key of the deployment's KMS key (ENCRYPTION_KEY_ARN)."""
    kms_key = settings.encryption_key_arn
    if not kms_key:
        raise ConfigurationError("ENCRYPTION_KEY_ARN is not set: batch content cannot be sealed")
    key, wrapped = generate_data_key(aws, kms_key, _context(batch_id))
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, content.encode("utf-8"), _aad(batch_id))
    return SealedContent(ciphertext, nonce, wrapped, kms_key)


def open_content(aws: AwsClients, batch: Any) -> str:
    """The plaintext of a batch row's sealed content (``id``, ``content_ciphertext``, ``content_nonce``,
    ``content_wrapped_key``, ``content_kms_key_id``). Fails closed: missing (cleared) content or a key KMS
    refuses raises :class:`EncryptionKeyUnavailable`, anything altered :class:`SealedContentRefused`."""
    where = f"batch {batch.id}"
    if batch.content_ciphertext is None or batch.content_wrapped_key is None or batch.content_nonce is None:
        raise EncryptionKeyUnavailable(f"{where}: its content is no longer kept")
    what = f"the content key of {where}"
    key = unwrap_data_key(aws, batch.content_wrapped_key, batch.content_kms_key_id, _context(batch.id), what)
    try:
        plaintext = AESGCM(key).decrypt(
            bytes(batch.content_nonce), bytes(batch.content_ciphertext), _aad(batch.id)
        )
        return plaintext.decode("utf-8")
    except (InvalidTag, ValueError, UnicodeDecodeError):
        raise SealedContentRefused(f"{where}: sealed content failed authentication") from None
