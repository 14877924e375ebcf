"""Who is calling and what they may see: API key lookup and tenant visibility (async).

Visibility never tells "does not exist" from "not yours": both are ``None`` here and 404 at
the edge. Ops see every site; customers their tenant's sites; vendors none: what is shared
with a vendor reaches it only through the pseudonymised datasets (``api.vendor_routes``,
which read ``site_shares`` themselves), never as site ids, names or unshared metrics.

Answers are cached for ``cache_s`` seconds (5 by default; 0 turns it off): a key's principal
(under the SHA-256 of the whole presented key, so another secret with the same key id is
looked up again and refused) and what a tenant may see of a site or an appliance. Without it
each request cost two PostgreSQL round trips before its own query (docs/benchmarks.md, API).
The price: a revoked key, a disabled user or a changed share takes effect within ``cache_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import msgspec
from psycopg_pool import AsyncConnectionPool

from api import keys
from core.ratelimit import TokenBucket


class Principal(msgspec.Struct, frozen=True):
    key_id: str
    user_id: int
    tenant: str
    role: keys.Role
    rate_per_s: float
    burst: int
    #: The tenant's allowance, shared by all its keys.
    tenant_rate_per_s: float = 50.0
    tenant_burst: int = 200

    def __repr__(self) -> str:
        return f"Principal(key_id={self.key_id!r}, tenant={self.tenant!r}, role={self.role})"


_VISIBLE_SITES = """
SELECT s.id, s.name, s.timezone, s.tenant_id FROM sites s
WHERE (%(role)s = 'ops'
   OR (%(role)s IN ('customer_viewer', 'customer_admin') AND s.tenant_id = %(tenant)s))
"""  # parenthesised: callers append "AND ..."; vendors see no site here (module docstring)


T = TypeVar("T")


class _TtlCache:
    """Answers for ``ttl_s`` seconds, at most ``size`` of them (expired ones purged first)."""

    def __init__(self, ttl_s: float, size: int = 20_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.ttl_s, self.size, self.clock = ttl_s, size, clock
        self._items: dict[Hashable, tuple[float, Any]] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        if self.ttl_s <= 0:
            return await load()
        now = self.clock()
        hit = self._items.get(key)
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        value = await load()
        if len(self._items) >= self.size:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            if len(self._items) >= self.size:
                self._items.clear()
        self._items[key] = (now + self.ttl_s, value)
        return value


class Access:
    """``unknown_lookups_per_s``/``unknown_burst``: registry lookups allowed for keys whose
    id is not among the live key ids (refreshed every ``cache_s``, at least every second).
    A flood of well-formed made-up keys then costs the registry nothing beyond that
    allowance, and cannot evict the real keys' cached answers; a key issued since the last
    refresh is found through the allowance, at once, except during such a flood."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        unknown_lookups_per_s: float = 20.0,
        unknown_burst: int = 100,
    ) -> None:
        self._pool = pool
        self._cache = _TtlCache(cache_s, clock=clock)
        self._clock = clock
        self._known: frozenset[str] = frozenset()
        self._known_until = -math.inf
        self._known_lock = asyncio.Lock()
        self._unknown = TokenBucket(unknown_lookups_per_s, unknown_burst, clock)
        self.counters: Counter[str] = Counter()

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """The registry pool, for route modules that own their own tables."""
        return self._pool

    async def _known_ids(self) -> frozenset[str]:
        """The ids of the keys not revoked, as of at most ``cache_s`` (≥ 1 s) ago."""
        if self._clock() < self._known_until:
            return self._known
        async with self._known_lock:
            if self._clock() >= self._known_until:  # not refreshed while this one waited
                async with self._pool.connection() as conn:
                    cur = await conn.execute("SELECT key_id FROM api_keys WHERE revoked_at IS NULL")
                    self._known = frozenset(str(r[0]) for r in await cur.fetchall())
                self._known_until = self._clock() + max(self._cache.ttl_s, 1.0)
            return self._known

    async def authenticate(self, presented: str) -> Principal | None:
        key_id = keys.parse_key_id(presented)
        if key_id is None:
            return None
        if key_id not in await self._known_ids() and self._unknown.take() > 0.0:
            self.counters["unknown_key_lookups_shed"] += 1
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        return await self._cache.get(("key", digest), lambda: self._authenticate(key_id, presented))

    async def _authenticate(self, key_id: str, presented: str) -> Principal | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT k.secret_sha256, u.id, u.tenant_id, u.role, k.rate_per_s, k.burst, "
                "t.rate_per_s, t.burst "
                "FROM api_keys k JOIN users u ON u.id = k.user_id "
                "JOIN tenants t ON t.id = u.tenant_id "
                "WHERE k.key_id = %s AND k.revoked_at IS NULL AND u.disabled_at IS NULL",
                (key_id,),
            )
            row = await cur.fetchone()
        if row is None or not keys.matches(presented, bytes(row[0])):
            return None
        return Principal(
            key_id,
            int(row[1]),
            str(row[2]),
            keys.Role(row[3]),
            row[4],
            int(row[5]),
            float(row[6]),
            int(row[7]),
        )

    def _params(self, who: Principal, **extra: object) -> dict[str, object]:
        return {"role": who.role.value, "tenant": who.tenant, **extra}

    async def sites(self, who: Principal) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_VISIBLE_SITES + " ORDER BY s.id", self._params(who))
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows

    async def site(self, who: Principal, site: str) -> tuple[Any, ...] | None:
        return await self._cache.get(
            ("site", who.role, who.tenant, site), lambda: self._site(who, site)
        )

    async def _site(self, who: Principal, site: str) -> tuple[Any, ...] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                _VISIBLE_SITES + " AND s.id = %(site)s", self._params(who, site=site)
            )
            row: tuple[Any, ...] | None = await cur.fetchone()
            return row

    async def appliances(self, site: str) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, state, first_seen, last_birth FROM appliances WHERE site_id = %s "
                "ORDER BY id",
                (site,),
            )
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows

    async def appliance(self, who: Principal, appliance: str) -> tuple[Any, ...] | None:
        """(id, site, state, timezone) of a visible appliance, else None."""
        return await self._cache.get(
            ("appliance", who.role, who.tenant, appliance), lambda: self._appliance(who, appliance)
        )

    async def _appliance(self, who: Principal, appliance: str) -> tuple[Any, ...] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT a.id, a.site_id, a.state, v.timezone FROM appliances a "
                f"JOIN ({_VISIBLE_SITES}) v ON v.id = a.site_id WHERE a.id = %(appliance)s",
                self._params(who, appliance=appliance),
            )
            row: tuple[Any, ...] | None = await cur.fetchone()
            return row

    async def metrics(self, appliance: str) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT device_id, name, datatype, unit, hot FROM metrics "
                "WHERE appliance_id = %s ORDER BY device_id, name",
                (appliance,),
            )
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows
