"""Every query of the encryption domain: the wrapped data keys (``encryption_keys``) and sealed messages."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import Conversation, EncryptionKey, Message


def claim_seal(session: Session, conversation_id: uuid.UUID, limit: int) -> Any:
    """Count one seal against the conversation's newest key version if it has sealed fewer than ``limit``
    messages; returns (key_version, wrapped_key, kms_key_id), or None (no version yet, or the newest is
    used up). The row lock it takes serializes the seals of one conversation until commit."""
    newest = (
        select(func.max(EncryptionKey.key_version))
        .where(EncryptionKey.conversation_id == conversation_id)
        .scalar_subquery()
    )
    return session.execute(
        update(EncryptionKey)
        .where(
            EncryptionKey.conversation_id == conversation_id,
            EncryptionKey.key_version == newest,
            EncryptionKey.messages_sealed < limit,
        )
        .values(messages_sealed=EncryptionKey.messages_sealed + 1)
        .returning(EncryptionKey.key_version, EncryptionKey.wrapped_key, EncryptionKey.kms_key_id)
    ).one_or_none()


def newest_version(session: Session, conversation_id: uuid.UUID) -> int | None:
    return session.execute(
        select(func.max(EncryptionKey.key_version)).where(EncryptionKey.conversation_id == conversation_id)
    ).scalar_one()


def insert_key(
    session: Session, conversation_id: uuid.UUID, key_version: int, wrapped_key: bytes, kms_key_id: str
) -> bool:
    """Store a new key version; False if another transaction made that version first."""
    inserted = session.execute(
        insert(EncryptionKey)
        .values(
            conversation_id=conversation_id,
            key_version=key_version,
            wrapped_key=wrapped_key,
            kms_key_id=kms_key_id,
        )
        .on_conflict_do_nothing()
        .returning(EncryptionKey.key_version)
    ).first()
    return inserted is not None


def wrapped_key(session: Session, conversation_id: uuid.UUID, key_version: int) -> Any:
    """(wrapped_key, kms_key_id) of one version, or None."""
    return session.execute(
        select(EncryptionKey.wrapped_key, EncryptionKey.kms_key_id).where(
            EncryptionKey.conversation_id == conversation_id, EncryptionKey.key_version == key_version
        )
    ).one_or_none()


def first_key(session: Session, conversation_id: uuid.UUID) -> Any:
    """(key_version, wrapped_key, kms_key_id) of the conversation's oldest stored version (the one its
    blind index key derives from, see keys.py), or None: no version yet, or shredded."""
    return session.execute(
        select(EncryptionKey.key_version, EncryptionKey.wrapped_key, EncryptionKey.kms_key_id)
        .where(EncryptionKey.conversation_id == conversation_id)
        .order_by(EncryptionKey.key_version)
        .limit(1)
    ).one_or_none()


def retire_unused(session: Session, conversation_id: uuid.UUID) -> int:
    """Mark retired every version but the newest that no sealed message of the conversation uses."""
    newest = newest_version(session, conversation_id)
    if newest is None:
        return 0
    in_use = exists().where(
        Message.conversation_id == conversation_id,
        Message.encryption_key_version == EncryptionKey.key_version,
        Message.content_ciphertext.is_not(None),
    )
    retired = session.execute(
        update(EncryptionKey)
        .where(
            EncryptionKey.conversation_id == conversation_id,
            EncryptionKey.key_version < newest,
            EncryptionKey.retired_at.is_(None),
            ~in_use,
        )
        .values(retired_at=func.now())
        .returning(EncryptionKey.key_version)
    ).all()
    return len(retired)


def delete_keys(session: Session, conversation_id: uuid.UUID) -> int:
    return len(
        session.execute(
            delete(EncryptionKey)
            .where(EncryptionKey.conversation_id == conversation_id)
            .returning(EncryptionKey.key_version)
        ).all()
    )


# What sealing and opening read of a message.
_SEALED_COLUMNS = (
    Message.id,
    Message.conversation_id,
    Message.content,
    Message.content_ciphertext,
    Message.content_nonce,
    Message.encryption_key_version,
    Message.encryption_algorithm,
)


def lock_message(session: Session, message_id: uuid.UUID) -> Any:
    """The message (sealed columns, content) and its conversation's ``encryption_enabled`` and deletion,
    locked against a concurrent job on it; None if it does not exist."""
    return session.execute(
        select(
            *_SEALED_COLUMNS,
            Conversation.encryption_enabled,
            (Message.deleted_at.is_not(None) | Conversation.deleted_at.is_not(None)).label("deleted"),
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.id == message_id)
        .with_for_update(of=Message)
    ).one_or_none()


def sealed_message(session: Session, message_id: uuid.UUID) -> Any:
    """(id, conversation_id, content, content_ciphertext, content_nonce, encryption_key_version,
    encryption_algorithm) of one message, or None."""
    return session.execute(select(*_SEALED_COLUMNS).where(Message.id == message_id)).one_or_none()


def store_sealed(
    session: Session, message_id: uuid.UUID, ciphertext: bytes, nonce: bytes, key_version: int, algorithm: str
) -> None:
    """Sealed content in, plaintext out, in one statement."""
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(
            content=None,
            content_ciphertext=ciphertext,
            content_nonce=nonce,
            encryption_key_version=key_version,
            encryption_algorithm=algorithm,
        )
    )


def store_plaintext(session: Session, message_id: uuid.UUID, content: str) -> None:
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(
            content=content,
            content_ciphertext=None,
            content_nonce=None,
            encryption_key_version=None,
            encryption_algorithm=None,
        )
    )
