"""``api.access`` against the real registry: what the principal and visibility cache may and
may not do. Within ``cache_s`` a revoked key still works (the documented price); after it, it
is refused; another secret under a cached key id is never accepted; ``cache_s = 0`` sees a
revocation at once."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api import keys, registry
from api.access import Access

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issued(reg_conn: psycopg.Connection) -> tuple[str, str]:
    """(plaintext key, key id) of a customer viewer of tenant acme, who sees site s017."""
    registry.create_tenant(reg_conn, "acme", "Acme Drilling")
    registry.create_site(reg_conn, "s017", "acme")
    reg_conn.execute("INSERT INTO appliances (id, site_id) VALUES ('s017-a001', 's017')")
    user = registry.create_user(reg_conn, "acme", "viewer@acme.test", keys.Role.CUSTOMER_VIEWER)
    key = registry.issue_api_key(reg_conn, user, "dashboards")
    return key.plaintext, key.key_id


@pytest.mark.parametrize("cache_s", [5.0, 0.0])
async def test_revoked_key_is_refused_within_the_cache_time(
    registry_dsn: str, reg_conn: psycopg.Connection, issued: tuple[str, str], cache_s: float
) -> None:
    plaintext, key_id = issued
    clock = Clock()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        registry_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    async with pool:
        access = Access(pool, cache_s, clock=clock)
        who = await access.authenticate(plaintext)
        assert who is not None and who.tenant == "acme"
        assert (await access.appliance(who, "s017-a001")) is not None
        assert (await access.appliance(who, "s017-a999")) is None

        forged = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")
        assert keys.parse_key_id(forged) == key_id
        assert await access.authenticate(forged) is None  # same key id, other secret

        registry.revoke_api_key(reg_conn, key_id)
        clock.now += 1.0
        if cache_s:
            assert await access.authenticate(plaintext) == who  # still within cache_s
        clock.now += cache_s
        assert await access.authenticate(plaintext) is None
        assert await access.authenticate(forged) is None


async def test_made_up_keys_cost_the_registry_only_their_allowance(
    registry_dsn: str, reg_conn: psycopg.Connection, issued: tuple[str, str]
) -> None:
    """A flood of well-formed keys with made-up ids: registry lookups stop at the unknown-key
    allowance (the rest refused without a query, counted); the real key keeps working during
    the flood; a key issued after the ids were loaded works at once (through the allowance)
    and, once the ids are refreshed, needs none of it."""
    plaintext, _ = issued
    clock = Clock()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        registry_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    async with pool:
        access = Access(pool, 5.0, clock=clock, unknown_lookups_per_s=1.0, unknown_burst=10)
        looked_up: list[str] = []
        lookup = access._authenticate

        async def counting(key_id: str, presented: str) -> Any:
            looked_up.append(key_id)
            return await lookup(key_id, presented)

        access._authenticate = counting  # type: ignore[method-assign]
        assert await access.authenticate(plaintext) is not None
        flood = [keys.generate().plaintext for _ in range(200)]
        for made_up in flood:
            assert await access.authenticate(made_up) is None
        assert len(looked_up) == 1 + 10  # the real key, then the burst of the allowance
        assert access.counters["unknown_key_lookups_shed"] == 190
        assert await access.authenticate(plaintext) is not None  # cached, or known: no query

        # issued after the ids were loaded: found through the allowance (refilled 1/s)
        user = registry.create_user(reg_conn, "acme", "admin@acme.test", keys.Role.CUSTOMER_ADMIN)
        fresh = registry.issue_api_key(reg_conn, user, "new").plaintext
        clock.now += 1.0
        assert await access.authenticate(fresh) is not None
        # after the refresh (cache_s) the new id is known: a flood does not shed it
        clock.now += 5.0
        for made_up in flood[:50]:
            await access.authenticate(made_up)
        before = access.counters["unknown_key_lookups_shed"]
        assert await access.authenticate(fresh) is not None
        assert access.counters["unknown_key_lookups_shed"] == before
