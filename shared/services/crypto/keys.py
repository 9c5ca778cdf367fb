"""Envelope encryption of message content.

Each conversation has numbered data key versions. A version is a 256-bit key from KMS ``GenerateDataKey``
(``AES_256``) with the encryption context ``{"conversation_id", "key_version"}``; only its wrapped form is
stored (``encryption_keys``). Content is sealed with AES-256-GCM under the conversation's newest version: a
random 96-bit nonce per message, and associated data binding the message id, the conversation id and the key
version, so a ciphertext moved to another message, another conversation or another version does not open. A
version seals at most ENCRYPTION_MAX_MESSAGES_PER_KEY messages (2**30 by default, far under the 2**32 bound of
random nonces); the seal after that makes the next version.

Plaintext data keys are cached per container (:data:`DATA_KEYS`), for at most ENCRYPTION_KEY_CACHE_SECONDS
and at most ENCRYPTION_KEY_CACHE_SIZE of them: one KMS call per conversation and TTL, not per message. Key
material never appears in a log, a repr or an exception message.

KMS is called inside the job's transaction (the data key is needed to write the sealed row); a KMS failure
other than a refused unwrap is transient, so the job is retried with nothing committed.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.orm import Session

from shared.errors import ConfigurationError, EncryptionKeyUnavailable, SealedContentRefused
from shared.services.crypto import repository

if TYPE_CHECKING:
    from shared.aws import AwsClients
    from shared.bootstrap import Dependencies
    from shared.config import Settings

ALGORITHM = "aes-256-gcm"
NONCE_BYTES = 12
_AAD_PREFIX = b"switchboard/message/v1"
INDEX_KEY_INFO = b"switchboard/blind-index/v1"
# KMS errors that say the wrapped key itself will never unwrap (not a passing failure).
_REFUSED_UNWRAP = {"InvalidCiphertextException", "IncorrectKeyException", "NotFoundException"}


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes
    nonce: bytes
    key_version: int
    algorithm: str = ALGORITHM


@dataclass(frozen=True)
class _DataKey:
    key: bytes = field(repr=False)
    expires: float


class DataKeyCache:
    """Plaintext data keys of this container: (conversation, version, wrapped key) -> key, with a TTL and a
    size bound given on each call (the settings of the invocation). Thread-safe."""

    def __init__(self) -> None:
        self._keys: OrderedDict[tuple[uuid.UUID, int, bytes], _DataKey] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DataKeyCache({len(self._keys)} keys)"

    def get(self, ident: tuple[uuid.UUID, int, bytes]) -> bytes | None:
        with self._lock:
            entry = self._keys.get(ident)
            if entry is None:
                return None
            if entry.expires <= time.monotonic():
                del self._keys[ident]
                return None
            self._keys.move_to_end(ident)
            return entry.key

    def put(self, ident: tuple[uuid.UUID, int, bytes], key: bytes, ttl: float, size: int) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._keys[ident] = _DataKey(key, time.monotonic() + ttl)
            self._keys.move_to_end(ident)
            while len(self._keys) > size:
                self._keys.popitem(last=False)

    def forget(self, conversation_id: uuid.UUID) -> None:
        with self._lock:
            for ident in [i for i in self._keys if i[0] == conversation_id]:
                del self._keys[ident]

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)


DATA_KEYS = DataKeyCache()


def associated_data(message_id: uuid.UUID, conversation_id: uuid.UUID, key_version: int) -> bytes:
    return b"|".join(
        (_AAD_PREFIX, str(message_id).encode(), str(conversation_id).encode(), str(key_version).encode())
    )


@dataclass(frozen=True)
class KeyRing:
    """Seals and opens message content with the conversation's data keys. Built per invocation from the
    function's dependencies (:meth:`of`); it creates no client until KMS is first needed."""

    aws: AwsClients
    settings: Settings
    cache: DataKeyCache = DATA_KEYS

    @classmethod
    def of(cls, deps: Dependencies) -> KeyRing:
        return cls(deps.aws, deps.settings)

    @property
    def kms_key_arn(self) -> str:
        arn = self.settings.encryption_key_arn
        if not arn:
            raise ConfigurationError("ENCRYPTION_KEY_ARN is not set")
        return arn

    # --- sealing ---------------------------------------------------------------------------------------

    def seal(
        self, session: Session, conversation_id: uuid.UUID, message_id: uuid.UUID, plaintext: str
    ) -> Sealed:
        """``plaintext`` sealed under the conversation's newest key version (made, or the next one made,
        as needed); one seal is counted against that version in ``session``."""
        limit = self.settings.encryption_max_messages_per_key
        for _ in range(3):
            claimed = repository.claim_seal(session, conversation_id, limit)
            if claimed is not None:
                version = claimed.key_version
                key = self._unwrap(conversation_id, version, claimed.wrapped_key, claimed.kms_key_id)
                return self._seal_with(key, conversation_id, message_id, version, plaintext)
            newest = repository.newest_version(session, conversation_id) or 0
            self._new_version(session, conversation_id, newest + 1)
        raise RuntimeError("could not claim a key version after creating one")  # pragma: no cover

    def new_version(self, session: Session, conversation_id: uuid.UUID) -> int:
        """Make the conversation's next key version (later seals use it); returns its number."""
        version = (repository.newest_version(session, conversation_id) or 0) + 1
        self._new_version(session, conversation_id, version)
        return version

    def _new_version(self, session: Session, conversation_id: uuid.UUID, version: int) -> None:
        kms_key = self.kms_key_arn
        key, wrapped = generate_data_key(self.aws, kms_key, _context(conversation_id, version))
        if repository.insert_key(session, conversation_id, version, wrapped, kms_key):
            self.cache.put(
                (conversation_id, version, wrapped),
                key,
                self.settings.encryption_key_cache_seconds,
                self.settings.encryption_key_cache_size,
            )

    @staticmethod
    def _seal_with(
        key: bytes, conversation_id: uuid.UUID, message_id: uuid.UUID, version: int, plaintext: str
    ) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        aad = associated_data(message_id, conversation_id, version)
        return Sealed(AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), aad), nonce, version)

    # --- opening ---------------------------------------------------------------------------------------

    def open(self, session: Session, message: Any) -> str:
        """The plaintext of a sealed message row (``id``, ``conversation_id``, ``content_ciphertext``,
        ``content_nonce``, ``encryption_key_version``, ``encryption_algorithm``). Fails closed: anything
        altered raises :class:`SealedContentRefused`, a missing key :class:`EncryptionKeyUnavailable`."""
        version = message.encryption_key_version
        stored = (
            None if version is None else repository.wrapped_key(session, message.conversation_id, version)
        )
        return self.open_with(message, stored)

    def open_with(self, message: Any, stored: Any) -> str:
        """:meth:`open` with the message's stored key version (``wrapped_key``, ``kms_key_id``; None when it
        does not exist) already read, e.g. joined into the query that read the message."""
        version = message.encryption_key_version
        where = f"message {message.id} (key version {version})"
        if message.encryption_algorithm != ALGORITHM:
            raise SealedContentRefused(f"{where}: unknown algorithm tag")
        if not message.content_ciphertext or message.content_nonce is None or version is None:
            raise SealedContentRefused(f"{where}: sealed columns incomplete")
        if len(message.content_nonce) != NONCE_BYTES:
            raise SealedContentRefused(f"{where}: nonce is not {NONCE_BYTES} bytes")
        if stored is None:
            raise EncryptionKeyUnavailable(f"{where}: no such key version (shredded or never made)")
        key = self._unwrap(message.conversation_id, version, stored.wrapped_key, stored.kms_key_id)
        aad = associated_data(message.id, message.conversation_id, version)
        try:
            nonce, ciphertext = bytes(message.content_nonce), bytes(message.content_ciphertext)
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise SealedContentRefused(
                f"{where}: authentication failed (ciphertext, nonce or key version altered, or content "
                "copied from another message)"
            ) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:  # authenticated but not what a seal writes: refuse it all the same
            raise SealedContentRefused(f"{where}: sealed content is not text") from None

    # --- blind index ------------------------------------------------------------------------------------

    def index_key(
        self, conversation_id: uuid.UUID, key_version: int, wrapped_key: bytes, kms_key_id: str
    ) -> IndexKey:
        """The blind index key of a conversation from its stored key ``key_version`` (the oldest one, see
        :func:`derive_index_key`), unwrapped through the same cache as sealing: no KMS call when cached."""
        key = self._unwrap(conversation_id, key_version, wrapped_key, kms_key_id)
        return IndexKey(key_version, derive_index_key(key, conversation_id))

    def index_key_of(self, session: Session, conversation_id: uuid.UUID, *, create: bool) -> IndexKey | None:
        """The conversation's blind index key; None when it has no key version (shredded, or never made and
        ``create`` is false). With ``create``, a conversation without any version gets its first one."""
        stored = repository.first_key(session, conversation_id)
        if stored is None and create:
            self.new_version(session, conversation_id)
            stored = repository.first_key(session, conversation_id)
        if stored is None:
            return None
        return self.index_key(conversation_id, stored.key_version, stored.wrapped_key, stored.kms_key_id)

    def _unwrap(self, conversation_id: uuid.UUID, version: int, wrapped: bytes, kms_key_id: str) -> bytes:
        ident = (conversation_id, version, bytes(wrapped))
        cached = self.cache.get(ident)
        if cached is not None:
            return cached
        key = unwrap_data_key(
            self.aws,
            wrapped,
            kms_key_id,
            _context(conversation_id, version),
            f"key version {version} of conversation {conversation_id}",
        )
        self.cache.put(
            ident, key, self.settings.encryption_key_cache_seconds, self.settings.encryption_key_cache_size
        )
        return key


def generate_data_key(aws: AwsClients, kms_key_id: str, context: dict[str, str]) -> tuple[bytes, bytes]:
    """A new 256-bit data key from KMS under ``context``: (plaintext, wrapped)."""
    response = aws.kms().generate_data_key(KeyId=kms_key_id, KeySpec="AES_256", EncryptionContext=context)
    return bytes(response["Plaintext"]), bytes(response["CiphertextBlob"])


def unwrap_data_key(
    aws: AwsClients, wrapped: bytes, kms_key_id: str, context: dict[str, str], what: str
) -> bytes:
    """The plaintext of a wrapped data key. A key KMS will never unwrap (another context, a deleted or
    wrong key) raises :class:`EncryptionKeyUnavailable` naming ``what``; other KMS errors are transient and
    propagate."""
    try:
        response = aws.kms().decrypt(
            CiphertextBlob=bytes(wrapped), KeyId=kms_key_id, EncryptionContext=context
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _REFUSED_UNWRAP:
            raise EncryptionKeyUnavailable(f"KMS refused to unwrap {what} ({code})") from None
        raise
    return bytes(response["Plaintext"])


def _context(conversation_id: uuid.UUID, version: int) -> dict[str, str]:
    return {"conversation_id": str(conversation_id), "key_version": str(version)}


@dataclass(frozen=True)
class IndexKey:
    """A conversation's blind index key and the data key version it derives from."""

    key_version: int
    key: bytes = field(repr=False)


def derive_index_key(data_key: bytes, conversation_id: uuid.UUID) -> bytes:
    """HKDF-SHA256 of a data key into a 256-bit HMAC key for the blind index (never the data key itself, so
    the index and the seals use unrelated keys). Derived from the conversation's oldest stored version, not
    its newest: rotation makes new versions and re-seals content, and an index key that followed it would
    make every stored token incomparable with a new query until the conversation was re-indexed. The cost:
    the index key does not rotate (re-keying the index is re-indexing the conversation after its old
    versions are shredded). Shredding deletes every version, so the index can no longer be queried."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=INDEX_KEY_INFO + b"|" + str(conversation_id).encode(),
    ).derive(data_key)
