"""Exponential backoff with equal jitter for transient failures, and the retry window it gives."""

import random

from hypothesis import given
from hypothesis import strategies as st

from shared.config import Settings
from shared.runtime.retry import backoff_seconds, retry_window_seconds


@given(attempt=st.integers(min_value=1, max_value=50), seed=st.integers())
def test_backoff_stays_between_half_and_all_of_the_exponential_ceiling(attempt, seed):
    ceiling = min(900, 20 * 2 ** (attempt - 1))
    delay = backoff_seconds(attempt, base=20, cap=900, rng=random.Random(seed))
    assert max(1, int(ceiling / 2)) <= delay <= ceiling


def test_backoff_ceiling_grows_then_caps():
    rng = random.Random(0)
    later = [max(backoff_seconds(a, base=2, cap=900, rng=rng) for _ in range(200)) for a in (1, 4, 8, 20)]
    assert later[0] <= 2 and 8 <= later[1] <= 16 and 128 <= later[2] <= 256 and 450 <= later[3] <= 900


def test_the_default_retry_window_outlasts_a_multi_az_failover():
    # Given the defaults and the template's MaxReceiveCount
    settings = Settings()
    shortest, longest = retry_window_seconds(
        settings.max_receive_count, base=settings.retry_base_seconds, cap=settings.retry_max_seconds
    )
    # Then even the luckiest schedule keeps retrying past a 120 s failover, and gives up within minutes
    assert shortest > 120
    assert longest <= 15 * 60
