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
