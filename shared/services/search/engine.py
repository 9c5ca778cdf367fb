"""The search engine behind the ``indexing`` job and the ``search`` action: a small interface, so another
engine (OpenSearch) could replace PostgreSQL later, and its one implementation, PostgreSQL full-text search
(every query is in repository.py).

A plaintext conversation's messages are indexed as a stored ``tsvector`` (content weight A, the sender's
display name B, the conversation's title C) built with the conversation's text search configuration, under
a GIN index; queries are ``websearch_to_tsquery`` (quotes, ``or``, ``-``) in that configuration and
snippets come from ``ts_headline``. Results are newest first (``created_at``, then message id, which is
also the cursor's order); rank is not used. Messages of encrypted conversations are refused
(``encryption-not-available``) rather than indexed: their blind index is not built yet."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from sqlalchemy.orm import Session

from shared.errors import EncryptionNotAvailable, SearchRefused
from shared.services.search import repository

MAX_QUERY_CHARS = 256
MAX_LIMIT = 50
DEFAULT_LIMIT = 20

IndexOutcome = Literal["indexed", "removed", "missing"]


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: results strictly older than (created_at, message_id)."""

    created_at: datetime
    message_id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.message_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            created, message = raw.split("|")
            at = datetime.fromisoformat(created)
            if at.tzinfo is None:
                raise ValueError("naive")
            return cls(at, uuid.UUID(message))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise SearchRefused(
                "invalid-cursor", "before must be a next_before of a previous answer"
            ) from None


@dataclass(frozen=True)
class SearchRequest:
    user_id: uuid.UUID
    query: str
    conversation_id: uuid.UUID | None = None
    before: Cursor | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class SearchHit:
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    sender_id: uuid.UUID
    seq: int
    created_at: datetime
    snippet: str


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    next_before: Cursor | None


class SearchEngine(Protocol):
    """What the indexing job and the search action need from a search engine."""

    def index(self, session: Session, message_id: uuid.UUID) -> tuple[IndexOutcome, datetime | None]:
        """Index (or re-index) one message from its stored state; a deleted message is removed. Returns the
        outcome and the message's ``created_at`` (None when it does not exist)."""
        ...

    def remove(self, session: Session, message_id: uuid.UUID) -> bool:
        """Remove one message from the index; True if it was there."""
        ...

    def search(self, session: Session, request: SearchRequest) -> SearchPage:
        """One page of the messages matching ``request`` in the conversations where the user is an active
        participant. Raises :class:`SearchRefused`."""
        ...


class PostgresSearchEngine:
    """PostgreSQL full-text search over ``message_search`` (see the module's docstring)."""

    def index(self, session: Session, message_id: uuid.UUID) -> tuple[IndexOutcome, datetime | None]:
        state = repository.message_state(session, message_id)
        if state is None:  # nothing to remove either: index rows go with their message
            return "missing", None
        if state.deleted:
            repository.remove(session, message_id)
            return "removed", state.created_at
        if state.encrypted:
            # No plaintext lexemes of an encrypted conversation at rest; its blind index is not built yet.
            raise EncryptionNotAvailable(
                "messages of encrypted conversations are not indexed in this release"
            )
        repository.upsert_document(session, message_id)
        return "indexed", state.created_at

    def remove(self, session: Session, message_id: uuid.UUID) -> bool:
        return repository.remove(session, message_id)

    def search(self, session: Session, request: SearchRequest) -> SearchPage:
        scope = repository.search_scope(session, request.user_id, request.query, request.conversation_id)
        if request.conversation_id is not None and not scope:
            raise SearchRefused("forbidden", "you are not an active participant of that conversation")
        searchable = [row for row in scope if row.terms > 0]
        if scope and not searchable:
            raise SearchRefused("invalid-query", "the query has no searchable words (only stop words?)")
        if not searchable:
            return SearchPage([], None)
        by_config: dict[str, list[uuid.UUID]] = {}
        for row in searchable:
            by_config.setdefault(row.search_config, []).append(row.conversation_id)
        rows = repository.search_documents(
            session, request.query, by_config, request.before, request.limit + 1
        )
        hits = [
            SearchHit(
                row.message_id, row.conversation_id, row.sender_id, row.seq, row.created_at, row.snippet
            )
            for row in rows[: request.limit]
        ]
        more = len(rows) > request.limit
        last = hits[-1] if hits and more else None
        return SearchPage(hits, Cursor(last.created_at, last.message_id) if last else None)
