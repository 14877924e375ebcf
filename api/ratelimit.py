"""Token buckets per API key and per tenant, in memory (one API process; a cluster
multiplies the allowance by its instance count, which the rates account for)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.ratelimit import TokenBucket


@dataclass(frozen=True, slots=True)
class Limit:
    """One bucket a request draws from: ``bucket`` names it (a key id, ``tenant:<id>``)."""

    bucket: str
    rate_per_s: float
    burst: int


class RateLimiter:
    """One bucket per name, created on first use with its limit's rate and burst."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._max_keys = max_keys

    def _bucket(self, limit: Limit) -> TokenBucket:
        bucket = self._buckets.get(limit.bucket)
        if bucket is None or bucket.rate != limit.rate_per_s or bucket.burst != limit.burst:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory; buckets refill anyway
            bucket = TokenBucket(limit.rate_per_s, limit.burst, self._clock)
            self._buckets[limit.bucket] = bucket
        return bucket

    def admit(self, limits: Sequence[Limit], cost: float = 1.0) -> tuple[Limit, int] | None:
        """None when every limit allows the request (worth ``cost`` requests): it is then
        charged to all of them. Otherwise the first limit that refuses and the Retry-After in
        whole seconds (≥ 1), and nothing is charged: a request refused by its tenant's limit
        does not spend its key's allowance, nor the other way round."""
        buckets = [self._bucket(limit) for limit in limits]
        for limit, bucket in zip(limits, buckets, strict=True):
            wait = bucket.wait(cost)
            if wait > 0.0:
                return limit, max(1, math.ceil(wait))
        for bucket in buckets:
            bucket.take(cost)
        return None
