"""Vendor datasets: only the shared component types of the shared sites, numbers equal to
QuestDB's, identities pseudonymised consistently, and no customer identifier anywhere in the
Parquet bytes."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
from collections.abc import AsyncIterator

import psycopg
import pyarrow.parquet as pq
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from core.pseudonym import Pseudonymiser
from harness import QuestDB

from . import world as w

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@pytest.fixture
async def client(world: w.World, questdb: QuestDB) -> AsyncIterator[AsyncTestClient[Litestar]]:
    with psycopg.connect(world.registry_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO vendor_component_shares VALUES ('vend', 'drilling') ON CONFLICT DO NOTHING"
        )
    async with AsyncTestClient(w.make_app(world, questdb)) as c:
        yield c


def auth(world: w.World, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.keys[who]}"}


def window(world: w.World) -> dict[str, str]:
    today = world.now.date()
    return {
        "start": str(today - dt.timedelta(days=w.DAYS + 1)),
        "end": str(today + dt.timedelta(days=1)),
    }


async def test_vendor_sees_shared_components_pseudonymised_without_identifiers(
    client: AsyncTestClient[Litestar],
    world: w.World,
    questdb: QuestDB,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    r = await client.get(
        "/v1/vendor/datasets/daily", params=window(world), headers=auth(world, "vendor")
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.apache.parquet")
    data = r.content
    table = pq.read_table(io.BytesIO(data))
    rows = table.to_pylist()
    assert rows, "no rows"
    # only ROP (component 'drilling'); WOB ('drawworks') is not shared; only site s202
    assert {row["metric"] for row in rows} == {"ROP"}
    assert {row["component_type"] for row in rows} == {"drilling"}
    assert len({row["site"] for row in rows}) == 1 and len({row["appliance"] for row in rows}) == 1

    # same numbers as QuestDB's daily view
    got = {row["day"]: (row["count"], row["avg"]) for row in rows}
    want = questdb.exec_sql(
        f"SELECT ts, count, avg FROM {world.tables.telemetry_1d.name} "
        "WHERE site = 's202' AND metric = 'ROP'"
    )["dataset"]
    assert got == {dt.date.fromisoformat(t[:10]): (c, a) for t, c, a in want}

    # consistent pseudonyms, keyed: the key reproduces them, a bare hash does not
    p = Pseudonymiser(w.VENDOR_KEY, f"vend|daily|{window(world)['start']}|{window(world)['end']}")
    assert rows[0]["site"] == p("site", "s202") and rows[0]["appliance"] == p(
        "appliance", "s202-a001"
    )
    assert hashlib.sha256(b"s202").hexdigest()[:16] not in rows[0]["site"]
    other = Pseudonymiser(b"another-key-of-at-least-thirty-two-bytes", "vend|daily")
    assert other("site", "s202") != rows[0]["site"]

    # no customer identifier anywhere in the bytes (data, statistics, metadata)
    for needle in (
        "s202",
        "s201",
        "a001",
        "bolt",
        "Bolt Energy",
        "acme",
        "Acme",
        "South pad",
        "North pad",
        "daq",
        "vend@",
        "derrick-cloud",
        "kpi-w0",
    ):
        assert needle.encode() not in data, needle
    # and the key never in the logs
    assert w.VENDOR_KEY.decode() not in caplog.text


async def test_customers_get_403_and_bad_ranges_400(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    r = await client.get(
        "/v1/vendor/datasets/daily", params=window(world), headers=auth(world, "bolt")
    )
    assert r.status_code == 403
    for params, fragment in (
        ({"start": "2026-02-01", "end": "2026-01-01"}, "before end"),
        ({"start": "2020-01-01", "end": "2026-01-01"}, "366"),
        ({"start": "yesterday", "end": "2026-01-01"}, "start"),
    ):
        r = await client.get(
            "/v1/vendor/datasets/daily", params=params, headers=auth(world, "vendor")
        )
        assert r.status_code == 400 and fragment in r.text, r.text


async def test_a_vendor_key_learns_no_site_identity_or_unshared_metric_elsewhere(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    """Every GET route of the OpenAPI schema but the vendor datasets, called with the vendor
    key on the site shared with it (s202) and its appliance: refused (403/404) or empty, and
    no site id, site name, node id or unshared metric (WOB) in any answer."""
    schema = (await client.get("/schema/openapi.json")).json()
    ids = {"site_id": "s202", "appliance_id": "s202-a001", "alert_id": "1", "rule_id": "1",
           "month": "2026-11"}  # fmt: skip
    leaks = ("s202", "South pad", "WOB")
    called = []
    for path, ops in schema["paths"].items():
        if "get" not in ops or path.startswith("/v1/vendor/") or not path.startswith("/v1/"):
            continue
        url = path
        for name, value in ids.items():
            url = url.replace("{" + name + "}", value)
        assert "{" not in url, f"no test id for {path}"
        params = {"metric": "WOB", "month": "2026-11", "day": "2026-11-20"}
        r = await client.get(url, params=params, headers=auth(world, "vendor"))
        called.append(path)
        assert r.status_code in (200, 403, 404), (path, r.status_code, r.text[:200])
        if r.status_code == 200:
            assert r.json() in ([], {}), (path, r.text[:200])
        for leak in leaks:
            assert leak not in r.text, (path, leak, r.text[:200])
    assert "/v1/sites/{site_id}/current" in called and "/v1/appliances/{appliance_id}" in called
