"""The blind index of encrypted conversations: what is stored and queried instead of lexemes.

A token is a run of word characters (``\\w+``) of the text after Unicode NFKC normalisation and lower-casing:
"Café-Noir!" is ``café`` and ``noir``. No stemming, no stop words, no positions. A message's blind tokens are
the distinct ``HMAC-SHA256(index_key, token)`` of its content, its sender's display name and its
conversation's title, each truncated to its first 8 bytes read as a signed big-endian 64-bit integer (a
``bigint``): collisions (about 1 in 2**64 per pair) can only add a false match, never lose one. The index key
is per conversation (crypto/keys.py, ``derive_index_key``), so equal words of two conversations hash apart
and a hash says nothing outside its conversation. Within one, equal hashes do mean equal words (that is what
makes it searchable): the index leaks token equality and how many distinct tokens a message has, never the
tokens.

Queries (websearch syntax, a subset): words are ANDed whole tokens; ``-word`` excludes messages holding all of
that word's tokens; a quoted phrase is the AND of its tokens (adjacency and order are not checked: a superset
of the phrase's matches); ``or`` is refused (:class:`SearchRefused` ``invalid-query``) in a search that covers
an encrypted conversation."""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import unicodedata
import uuid
from dataclasses import dataclass

from shared.errors import SearchRefused

_WORD = re.compile(r"\w+")
# Snippet shape, like ts_headline's MaxWords / the words kept before the first match.
SNIPPET_WORDS = 24
SNIPPET_LEAD = 8


def tokens(text: str | None) -> list[str]:
    """The normalised tokens of ``text``, in order (duplicates kept)."""
    if not text:
        return []
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def token_hash(key: bytes, token: str) -> int:
    digest = hmac.new(key, token.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def blind_tokens(key: bytes, *texts: str | None) -> list[int]:
    """The sorted distinct hashes of every token of ``texts`` (sorted: the stored order says nothing about
    the text's word order)."""
    return sorted({token_hash(key, token) for text in texts for token in tokens(text)})


@dataclass(frozen=True)
class BlindQuery:
    """A query for the blind index: every ``required`` token, and none of the ``excluded`` groups whole."""

    required: tuple[str, ...]
    excluded: tuple[tuple[str, ...], ...]

    def hashed(self, key: bytes) -> tuple[list[int], list[list[int]]]:
        """The hashes under ``key``, one per token in the query's order: the same lengths for every
        conversation, so the repository can pass all conversations' hashes as flat arrays."""
        return (
            [token_hash(key, token) for token in self.required],
            [[token_hash(key, token) for token in group] for group in self.excluded],
        )


@dataclass(frozen=True)
class BlindBranch:
    """One encrypted conversation's part of a search: its rows indexed under ``key_version`` holding every
    ``required`` hash and not every hash of any ``excluded`` group."""

    conversation_id: uuid.UUID
    key_version: int
    required: list[int]
    excluded: list[list[int]]


_TERM = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def parse_query(query: str) -> BlindQuery:
    """``query`` (websearch syntax) as whole-token conditions; see the module docstring for what is kept.
    An unmatched quote runs to the end, as in ``websearch_to_tsquery``."""
    required: list[str] = []
    excluded: list[tuple[str, ...]] = []
    for match in _TERM.finditer(query):
        negated, phrase, word = match.group(1), match.group(2), match.group(3)
        if word is not None:
            if word.lower() == "or":
                raise SearchRefused(
                    "invalid-query",
                    "'or' is not supported when the search covers an encrypted conversation: search each "
                    "alternative separately",
                )
            negated, text = ("-", word[1:]) if word.startswith("-") else ("", word)
        else:
            text = phrase
        words = tokens(text)
        if not words:
            continue
        if negated:
            excluded.append(tuple(dict.fromkeys(words)))
        else:
            required.extend(words)
    return BlindQuery(tuple(dict.fromkeys(required)), tuple(excluded))


def snippet(content: str, query: BlindQuery) -> str:
    """A highlighted extract of decrypted ``content`` (computed in memory, never stored): up to
    ``SNIPPET_WORDS`` words from a little before the first match, HTML-escaped, with each word holding a
    required token wrapped in ``<mark>...</mark>`` (the shape of the plaintext ``ts_headline`` snippets)."""
    wanted = set(query.required)
    spans = [
        (m.start(), m.end(), bool(wanted.intersection(tokens(m.group())))) for m in _WORD.finditer(content)
    ]
    if not spans:
        return html.escape(content[:200], quote=False)
    first = next((i for i, span in enumerate(spans) if span[2]), 0)
    start = max(0, first - SNIPPET_LEAD)
    chosen = spans[start : start + SNIPPET_WORDS]
    parts: list[str] = []
    position = 0 if start == 0 else chosen[0][0]  # the whole text's edges are kept, a cut's are not
    for begin, end, marked in chosen:
        parts.append(html.escape(content[position:begin], quote=False))
        word = html.escape(content[begin:end], quote=False)
        parts.append(f"<mark>{word}</mark>" if marked else word)
        position = end
    if start + SNIPPET_WORDS >= len(spans):
        parts.append(html.escape(content[position:], quote=False))
    return "".join(parts).strip()
