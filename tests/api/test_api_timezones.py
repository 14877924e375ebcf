"""The site's time zone (registry) is the default of every calendar computation; an explicit
``tz`` overrides it. Checked across the end of daylight saving time in America/Chicago
(Sunday 2026-11-01: 01:00-02:00 CDT happens twice, so that local day has 25 hours)."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool
from questdb import Sender, TimestampMicros, TimestampNanos

from api import keys, readings, registry
from api.access import Access
from api.app import Services, create_app
from api.errors import RegistryError
from api.readings import Reader
from core.tables import TableSet
from harness import QuestDB

pytestmark = [pytest.mark.integration]

SITE, NODE, TZ = "s301", "s301-a001", "America/Chicago"
FIRST = dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)  # hourly samples at hh:30 from here
HOURS = 11 * 24
NOW = dt.datetime(2026, 11, 4, 18, 0, tzinfo=dt.UTC)  # Wednesday, 12:00 CST
UTC_HOURS = dt.timedelta(hours=1)


def _ns(t: dt.datetime) -> TimestampNanos:
    return TimestampNanos(int(t.timestamp()) * 1_000_000_000)


Samples = list[tuple[dt.datetime, float]]
#: hourly samples at hh:30 of value 1.0 over the end of daylight saving time
DST_SAMPLES: Samples = [(FIRST + i * UTC_HOURS, 1.0) for i in range(HOURS)]


def _write(questdb: QuestDB, tables: TableSet, samples: Samples) -> None:
    received = TimestampMicros(int(time.time() * 1_000_000))
    with Sender.from_conf(questdb.ilp_conf) as sender:
        for t, value in samples:
            sender.row(
                tables.raw.name,
                symbols={"site": SITE, "node": NODE, "device": "daq", "metric": "ROP"},
                columns={"value": value, "hot": True, "historical": False, "received": received},
                at=_ns(t),
            )
        sender.row(
            tables.catalogue.name,
            symbols={"site": SITE, "node": NODE, "device": "daq", "metric": "ROP"}
            | {"datatype": "Double", "unit": "ft/h"},
            columns={"hot": True},
            at=_ns(FIRST),
        )
        sender.flush()
    sql = f"SELECT sum(count) FROM {tables.telemetry_1h.name} WHERE site = '{SITE}'"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = questdb.exec_sql(sql)["dataset"]
        if got and got[0][0] == len(samples):
            return
        time.sleep(0.3)
    raise AssertionError(f"hourly view not refreshed: {got}")


@pytest.fixture
async def client(
    registry_dsn: str, questdb: QuestDB
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], dict[str, str]]]:
    async with _site_with(registry_dsn, questdb, DST_SAMPLES) as c:
        yield c


@contextlib.asynccontextmanager
async def _site_with(
    registry_dsn: str, questdb: QuestDB, samples: Samples
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], dict[str, str]]]:
    """The API on a site of zone TZ whose one appliance has ``samples`` of ROP; clock NOW."""
    tables = TableSet(f"t{uuid.uuid4().hex[:8]}_")
    for statement in tables.create_statements():
        questdb.exec_sql(statement)
    _write(questdb, tables, samples)
    with psycopg.connect(registry_dsn, autocommit=True) as conn:
        registry.create_tenant(conn, "chi", "Chicago Drilling")
        registry.create_site(conn, SITE, "chi", "Permian pad", TZ)
        with psycopg.connect(questdb.pg_dsn, autocommit=True) as q:
            registry.sync_catalogue(conn, q, tables)
        uid = registry.create_user(conn, "chi", "viewer@chi.example", keys.Role.CUSTOMER_VIEWER)
        key = registry.issue_api_key(conn, uid, rate_per_s=1000.0, burst=1000).plaintext
    pg: AsyncConnectionPool[Any] = AsyncConnectionPool(
        registry_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    qdb: AsyncConnectionPool[Any] = AsyncConnectionPool(
        questdb.pg_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    services = Services(
        Access(pg), Reader(qdb, tables, "derrick-cloud"), pools=[pg, qdb], clock=lambda: NOW
    )
    async with AsyncTestClient(create_app(services)) as c:
        yield c, {"Authorization": f"Bearer {key}"}


def _days(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [(b["ts"], b["count"]) for b in body["buckets"]]


async def test_site_zone_is_the_default_and_tz_overrides_it(
    client: tuple[AsyncTestClient[Litestar], dict[str, str]],
) -> None:
    c, h = client
    days = {
        "metric": "ROP",
        "period": "day",
        "start": "2026-10-31T00:00:00",
        "end": "2026-11-03T00:00:00",
    }
    r = await c.get(f"/v1/appliances/{NODE}/aggregates", params=days, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["tz"] == TZ
    # local midnights: CDT (UTC-5) before the change, CST (UTC-6) after; the 25-hour day
    assert _days(r.json()) == [
        ("2026-10-31T05:00:00Z", 24),
        ("2026-11-01T05:00:00Z", 25),
        ("2026-11-02T06:00:00Z", 24),
    ]
    r = await c.get(f"/v1/appliances/{NODE}/aggregates", params=days | {"tz": "UTC"}, headers=h)
    assert r.json()["tz"] == "UTC"
    assert _days(r.json()) == [
        ("2026-10-31T00:00:00Z", 24),
        ("2026-11-01T00:00:00Z", 24),
        ("2026-11-02T00:00:00Z", 24),
    ]

    series = {"metric": "ROP", "bucket": "1d", "start": "2026-11-01T00:00:00"}
    r = await c.get(
        f"/v1/appliances/{NODE}/series", params=series | {"end": "2026-11-02T00:00:00"}, headers=h
    )
    assert (r.json()["tz"], _days(r.json())) == (TZ, [("2026-11-01T05:00:00Z", 25)])

    r = await c.get(f"/v1/appliances/{NODE}/compare", params={"period": "week"}, headers=h)
    week = r.json()
    assert week["tz"] == TZ
    assert week["current_start"] == "2026-11-02T06:00:00Z"  # Monday 00:00 CST
    assert week["previous_start"] == "2026-10-26T05:00:00Z"  # Monday 00:00 CDT
    assert week["metrics"][0]["previous"]["count"] == 7 * 24 + 1  # the week with the extra hour
    r = await c.get(
        f"/v1/appliances/{NODE}/compare", params={"period": "week", "tz": "UTC"}, headers=h
    )
    assert r.json()["current_start"] == "2026-11-02T00:00:00Z"
    assert r.json()["metrics"][0]["previous"]["count"] == 7 * 24

    assert (await c.get(f"/v1/appliances/{NODE}/kpis", headers=h)).json()["tz"] == TZ
    r = await c.get(f"/v1/appliances/{NODE}/kpis", params={"tz": "Mars/Olympus"}, headers=h)
    assert r.status_code == 400 and "time zone" in r.text


async def test_this_month_against_the_same_month_last_year_in_the_sites_zone(
    registry_dsn: str, questdb: QuestDB
) -> None:
    """Hourly samples around November 2025 and November 2026 (to NOW), different values each
    year; the comparison's windows are Chicago's months (November 2025 starts in daylight
    saving time, UTC-5, and ends in standard time, UTC-6) and its totals and percentage
    changes equal those computed here from the samples in those windows."""
    last_year = [
        (dt.datetime(2025, 10, 31, 0, 30, tzinfo=dt.UTC) + i * UTC_HOURS, 10.0 + i % 7)
        for i in range(33 * 24)
    ]
    this_year = [
        (dt.datetime(2026, 10, 31, 0, 30, tzinfo=dt.UTC) + i * UTC_HOURS, 12.0 + i % 5)
        for i in range(int((NOW - dt.datetime(2026, 10, 31, 0, 30, tzinfo=dt.UTC)) / UTC_HOURS))
    ]
    prev_start = dt.datetime(2025, 11, 1, 5, tzinfo=dt.UTC)  # midnight CDT
    prev_end = dt.datetime(2025, 12, 1, 6, tzinfo=dt.UTC)  # midnight CST
    cur_start = dt.datetime(2026, 11, 1, 5, tzinfo=dt.UTC)

    def totals(samples: Samples, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        values = [v for t, v in samples if start <= t < end]
        return {"avg": sum(values) / len(values), "min": min(values), "max": max(values),
                "count": len(values), "sum": sum(values)}  # fmt: skip

    previous = totals(last_year, prev_start, prev_end)
    current = totals(this_year, cur_start, NOW)
    assert previous["count"] == 30 * 24 + 1  # the month of the clock change has 721 hours
    async with _site_with(registry_dsn, questdb, last_year + this_year) as (c, h):
        r = await c.get(f"/v1/appliances/{NODE}/compare", params={"period": "month"}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tz"] == TZ
    assert (body["current_start"], body["current_end"]) == (
        "2026-11-01T05:00:00Z",
        "2026-11-04T18:00:00Z",
    )
    assert (body["previous_start"], body["previous_end"]) == (
        "2025-11-01T05:00:00Z",
        "2025-12-01T06:00:00Z",
    )
    (m,) = body["metrics"]
    assert (m["device"], m["metric"]) == ("daq", "ROP")
    for got, want in ((m["current"], current), (m["previous"], previous)):
        assert got["count"] == want["count"]
        for k in ("avg", "min", "max", "sum"):
            assert got[k] == pytest.approx(want[k], rel=1e-12), k
    for k in ("avg", "min", "max"):
        change = (current[k] - previous[k]) / abs(previous[k]) * 100.0
        assert m[f"{k}_change_pct"] == pytest.approx(change, rel=1e-9), k


def test_a_site_with_an_unknown_zone_is_refused(reg_conn: psycopg.Connection) -> None:
    registry.create_tenant(reg_conn, "chi", "Chicago Drilling")
    with pytest.raises(RegistryError, match="time zone"):
        registry.create_site(reg_conn, "s302", "chi", "", "America/Atlantis")


def test_every_zone_the_api_accepts_is_one_questdb_aligns_buckets_in(questdb: QuestDB) -> None:
    """Python's tz database lists a few names QuestDB's ``TIME ZONE`` refuses (a 500 once they
    reached it): each one the API accepts runs through QuestDB's calendar alignment, each one
    it refuses is refused with the reason."""
    table = f"tz_{uuid.uuid4().hex[:8]}"
    refused = []
    with psycopg.connect(questdb.pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (ts TIMESTAMP, v DOUBLE) TIMESTAMP(ts)".encode())
        conn.execute(f"INSERT INTO {table} VALUES ('2026-01-01T12:00:00Z', 1.0)".encode())
        sql = f"SELECT ts, sum(v) FROM {table} SAMPLE BY 1d ALIGN TO CALENDAR TIME ZONE %(tz)s"
        names = readings.zone_names()
        assert len(names) > 500 and "Asia/Kolkata" in names and "UTC" in names
        for name in sorted(names):
            try:
                assert len(conn.execute(sql.encode(), {"tz": name}).fetchall()) == 1
            except psycopg.DatabaseError as exc:
                refused.append((name, str(exc)[:80]))
    assert refused == []
    for name, reason in readings.NOT_QUESTDB_ZONES.items():
        with pytest.raises(ValueError, match="not usable as a time zone") as caught:
            readings.zone(name)
        assert reason in str(caught.value)
