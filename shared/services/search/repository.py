"""Every query of the search domain (PostgreSQL full-text search over ``message_search``): a constant number
of statements per job and per search, whatever the number of conversations or matches."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import REGCONFIG, insert
from sqlalchemy.orm import Session

from shared.db.models import (
    UUID_ARRAY,
    Conversation,
    ConversationParticipant,
    Message,
    MessageSearch,
    User,
)

if TYPE_CHECKING:
    from shared.services.search.engine import Cursor

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
    search_config, encryption_enabled, and ``terms``, how many operands the query has in its configuration
    (0: empty, or stop words only)."""
    terms = func.numnode(func.websearch_to_tsquery(Conversation.search_config, query))
    statement = (
        select(
            ConversationParticipant.conversation_id,
            cast(Conversation.search_config, Text).label("search_config"),
            Conversation.encryption_enabled,
            terms.label("terms"),
        )
        .join(Conversation, Conversation.id == ConversationParticipant.conversation_id)
        .join(User, User.id == ConversationParticipant.user_id)
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
    before: Cursor | None,
    limit: int,
) -> list[Any]:
    """Up to ``limit`` matches, newest first: the page is chosen on ``message_search`` alone (one OR branch
    per configuration, each a GIN-indexable ``document @@ websearch_to_tsquery(<config>, :query)``), then
    only its rows are joined to their messages for ``ts_headline``."""
    q = bindparam("query", query, type_=Text)
    branches = [
        and_(
            MessageSearch.conversation_id == any_(bindparam(f"conversations_{i}", ids, type_=UUID_ARRAY)),
            MessageSearch.document.op("@@")(func.websearch_to_tsquery(literal(config, REGCONFIG), q)),
        )
        for i, (config, ids) in enumerate(sorted(conversations_by_config.items()))
    ]
    page = (
        select(MessageSearch.message_id, MessageSearch.created_at)
        .join(Message, Message.id == MessageSearch.message_id)
        .where(or_(false(), *branches), Message.deleted_at.is_(None))
    )
    if before is not None:
        page = page.where(
            tuple_(MessageSearch.created_at, MessageSearch.message_id)
            < tuple_(before.created_at, before.message_id)
        )
    chosen = (
        page.order_by(MessageSearch.created_at.desc(), MessageSearch.message_id.desc())
        .limit(limit)
        .subquery()
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
            )
            .join(chosen, chosen.c.message_id == Message.id)
            .join(MessageSearch, MessageSearch.message_id == Message.id)
            .order_by(chosen.c.created_at.desc(), Message.id.desc())
        ).all()
    )


def _escaped(text: Any) -> Any:
    """``text`` with ``&``, ``<`` and ``>`` as HTML entities, so a snippet is safe to render as HTML with
    only the highlighting ``<mark>`` elements as markup."""
    return func.replace(
        func.replace(func.replace(func.coalesce(text, ""), "&", "&amp;"), "<", "&lt;"), ">", "&gt;"
    )
