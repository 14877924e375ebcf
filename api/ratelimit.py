"""Per-key token buckets in memory (one API process; a cluster multiplies the allowance by
its instance count, which the key's rate accounts for)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class RateLimiter:
    """One bucket per API key id, created on first use with the key's own rate and burst."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._max_keys = max_keys

    def check(self, key_id: str, rate_per_s: float, burst: int) -> int:
        """0 when the request may proceed, else the Retry-After in whole seconds (≥ 1)."""
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.rate != rate_per_s or bucket.burst != burst:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory; buckets refill anyway
            bucket = self._buckets[key_id] = TokenBucket(rate_per_s, burst, self._clock)
        wait = bucket.take()
        return 0 if wait == 0.0 else max(1, math.ceil(wait))
