"""How long a transiently failed record waits before SQS hands it out again.

Equal jitter: attempt n waits between half and all of ``min(cap, base * 2**(n-1))`` seconds. Unlike full
jitter (anywhere from 0), the wait has a floor, so the retry window has one too: with the defaults (base 20 s,
``MaxReceiveCount`` 5) the four waits before the fifth and last receive add up to at least
10 + 20 + 40 + 80 = 150 s and at most 300 s — longer than a Multi-AZ RDS failover (60-120 s), so a failover
delays jobs instead of dead-lettering them. Jitter still spreads the retries of a failed batch apart."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, *, base: int, cap: int, rng: random.Random | None = None) -> int:
    """The wait after receive number ``attempt`` failed: uniform in [ceiling / 2, ceiling], at least 1 s,
    where ceiling = min(cap, base * 2**(attempt-1))."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return max(1, int((rng or random).uniform(ceiling / 2, ceiling)))


def retry_window_seconds(receives: int, *, base: int, cap: int) -> tuple[float, float]:
    """(shortest, longest) time from the first failed receive to the last allowed one."""
    ceilings = [min(cap, base * 2 ** (attempt - 1)) for attempt in range(1, receives)]
    return sum(c / 2 for c in ceilings), float(sum(ceilings))
