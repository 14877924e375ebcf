"""``api.ratelimit``: a request draws from its key's and its tenant's buckets together, and a
refusal by either charges neither."""

from __future__ import annotations

from api.ratelimit import Limit, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_request_the_tenant_refuses_does_not_spend_the_keys_allowance() -> None:
    limiter = RateLimiter(Clock())
    key = Limit("k1", 0.1, 5)
    busy, quiet = Limit("tenant:busy", 0.1, 2), Limit("tenant:quiet", 0.1, 100)
    assert [limiter.admit((key, busy)) for _ in range(2)] == [None, None]
    assert limiter.admit((key, busy)) == (busy, 10)  # one token at 0.1/s: 10 s
    assert limiter.admit((key, busy)) == (busy, 10)
    # the key paid for the two admitted requests only: three left of its five
    assert [limiter.admit((key, quiet)) for _ in range(4)] == [None, None, None, (key, 10)]


def test_a_request_the_key_refuses_does_not_spend_the_tenants_allowance() -> None:
    limiter = RateLimiter(Clock())
    slow, other = Limit("k-slow", 0.2, 1), Limit("k-other", 1.0, 100)
    tenant = Limit("tenant:t", 1.0, 3)
    assert limiter.admit((slow, tenant)) is None
    assert limiter.admit((slow, tenant)) == (slow, 5)
    assert limiter.admit((slow, tenant)) == (slow, 5)
    assert [limiter.admit((other, tenant)) for _ in range(3)] == [None, None, (tenant, 1)]


def test_costly_requests_and_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    key, tenant = Limit("k", 1.0, 25), Limit("tenant:t", 10.0, 100)
    assert limiter.admit((key, tenant), cost=20) is None
    assert limiter.admit((key, tenant), cost=20) == (key, 15)  # 5 left, 15 more at 1/s
    clock.now += 15
    assert limiter.admit((key, tenant), cost=20) is None
    # larger than the burst: allowed once the bucket is full, which leaves it in debt
    clock.now += 25
    assert limiter.admit((key, tenant), cost=30) is None
    assert limiter.admit((key, tenant)) == (key, 6)
