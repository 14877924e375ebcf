"""The hot path end to end: rollup views, current values and KPIs, on real services.

A real Primary Host (with its KPI edge node) runs in-process against real Mosquitto and
QuestDB; a hand-made edge node (our codec and session) publishes known ROP, WOB, RPM (hot)
and DEPTH (not hot) samples spanning two hours and a UTC day boundary, plus a few historical
ROP samples. Then:

- ``telemetry_1m``, ``telemetry_1h`` and ``telemetry_1d`` hold exactly the aggregates computed
  here in Python (values are multiples of 0.25, so sums are exact);
- the current-values query returns each metric's latest sample;
- the KPI node's DBIRTH/DDATA appear on the wire with the KPI values computed here by brute
  force, and the Primary Host stored exactly what was published.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import aiomqtt
import psycopg
import pytest

from core import queries
from core.sparkplug import DataType
from core.sparkplug.session import EdgeNodeSession, MetricDef
from core.tables import ROLLUP_COLUMNS, MaterializedView, TableSet
from harness import Mosquitto, QuestDB
from harness.observer import SparkplugObserver
from ingest.config import IngestConfig, KpiSettings, MqttConfig, QuestDBConfig
from ingest.host import PrimaryHost

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SITE, NODE, DEVICE = "s042", "s042-a007", "daq"
GROUP = "derrick-cloud"
DAY_MS, HOUR_MS, MINUTE_MS = 86_400_000, 3_600_000, 60_000
STEP_MS = 30_000
STEPS = 160  # 80 minutes
NOW = lambda: time.time_ns() // 1_000_000  # noqa: E731

Sample = tuple[int, str, float, bool]  # ts ms, metric, value, historical


def samples(base: int) -> list[Sample]:
    out: list[Sample] = []
    for k in range(STEPS):
        ts = base + k * STEP_MS
        out += [
            (ts, "ROP", 20 + (k * 7 % 40) * 0.25, False),
            (ts, "WOB", (k * 3 % 20) * 0.5, False),  # 0 now and then: no efficiency then
            (ts, "RPM", 100 + (k % 9) * 2.5, False),
            (ts, "DEPTH", 9000 + k * 0.25, False),
        ]
    # replayed data between the live samples: stored and rolled up, never fed to the KPIs
    out += [(base + 15_000 + j * 600_000, "ROP", 99.75, True) for j in range(8)]
    return out


def edge_session() -> EdgeNodeSession:
    metrics = [
        MetricDef(1, DEVICE, "ROP", DataType.Double, "ft/h", True),
        MetricDef(2, DEVICE, "WOB", DataType.Double, "klbf", True),
        MetricDef(3, DEVICE, "RPM", DataType.Double, "rpm", True),
        MetricDef(4, DEVICE, "DEPTH", DataType.Double, "ft", False),
    ]
    return EdgeNodeSession(group_id=SITE, edge_node_id=NODE, metrics=metrics, clock=NOW)


# -- expectations, computed the obvious way ---------------------------------------------------

Bucket = tuple[int, str, str, float, float, float, int, float, float, float]


def expected_rollup(rows: list[Sample], width_ms: int, offset_ms: int = 0) -> list[Bucket]:
    """Buckets of ``width_ms`` starting on the local boundaries of a zone ``offset_ms`` ahead of
    UTC (a fixed offset: the test's zones have no daylight saving time)."""
    groups: dict[tuple[int, str], list[tuple[int, float]]] = defaultdict(list)
    for ts, metric, value, _ in rows:
        if metric != "DEPTH":
            groups[(ts - (ts + offset_ms) % width_ms, metric)].append((ts, value))
    out = []
    for (start, metric), items in groups.items():
        items.sort()
        values = [v for _, v in items]
        total = sum(values)
        out.append(
            (
                start,
                DEVICE,
                metric,
                total / len(values),
                min(values),
                max(values),
                len(values),
                total,
                values[0],
                values[-1],
            )
        )
    return sorted(out, key=lambda b: (b[0], b[1], b[2]))


def expected_kpis(rows: list[Sample]) -> dict[tuple[str, int], float]:
    live = [(ts, m, v) for ts, m, v, historical in rows if not historical]
    series = {m: sorted((ts, v) for ts, mm, v in live if mm == m) for m in ("ROP", "WOB", "RPM")}
    out: dict[tuple[str, int], float] = {}
    for metric in ("ROP", "WOB"):
        for ts, _ in series[metric]:
            for minutes in (5, 15):
                inside = [v for t, v in series[metric] if ts - minutes * MINUTE_MS < t <= ts]
                out[(f"{metric}_MA{minutes}", ts)] = sum(inside) / len(inside)
    rop, wob, rpm = (dict(series[m]) for m in ("ROP", "WOB", "RPM"))
    for ts, r in rop.items():
        if wob[ts] * rpm[ts] != 0:
            out[("DrillingEfficiency", ts)] = r * 100 / (wob[ts] * rpm[ts] / 1000)
    return out


# -- reading ----------------------------------------------------------------------------------


def _ms(value: dt.datetime) -> int:
    return int(value.replace(tzinfo=dt.UTC).timestamp() * 1000)


def read_rollup(pg_dsn: str, view: MaterializedView, start: int, end: int) -> list[Bucket]:
    params = {
        "site": SITE,
        "node": NODE,
        "start": dt.datetime.fromtimestamp(start / 1000, dt.UTC),
        "end": dt.datetime.fromtimestamp(end / 1000, dt.UTC),
    }
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(queries.rollup(view).encode(), params).fetchall()
    return [(_ms(r[0]), *r[1:]) for r in rows]


def read_series(
    pg_dsn: str, tables: TableSet, bucket: str, tz: str, start: int, end: int
) -> list[Bucket]:
    """``queries.series`` of ROP, as the API runs it."""
    params = {
        "site": SITE,
        "node": NODE,
        "metric": "ROP",
        "tz": tz,
        "start": dt.datetime.fromtimestamp(start / 1000, dt.UTC),
        "end": dt.datetime.fromtimestamp(end / 1000, dt.UTC),
    }
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(queries.series(tables, bucket, tz).encode(), params).fetchall()
    # as rollup buckets without first/last, which a series does not carry
    return [
        (_ms(ts), d, "ROP", avg, lo, hi, n, total, 0.0, 0.0)
        for ts, d, avg, lo, hi, n, total in rows
    ]


def same_buckets(got: list[Bucket], want: list[Bucket]) -> bool:
    if [b[:3] + b[4:] for b in got] != [b[:3] + b[4:] for b in want]:
        return False
    return all(math.isclose(g[3], w[3], rel_tol=1e-12) for g, w in zip(got, want, strict=True))


async def poll(check: Callable[[], bool], within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except psycopg.Error:
            pass  # a view not refreshed for the first time yet
        await asyncio.sleep(0.3)


@pytest.fixture
async def host(mosquitto: Mosquitto, questdb: QuestDB) -> AsyncIterator[tuple[PrimaryHost, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    cfg = IngestConfig(
        mqtt=MqttConfig(port=mosquitto.port),
        questdb=QuestDBConfig(table_prefix=prefix),
        kpi=KpiSettings(group_id=GROUP),
    )
    primary = PrimaryHost(cfg, ilp_conf=questdb.ilp_conf, pg_dsn=questdb.pg_dsn)
    task = asyncio.create_task(primary.run(), name="primary-host")
    assert primary.kpi is not None
    await asyncio.wait_for(primary.kpi.born.wait(), 30)
    yield primary, prefix
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_views_current_values_and_kpis(
    host: tuple[PrimaryHost, str], mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    primary, prefix = host
    tables = TableSet(prefix)
    midnight = NOW() // DAY_MS * DAY_MS
    base = midnight - 40 * MINUTE_MS  # 80 minutes across two hours and two UTC days
    rows = samples(base)
    session = edge_session()

    with SparkplugObserver("127.0.0.1", mosquitto.port) as observer:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=NODE) as pub:
            session.will(0)
            for out in (session.nbirth({}), session.dbirth(DEVICE, {})):
                await pub.publish(str(out.topic), out.payload)
            by_message: dict[tuple[int, bool], list[tuple[int, int, object, int]]]
            by_message = defaultdict(list)
            for ts, metric, value, historical in rows:
                alias = session.metric(DEVICE, metric).alias
                by_message[(ts, historical)].append((alias, ts, value, 0))
            for i, ((_, historical), metrics) in enumerate(sorted(by_message.items())):
                out = session.data(DEVICE, metrics, historical=historical)
                await pub.publish(str(out.topic), out.payload)
                if i % 20 == 19:
                    await asyncio.sleep(0.01)

        # (a) the rollup views hold exactly the expected aggregates
        start, end = midnight - DAY_MS, midnight + DAY_MS
        for view, width in (
            (tables.telemetry_1m, MINUTE_MS),
            (tables.telemetry_1h, HOUR_MS),
            (tables.telemetry_1d, DAY_MS),
        ):
            want = expected_rollup(rows, width)

            def refreshed(v: MaterializedView = view, w: list[Bucket] = want) -> bool:
                return same_buckets(read_rollup(questdb.pg_dsn, v, start, end), w)

            await poll(refreshed)
            got = read_rollup(questdb.pg_dsn, view, start, end)
            assert same_buckets(got, want), (view.name, got[:3], want[:3], len(got), len(want))
        assert ROLLUP_COLUMNS == ("avg", "min", "max", "count", "sum", "first", "last")

        # (a2) series as the API reads them: 1-minute buckets straight from the view's rows
        # (one zone's minutes are another's), wider ones re-sampled on the zone's calendar;
        # Kathmandu (UTC+5:45) puts half-hours and hours at :15 and :45 UTC
        for bucket, width, tz, offset in (
            ("1m", MINUTE_MS, "UTC", 0),
            ("1m", MINUTE_MS, "Asia/Kathmandu", 345 * MINUTE_MS),
            ("30m", 30 * MINUTE_MS, "Asia/Kathmandu", 345 * MINUTE_MS),
            ("1h", HOUR_MS, "Asia/Kathmandu", 345 * MINUTE_MS),
            ("1h", HOUR_MS, "UTC", 0),
        ):
            want = [
                (*b[:8], 0.0, 0.0)
                for b in expected_rollup(rows, width, offset)
                if b[2] == "ROP" and start <= b[0] < end
            ]
            got = read_series(questdb.pg_dsn, tables, bucket, tz, start, end)
            assert same_buckets(got, want), (bucket, tz, got[:3], want[:3], len(got), len(want))

        # the rollup views ingest created are indexed on node: a series or a window of one
        # appliance reads its rows, not whole partitions of the fleet
        for view in (tables.telemetry_1m, tables.telemetry_1h, tables.telemetry_1d):
            sql = f"SELECT \"column\" FROM table_columns('{view.name}') WHERE indexed"
            assert questdb.exec_sql(sql)["dataset"] == [["node"]], view.name

        # (b) current values: each metric's latest sample
        last_live = base + (STEPS - 1) * STEP_MS
        want_current = {
            (DEVICE, m): (v, last_live)
            for ts, m, v, historical in rows
            if ts == last_live and not historical
        }
        with psycopg.connect(questdb.pg_dsn, autocommit=True) as conn:
            since = dt.datetime.fromtimestamp((midnight - DAY_MS) / 1000, dt.UTC)
            current = conn.execute(
                queries.current_values(tables).encode(),
                {"site": SITE, "node": NODE, "since": since},
            ).fetchall()
        assert {(d, m): (v, _ms(t)) for d, m, v, t in current} == want_current

        # (c) KPIs on the wire, with the right values
        want_kpis = expected_kpis(rows)

        def kpis_seen() -> dict[tuple[str, int], float]:
            return {
                (name, ts): v
                for ts, group, _, device, name, v in observer.snapshot()
                if group == GROUP and device == NODE
            }

        await poll(lambda: kpis_seen().keys() >= want_kpis.keys(), within_s=20)
        seen = kpis_seen()
        assert not observer.errors, observer.errors[:5]
        assert observer.counts["DBIRTH"] >= 2  # the edge's and the KPI node's
        assert seen.keys() == want_kpis.keys()
        for key, value in want_kpis.items():
            assert math.isclose(seen[key], value, rel_tol=1e-9), (key, seen[key], value)

    # ... and stored by the Primary Host exactly as published
    sql = (
        f"SELECT metric, ts::long, value FROM {tables.raw.name} "
        f"WHERE site = '{GROUP}' AND device = '{NODE}'"
    )

    def stored() -> dict[tuple[str, int], float]:
        result = questdb.exec_sql(sql)["dataset"]
        return {(m, ts // 1_000_000): v for m, ts, v in result}

    await poll(lambda: stored().keys() >= seen.keys(), within_s=20)
    assert stored() == seen
    assert not [k for k in primary.counters if k.startswith("dead_letters")], primary.counters
    assert primary.kpi is not None and primary.kpi.counters["kpi_dropped"] == 0
