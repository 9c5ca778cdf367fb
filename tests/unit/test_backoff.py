"""Exponential backoff with full jitter for transient failures."""

import random

from hypothesis import given
from hypothesis import strategies as st

from shared.runtime.sqs import backoff_seconds


@given(attempt=st.integers(min_value=1, max_value=50), seed=st.integers())
def test_backoff_stays_within_one_second_and_the_exponential_ceiling(attempt, seed):
    delay = backoff_seconds(attempt, base=2, cap=900, rng=random.Random(seed))
    assert 1 <= delay <= min(900, 2 * 2 ** (attempt - 1))


def test_backoff_ceiling_grows_then_caps():
    rng = random.Random(0)
    later = [max(backoff_seconds(a, base=2, cap=900, rng=rng) for _ in range(200)) for a in (1, 4, 8, 20)]
    assert later[0] <= 2 and 8 <= later[1] <= 16 and 128 <= later[2] <= 256 and 450 <= later[3] <= 900
