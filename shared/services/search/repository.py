"""Every query of the search domain (``message_search``: a stored tsvector per plaintext message, blind
tokens per encrypted one): a constant number of statements per job and per search, whatever the number of
conversations or matches."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal,
    literal_column,
    not_,
    select,
    true,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, REGCONFIG, insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import Grouping

from shared.db.models import (
    UUID_ARRAY,
    Conversation,
    ConversationParticipant,
    EncryptionKey,
    Message,
    MessageSearch,
    User,
)
from shared.services.search.blind import BlindBranch

if TYPE_CHECKING:
    from shared.services.search.engine import Cursor

BIGINT_ARRAY = ARRAY(BigInteger)
INTEGER_ARRAY = ARRAY(Integer)

# ts_headline's options: matches wrapped in <mark>...</mark> around an HTML-escaped text (see _escaped).
HEADLINE_OPTIONS = "StartSel=<mark>, StopSel=</mark>, MaxWords=24, MinWords=8, MaxFragments=2"


def message_state(session: Session, message_id: uuid.UUID) -> Any:
    """(created_at, deleted, encrypted) of a message: deleted when it or its conversation is; encrypted when
    its conversation has encryption enabled or its content is sealed. None if it does not exist."""
    return session.execute(
        select(
            Message.created_at,
            (Message.deleted_at.is_not(None) | Conversation.deleted_at.is_not(None)).label("deleted"),
            (Conversation.encryption_enabled | Message.content_ciphertext.is_not(None)).label("encrypted"),
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.id == message_id)
    ).one_or_none()


def _document(config: Any, content: Any, sender: Any, title: Any) -> Any:
    def weighted(text: Any, weight: str) -> Any:
        # setweight takes a "char": a literal, since a bound string parameter would be text.
        return func.setweight(
            func.to_tsvector(config, func.coalesce(text, "")), literal_column(f"'{weight}'")
        )

    return weighted(content, "A").op("||")(weighted(sender, "B")).op("||")(weighted(title, "C"))


def upsert_document(session: Session, message_id: uuid.UUID) -> None:
    """Index a plaintext message (one ``INSERT … SELECT … ON CONFLICT DO UPDATE``) from its content, its
    sender's display name and its conversation's title, in the conversation's configuration."""
    source = (
        select(
            Message.id,
            Message.conversation_id,
            Message.created_at,
            Conversation.search_config,
            _document(Conversation.search_config, Message.content, User.display_name, Conversation.title),
            func.now(),
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .outerjoin(User, User.id == Message.sender_id)
        .where(Message.id == message_id)
    )
    upsert = insert(MessageSearch).from_select(
        ["message_id", "conversation_id", "created_at", "search_config", "document", "indexed_at"], source
    )
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=[MessageSearch.message_id],
            set_={
                "conversation_id": upsert.excluded.conversation_id,
                "created_at": upsert.excluded.created_at,
                "search_config": upsert.excluded.search_config,
                "document": upsert.excluded.document,
                "blind_tokens": None,
                "key_version": None,
                "indexed_at": upsert.excluded.indexed_at,
            },
        )
    )


def blind_source(session: Session, message_id: uuid.UUID) -> Any:
    """What a blind index entry is computed from: the message's sealed columns (``id``, ``conversation_id``,
    ``content``, ``content_ciphertext``, ``content_nonce``, ``encryption_key_version``,
    ``encryption_algorithm``), ``created_at``, the sender's ``display_name`` and the conversation's
    ``title``. None if it does not exist."""
    return session.execute(
        select(
            Message.id,
            Message.conversation_id,
            Message.created_at,
            Message.content,
            Message.content_ciphertext,
            Message.content_nonce,
            Message.encryption_key_version,
            Message.encryption_algorithm,
            User.display_name,
            Conversation.title,
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .outerjoin(User, User.id == Message.sender_id)
        .where(Message.id == message_id)
    ).one_or_none()


def upsert_blind(
    session: Session,
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    created_at: Any,
    tokens: list[int],
    key_version: int,
) -> None:
    """Index an encrypted message by its blind tokens only: no tsvector, no configuration, no text."""
    values = {
        "conversation_id": conversation_id,
        "created_at": created_at,
        "search_config": None,
        "document": None,
        "blind_tokens": tokens,
        "key_version": key_version,
        "indexed_at": func.now(),
    }
    upsert = insert(MessageSearch).values(message_id=message_id, **values)
    session.execute(upsert.on_conflict_do_update(index_elements=[MessageSearch.message_id], set_=values))


def remove(session: Session, message_id: uuid.UUID) -> bool:
    removed = session.execute(
        delete(MessageSearch)
        .where(MessageSearch.message_id == message_id)
        .returning(MessageSearch.message_id)
    ).first()
    return removed is not None


def search_scope(
    session: Session, user_id: uuid.UUID, query: str, conversation_id: uuid.UUID | None
) -> list[Any]:
    """The conversations a search covers: those where the user is an active participant (and not deleted),
    or only ``conversation_id`` if given (empty when the user is not in it). Each row: conversation_id,
    search_config, encryption_enabled, ``terms``, how many operands the query has in its configuration
    (0: empty, or stop words only), and for a conversation with encryption enabled its oldest stored key
    version (``key_version``, ``wrapped_key``, ``kms_key_id``; null when it has none: shredded, or no
    message sealed yet), which its blind index key derives from."""
    terms = func.numnode(func.websearch_to_tsquery(Conversation.search_config, query))
    first_key = (
        select(EncryptionKey.key_version, EncryptionKey.wrapped_key, EncryptionKey.kms_key_id)
        .where(
            EncryptionKey.conversation_id == ConversationParticipant.conversation_id,
            Conversation.encryption_enabled,
        )
        .order_by(EncryptionKey.key_version)
        .limit(1)
        .lateral("first_key")
    )
    statement = (
        select(
            ConversationParticipant.conversation_id,
            cast(Conversation.search_config, Text).label("search_config"),
            Conversation.encryption_enabled,
            terms.label("terms"),
            first_key.c.key_version,
            first_key.c.wrapped_key,
            first_key.c.kms_key_id,
        )
        .join(Conversation, Conversation.id == ConversationParticipant.conversation_id)
        .join(User, User.id == ConversationParticipant.user_id)
        .outerjoin(first_key, true())
        .where(
            ConversationParticipant.user_id == user_id,
            ConversationParticipant.left_at.is_(None),
            User.deleted_at.is_(None),
            Conversation.deleted_at.is_(None),
        )
    )
    if conversation_id is not None:
        statement = statement.where(ConversationParticipant.conversation_id == conversation_id)
    return list(session.execute(statement).all())


def search_documents(
    session: Session,
    query: str,
    conversations_by_config: dict[str, list[uuid.UUID]],
    blind: list[BlindBranch],
    before: Cursor | None,
    limit: int,
) -> list[Any]:
    """Up to ``limit`` matches, newest first. The page is chosen per conversation, then merged: each
    conversation's newest ``limit`` matches (an index scan of its ``(conversation_id, created_at,
    message_id)`` rows newest first, or its GIN matches, as the planner finds cheaper), so a common word costs
    about ``limit`` rows per conversation rather than every match in the database (a single
    ``conversation_id = ANY(...) AND document @@ ...`` made PostgreSQL intersect the word's whole GIN posting
    list with the conversations: bench/bench_search.py). Plaintext conversations are one ``LATERAL`` over
    ``unnest(:ids)`` per configuration, with ``document @@ websearch_to_tsquery(<config>, :query)``; the
    encrypted ones are one more ``LATERAL`` (:func:`_blind_part`), ``conversation_id = c AND key_version = v
    AND blind_tokens @> <c's hashes>`` (GIN-indexable; a hash is only ever in its own conversation's rows)
    and ``NOT blind_tokens @> <c's hashes of excluded group i>``. Only the page's rows are then joined to
    their messages for the snippet. Each row:
    message_id, conversation_id, sender_id, seq, created_at, ``snippet`` (``ts_headline`` of a plaintext row;
    null for a blind one), ``blind``, and the sealed columns a blind row's snippet is decrypted from (``id``,
    ``content``, ``content_ciphertext``, ``content_nonce``, ``encryption_key_version``,
    ``encryption_algorithm``) with its key version's ``wrapped_key`` and ``kms_key_id`` (null: shredded)."""
    q = bindparam("query", query, type_=Text)
    order = (MessageSearch.created_at.desc(), MessageSearch.message_id.desc())

    def newest(*conditions: Any) -> Any:
        part = (
            select(MessageSearch.message_id, MessageSearch.created_at)
            .join(Message, Message.id == MessageSearch.message_id)
            .where(*conditions, Message.deleted_at.is_(None))
        )
        if before is not None:
            part = part.where(
                tuple_(MessageSearch.created_at, MessageSearch.message_id)
                < tuple_(before.created_at, before.message_id)
            )
        return part.order_by(*order).limit(limit)

    parts = []
    for i, (configuration, ids) in enumerate(sorted(conversations_by_config.items())):
        conversation = (
            func.unnest(bindparam(f"conversations_{i}", ids, type_=UUID_ARRAY))
            .table_valued("id")
            .render_derived(name=f"conversations_{i}")
        )
        matches = newest(
            MessageSearch.conversation_id == conversation.c.id,
            MessageSearch.document.op("@@")(func.websearch_to_tsquery(literal(configuration, REGCONFIG), q)),
        ).lateral(f"plain_{i}")
        parts.append(
            select(matches.c.message_id, matches.c.created_at).select_from(conversation).join(matches, true())
        )
    if blind:
        parts.append(_blind_part(blind, newest))
    candidates = (
        union_all(*parts).subquery("candidates") if len(parts) > 1 else parts[0].subquery("candidates")
    )
    chosen = (
        select(candidates.c.message_id, candidates.c.created_at)
        .order_by(candidates.c.created_at.desc(), candidates.c.message_id.desc())
        .limit(limit)
        .subquery("chosen")
    )
    config = MessageSearch.search_config
    snippet = func.ts_headline(
        config, _escaped(Message.content), func.websearch_to_tsquery(config, q), HEADLINE_OPTIONS
    )
    return list(
        session.execute(
            select(
                Message.id.label("message_id"),
                Message.conversation_id,
                Message.sender_id,
                Message.seq,
                chosen.c.created_at,
                snippet.label("snippet"),
                MessageSearch.blind_tokens.is_not(None).label("blind"),
                Message.id,
                Message.content,
                Message.content_ciphertext,
                Message.content_nonce,
                Message.encryption_key_version,
                Message.encryption_algorithm,
                EncryptionKey.wrapped_key,
                EncryptionKey.kms_key_id,
            )
            .join(chosen, chosen.c.message_id == Message.id)
            .join(MessageSearch, MessageSearch.message_id == Message.id)
            .outerjoin(
                EncryptionKey,
                and_(
                    EncryptionKey.conversation_id == Message.conversation_id,
                    EncryptionKey.key_version == Message.encryption_key_version,
                ),
            )
            .order_by(chosen.c.created_at.desc(), Message.id.desc())
        ).all()
    )


def _blind_part(blind: list[BlindBranch], newest: Any) -> Any:
    """The encrypted conversations' part of the page: one ``LATERAL`` over ``unnest(:conversations,
    :versions) WITH ORDINALITY``, each conversation's hashes sliced out of flat arrays (every conversation has
    as many hashes as the query has tokens), so the statement's size does not grow with the number of
    encrypted conversations (pg8000 rewrites every statement's parameter markers in Python, at about 1 us per
    character: one subquery per conversation cost 8 ms at 10 conversations)."""
    conversation = (
        func.unnest(
            bindparam("blind_conversations", [b.conversation_id for b in blind], type_=UUID_ARRAY),
            bindparam("blind_versions", [b.key_version for b in blind], type_=INTEGER_ARRAY),
        )
        .table_valued("id", "version", with_ordinality="n")
        .render_derived(name="blind_conversations")
    )

    def own(name: str, groups: list[list[int]]) -> Any:
        """This conversation's slice of ``groups`` (one equal-length list per conversation), flattened."""
        width = len(groups[0])
        flat = bindparam(name, [h for group in groups for h in group], BIGINT_ARRAY)
        return type_coerce(Grouping(flat), BIGINT_ARRAY)[
            (conversation.c.n - 1) * width + 1 : conversation.c.n * width
        ]

    excluded = [
        not_(MessageSearch.blind_tokens.contains(own(f"blind_excluded_{j}", [b.excluded[j] for b in blind])))
        for j in range(len(blind[0].excluded))
    ]
    matches = newest(
        MessageSearch.conversation_id == conversation.c.id,
        MessageSearch.key_version == conversation.c.version,
        MessageSearch.blind_tokens.contains(own("blind_required", [b.required for b in blind])),
        *excluded,
    ).lateral("blind")
    return select(matches.c.message_id, matches.c.created_at).select_from(conversation).join(matches, true())


def _escaped(text: Any) -> Any:
    """``text`` with ``&``, ``<`` and ``>`` as HTML entities, so a snippet is safe to render as HTML with
    only the highlighting ``<mark>`` elements as markup."""
    return func.replace(
        func.replace(func.replace(func.coalesce(text, ""), "&", "&amp;"), "<", "&lt;"), ">", "&gt;"
    )
