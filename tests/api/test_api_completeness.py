"""``GET /v1/sites/{site}/completeness``: the nightly report as the cold job stores it, for
keys that may see the site only."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from core.cold_tables import ColdTables
from harness import QuestDB

from . import world as w

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

DAY = dt.date(2026, 11, 3)


@pytest.fixture
async def client(world: w.World, questdb: QuestDB) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(w.make_app(world, questdb)) as c:
        yield c


def auth(world: w.World, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.keys[who]}"}


async def test_completeness_of_a_day(
    world: w.World, questdb: QuestDB, client: AsyncTestClient[Litestar]
) -> None:
    path = "/v1/sites/s201/completeness"
    # before the nightly job ever ran: no table, no rows, no error
    r = await client.get(path, params={"day": DAY.isoformat()}, headers=auth(world, "acme"))
    assert (r.status_code, r.json()) == (200, [])
    cold = ColdTables(world.tables.prefix)
    for statement in cold.create_statements():
        questdb.exec_sql(statement)
    gaps = json.dumps([["2026-11-03T10:00Z", "2026-11-03T10:30Z"]])
    questdb.exec_sql(
        f"INSERT INTO {cold.completeness.name} VALUES ('2026-11-03', 's201', 's201-a001', "
        f"8640, 8460, 0.979, 0, 1, 30, 30, '{gaps}', 4, now())"
    )
    deadline = time.monotonic() + 30
    while True:
        r = await client.get(path, params={"day": DAY.isoformat()}, headers=auth(world, "acme"))
        if r.json() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert r.status_code == 200
    assert r.json() == [
        {
            "day": "2026-11-03",
            "node": "s201-a001",
            "expected": 8640,
            "received": 8460,
            "ratio": 0.979,
            "alarm_minutes": 0,
            "gaps": [["2026-11-03T10:00Z", "2026-11-03T10:30Z"]],
            "gap_minutes": 30,
            "longest_gap_minutes": 30,
            "late": 4,
        }
    ]
    other = await client.get(path, params={"day": DAY.isoformat()}, headers=auth(world, "bolt"))
    assert other.status_code == 404  # another tenant's site
    bad = await client.get(path, params={"day": "1900-01-01"}, headers=auth(world, "acme"))
    assert bad.status_code == 400
