"""The blind index's pure parts (shared/services/search/blind.py and the index key derivation): token
normalisation, keyed hashing, the query subset it answers, snippets. The database side is in
tests/integration/test_search.py."""

from __future__ import annotations

import uuid

import pytest

from shared.errors import SearchRefused
from shared.services.crypto.keys import derive_index_key
from shared.services.search import blind

KEY = bytes(range(32))


def test_tokens_are_nfkc_normalised_lower_cased_runs_of_word_characters():
    assert blind.tokens("Café-Noir! \uff21\uff22\uff23 x_y 42") == ["café", "noir", "abc", "x_y", "42"]
    assert blind.tokens("") == [] and blind.tokens(None) == []


def test_blind_tokens_are_sorted_distinct_signed_64_bit_keyed_hashes():
    hashes = blind.blind_tokens(KEY, "Tent tent TENT", "lantern")
    assert hashes == sorted({blind.token_hash(KEY, "tent"), blind.token_hash(KEY, "lantern")})
    assert all(-(2**63) <= h < 2**63 for h in hashes)
    assert blind.token_hash(KEY, "tent") != blind.token_hash(bytes(32), "tent")  # keyed


def test_the_index_key_is_derived_per_conversation_and_is_not_the_data_key():
    first, second = uuid.uuid4(), uuid.uuid4()
    key = derive_index_key(KEY, first)
    assert len(key) == 32 and key != KEY
    assert key == derive_index_key(KEY, first) != derive_index_key(KEY, second)


@pytest.mark.parametrize(
    ("query", "required", "excluded"),
    [
        ("tent Lantern", ("tent", "lantern"), ()),
        ("tent -lantern", ("tent",), (("lantern",),)),
        ('"pitch the tent" tent', ("pitch", "the", "tent"), ()),
        ('tent -"wet socks"', ("tent",), (("wet", "socks"),)),
        ('"unclosed quote', ("unclosed", "quote"), ()),
        ("e-mail", ("e", "mail"), ()),
        ("!!! ...", (), ()),
    ],
)
def test_queries_become_whole_token_conditions(query, required, excluded):
    parsed = blind.parse_query(query)
    assert (parsed.required, parsed.excluded) == (required, excluded)


@pytest.mark.parametrize("query", ["tent or lantern", "tent OR lantern"])
def test_or_is_refused_with_a_clear_reason(query):
    with pytest.raises(SearchRefused) as refused:
        blind.parse_query(query)
    assert refused.value.code == "invalid-query" and "'or' is not supported" in refused.value.message


def test_a_query_hashes_with_the_conversations_key():
    required, excluded = blind.parse_query("tent -wet").hashed(KEY)
    assert required == [blind.token_hash(KEY, "tent")] and excluded == [[blind.token_hash(KEY, "wet")]]


def test_snippets_mark_whole_token_matches_and_escape_everything_else():
    query = blind.parse_query("tent")
    assert blind.snippet("<i>Tent</i> & tents!", query) == "&lt;i&gt;<mark>Tent</mark>&lt;/i&gt; &amp; tents!"
    assert blind.snippet("", query) == ""
    words = " ".join(f"w{i}" for i in range(50))
    cut = blind.snippet(f"{words} tent {words}", query).split()
    assert len(cut) == blind.SNIPPET_WORDS and cut[blind.SNIPPET_LEAD] == "<mark>tent</mark>"
