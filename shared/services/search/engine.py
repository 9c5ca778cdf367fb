"""The search engine behind the ``indexing`` job and the ``search`` action: a small interface, so another
engine (OpenSearch) could replace PostgreSQL later, and its one implementation over ``message_search``
(every query is in repository.py).

A plaintext conversation's messages are indexed as a stored ``tsvector`` (content weight A, the sender's
display name B, the conversation's title C) built with the conversation's text search configuration, under
a GIN index; queries are ``websearch_to_tsquery`` (quotes, ``or``, ``-``) in that configuration and
snippets come from ``ts_headline``.

An encrypted conversation's messages (encryption enabled, or content sealed) get no lexemes and no text at
rest: the indexing job decrypts the message in memory and stores only its blind tokens (blind.py: keyed
hashes of whole normalised tokens, under the conversation's index key, crypto/keys.py). Searching one hashes
the query's tokens with that conversation's key and matches whole tokens; the snippet is made from the
content decrypted in memory. The trade-off: no stemming, no prefix or phrase adjacency, no ranking, no
``or``, and the index shows which messages of a conversation share a token. Crypto-shredding deletes the
keys the index key derives from: the conversation's rows can no longer be queried (a search finds nothing)
and indexing one of its sealed messages fails permanently (``EncryptionKeyUnavailable``).

Results are newest first (``created_at``, then message id, which is also the cursor's order); rank is not
used. A search across all the user's conversations adds, per encrypted conversation with a key, one
subquery of the page statement, one key unwrap (cached; a KMS ``Decrypt`` per conversation on a cold
container: tens of ms each on AWS) and a few HMACs, plus an AES-GCM open per encrypted hit for its snippet;
it covers at most :data:`MAX_ENCRYPTED_CONVERSATIONS` of them and is refused beyond (``invalid-query``:
search one conversation with ``conversation_id``)."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy.orm import Session

from shared.errors import EncryptionKeyUnavailable, SealedContentRefused, SearchRefused
from shared.observability import logger
from shared.services.search import blind, repository

if TYPE_CHECKING:
    from shared.services.crypto.keys import KeyRing

MAX_QUERY_CHARS = 256
MAX_LIMIT = 50
DEFAULT_LIMIT = 20
# Encrypted conversations one search may cover: each costs a subquery, a key unwrap (a KMS call when not
# cached) and a decrypted snippet per hit.
MAX_ENCRYPTED_CONVERSATIONS = 100

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
    """PostgreSQL full-text search and blind index over ``message_search`` (see the module's docstring).
    ``keys`` opens encrypted conversations; without it (a caller with no KMS access) indexing one of their
    messages raises :class:`EncryptionKeyUnavailable` and searches skip them."""

    def __init__(self, keys: KeyRing | None = None) -> None:
        self.keys = keys

    def index(self, session: Session, message_id: uuid.UUID) -> tuple[IndexOutcome, datetime | None]:
        state = repository.message_state(session, message_id)
        if state is None:  # nothing to remove either: index rows go with their message
            return "missing", None
        if state.deleted:
            repository.remove(session, message_id)
            return "removed", state.created_at
        if state.encrypted:
            self._index_blind(session, message_id)
        else:
            repository.upsert_document(session, message_id)
        return "indexed", state.created_at

    def _index_blind(self, session: Session, message_id: uuid.UUID) -> None:
        """Blind tokens of the message's content (decrypted in memory), sender name and title. A message not
        sealed yet (its conversation just turned encryption on) is hashed from its plaintext, under a first
        key version made if the conversation has none."""
        if self.keys is None:
            raise EncryptionKeyUnavailable("this engine has no key ring: encrypted messages are not indexed")
        source = repository.blind_source(session, message_id)
        sealed = source.content_ciphertext is not None
        key = self.keys.index_key_of(session, source.conversation_id, create=not sealed)
        if key is None:
            raise EncryptionKeyUnavailable(
                f"message {message_id}: its conversation has no key (shredded): it cannot be indexed"
            )
        content = self.keys.open(session, source) if sealed else source.content
        tokens = blind.blind_tokens(key.key, content, source.display_name, source.title)
        repository.upsert_blind(
            session, message_id, source.conversation_id, source.created_at, tokens, key.key_version
        )

    def remove(self, session: Session, message_id: uuid.UUID) -> bool:
        return repository.remove(session, message_id)

    def search(self, session: Session, request: SearchRequest) -> SearchPage:
        scope = repository.search_scope(session, request.user_id, request.query, request.conversation_id)
        if request.conversation_id is not None and not scope:
            raise SearchRefused("forbidden", "you are not an active participant of that conversation")
        plain = [row for row in scope if not row.encryption_enabled]
        encrypted = [row for row in scope if row.encryption_enabled]
        query = blind.parse_query(request.query) if encrypted else None
        if len(encrypted) > MAX_ENCRYPTED_CONVERSATIONS:
            raise SearchRefused(
                "invalid-query",
                f"the search covers more than {MAX_ENCRYPTED_CONVERSATIONS} encrypted conversations: search "
                "them one at a time with conversation_id",
            )
        searchable = [row for row in plain if row.terms > 0]
        blind_searchable = query is not None and bool(query.required)
        if scope and not searchable and not blind_searchable:
            raise SearchRefused("invalid-query", "the query has no searchable words (only stop words?)")
        by_config: dict[str, list[uuid.UUID]] = {}
        for row in searchable:
            by_config.setdefault(row.search_config, []).append(row.conversation_id)
        branches = self._blind_branches(encrypted, query) if blind_searchable and query else []
        if not by_config and not branches:
            return SearchPage([], None)
        rows = repository.search_documents(
            session, request.query, by_config, branches, request.before, request.limit + 1
        )
        hits = [
            SearchHit(
                row.message_id,
                row.conversation_id,
                row.sender_id,
                row.seq,
                row.created_at,
                self._blind_snippet(session, row, query) if row.blind else row.snippet,
            )
            for row in rows[: request.limit]
        ]
        more = len(rows) > request.limit
        last = hits[-1] if hits and more else None
        return SearchPage(hits, Cursor(last.created_at, last.message_id) if last else None)

    def _blind_branches(self, encrypted: list[Any], query: blind.BlindQuery) -> list[blind.BlindBranch]:
        """One branch per encrypted conversation that has a key (a shredded one has none: it matches
        nothing). Without a key ring, encrypted conversations are not searched."""
        if self.keys is None:
            return []
        branches = []
        for row in encrypted:
            if row.key_version is None:
                continue
            key = self.keys.index_key(row.conversation_id, row.key_version, row.wrapped_key, row.kms_key_id)
            required, excluded = query.hashed(key.key)
            branches.append(blind.BlindBranch(row.conversation_id, key.key_version, required, excluded))
        return branches

    def _blind_snippet(self, session: Session, row: Any, query: blind.BlindQuery | None) -> str:
        if query is None or self.keys is None:  # a blind row only comes from a blind branch
            return ""
        try:
            stored = row if row.wrapped_key is not None else None
            content = self.keys.open_with(row, stored) if row.content_ciphertext is not None else row.content
        except (SealedContentRefused, EncryptionKeyUnavailable) as refused:
            # One message that does not open (tampered) must not make its conversation unsearchable: the
            # hit stays, without a snippet; the reason names the message, never content.
            logger.warning("search snippet not decrypted", extra={"reason": str(refused)})
            return ""
        return blind.snippet(content or "", query)
