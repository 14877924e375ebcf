"""Per-key token buckets in memory (one API process; a cluster multiplies the allowance by
its instance count, which the key's rate accounts for)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from core.ratelimit import TokenBucket


class RateLimiter:
    """One bucket per API key id, created on first use with the key's own rate and burst."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._max_keys = max_keys

    def check(self, key_id: str, rate_per_s: float, burst: int, cost: float = 1.0) -> int:
        """0 when the request (worth ``cost`` requests) may proceed, else the Retry-After in
        whole seconds (≥ 1)."""
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.rate != rate_per_s or bucket.burst != burst:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory; buckets refill anyway
            bucket = self._buckets[key_id] = TokenBucket(rate_per_s, burst, self._clock)
        wait = bucket.take(cost)
        return 0 if wait == 0.0 else max(1, math.ceil(wait))
