"""Token buckets: the one rate-limit primitive (API keys and tenants, ingest node quotas)."""

from __future__ import annotations

from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; ``clock`` returns seconds."""

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float]) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError(
                f"a token bucket needs a positive rate and burst ({rate_per_s}, {burst})"
            )
        self.rate = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/s, burst={self.burst:g})"

    def wait(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens could be taken (0.0: now), taking none.

        A request larger than the burst is allowed when the bucket is full and leaves it in
        debt, so that no size of request is refused for ever.
        """
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        need = min(n, self.burst)
        return 0.0 if self._tokens >= need else (need - self._tokens) / self.rate

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens: 0.0 when allowed (see :meth:`wait`), else the seconds until
        they would be, and none taken."""
        wait = self.wait(n)
        if wait == 0.0:
            self._tokens -= n
        return wait
