"""Backoff for retryable failures: exponential with full jitter, capped, honouring Retry-After.

Only what is worth retrying is retried (InfluxUnavailable: refused, timeout, 5xx, 429); a
permanent error is never looped on. `RetryPolicy.fast()` makes tests quick. Ingest's writer
retries a write with it; the API's foresight rounds, a round.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial: float = 0.25
    maximum: float = 30.0
    multiplier: float = 2.0

    @classmethod
    def fast(cls) -> RetryPolicy:
        return cls(initial=0.01, maximum=0.2)

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 0)."""
        # The exponent bounded: a float power overflows (OverflowError) past ~1,000 attempts,
        # which an outage of a few hours reaches, and a retry loop with no deadline would die.
        cap = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        # Full jitter spreads the retries of many workers that failed at the same moment.
        jittered = (rng or random).uniform(cap / 2, cap)
        if retry_after is not None:
            return max(jittered, min(retry_after, self.maximum * 4))
        return jittered


def sleep(seconds: float, stop: threading.Event) -> bool:
    """Wait, waking early if `stop` is set; True if stopped."""
    return stop.wait(seconds)
