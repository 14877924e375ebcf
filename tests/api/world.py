"""A small known world for the endpoint tests: two customer tenants, a vendor, two sites,
hourly ROP/WOB samples for 16 days, births in the catalogue, KPIs; registry synced."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from litestar import Litestar
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from questdb import Sender, TimestampMicros, TimestampNanos

from api import keys, migrate, registry
from api.access import Access
from api.app import Services, create_app
from api.live import LiveFeed
from api.readings import Reader
from core.tables import TableSet
from harness import Postgres, QuestDB

DAYS = 16
NODES = {"s201-a001": "s201", "s202-a001": "s202"}
KPI_GROUP = "derrick-cloud"
VENDOR_KEY = b"vendor-pseudonym-key-for-tests-only-0123456789"


def value(metric: str, hour_index: int) -> float:
    return float(10 + hour_index % 7) if metric == "ROP" else float(20 + hour_index % 5)


def sample_times(now: dt.datetime) -> list[tuple[int, dt.datetime]]:
    """(hour index, sample time): one sample at hh:30 for every hour of the last DAYS days."""
    top = now.replace(minute=30, second=0, microsecond=0)
    if top > now:
        top -= dt.timedelta(hours=1)
    return [(i, top - dt.timedelta(hours=i)) for i in range(DAYS * 24)]


@dataclass
class World:
    registry_dsn: str
    tables: TableSet
    now: dt.datetime
    keys: dict[str, str] = field(default_factory=dict)  # name -> plaintext
    times: list[tuple[int, dt.datetime]] = field(default_factory=list)


def build(postgres: Postgres, questdb: QuestDB) -> Iterator[World]:
    name = f"reg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = postgres.dsn_for(name)
    migrate.apply(dsn)
    tables = TableSet(f"t{uuid.uuid4().hex[:8]}_")
    for statement in tables.create_statements():
        questdb.exec_sql(statement)
    now = dt.datetime.now(dt.UTC)
    world = World(dsn, tables, now, times=sample_times(now))
    _write(questdb, tables, world)
    _wait_for_views(questdb, tables, expected=len(world.times) * 2 * len(NODES))
    with psycopg.connect(dsn, autocommit=True) as conn:
        roomy = {"rate_per_s": 1000.0, "burst": 1000}
        registry.create_tenant(conn, "acme", "Acme Drilling", **roomy)
        registry.create_tenant(conn, "bolt", "Bolt Energy", **roomy)
        registry.create_tenant(conn, "vend", "Mud Vendor", "vendor", **roomy)
        registry.create_tenant(conn, "derrick", "Derrick Ops", "operator", **roomy)
        registry.create_tenant(conn, "tight", "Tight Budget", rate_per_s=0.2, burst=4)
        registry.create_site(conn, "s201", "acme", "North pad", "America/Chicago")
        registry.create_site(conn, "s202", "bolt", "South pad", "UTC")
        registry.share_site(conn, "s202", "vend")
        with psycopg.connect(questdb.pg_dsn, autocommit=True) as q:
            report = registry.sync_catalogue(conn, q, tables)
        assert report.appliances == 2, report
        registry.provision(conn, "s201-a001")
        for key_name, tenant, role, rate in (
            ("acme", "acme", keys.Role.CUSTOMER_VIEWER, 1000.0),
            ("acme_admin", "acme", keys.Role.CUSTOMER_ADMIN, 1000.0),
            ("bolt", "bolt", keys.Role.CUSTOMER_VIEWER, 1000.0),
            ("vendor", "vend", keys.Role.VENDOR, 1000.0),
            ("ops", "derrick", keys.Role.OPS, 1000.0),
            ("slow", "acme", keys.Role.CUSTOMER_VIEWER, 0.2),
            ("tight1", "tight", keys.Role.CUSTOMER_VIEWER, 1000.0),
            ("tight2", "tight", keys.Role.CUSTOMER_VIEWER, 1000.0),
        ):
            uid = registry.create_user(conn, tenant, f"{key_name}@{tenant}.example", role)
            burst = 3 if key_name == "slow" else 1000
            issued = registry.issue_api_key(conn, uid, key_name, rate_per_s=rate, burst=burst)
            world.keys[key_name] = issued.plaintext
    yield world
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _ns(t: dt.datetime) -> TimestampNanos:
    return TimestampNanos(int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000)


def _write(questdb: QuestDB, tables: TableSet, world: World) -> None:
    received = TimestampMicros(int(time.time() * 1_000_000))
    with Sender.from_conf(questdb.ilp_conf) as sender:
        for node, site in NODES.items():
            for i, t in world.times:
                for metric in ("ROP", "WOB"):
                    sender.row(
                        tables.raw.name,
                        symbols={"site": site, "node": node, "device": "daq", "metric": metric},
                        columns={
                            "value": value(metric, i),
                            "hot": True,
                            "historical": False,
                            "received": received,
                        },
                        at=_ns(t),
                    )
            for metric, unit in (("ROP", "ft/h"), ("WOB", "klbf")):
                sender.row(
                    tables.catalogue.name,
                    symbols={
                        "site": site,
                        "node": node,
                        "device": "daq",
                        "metric": metric,
                        "datatype": "Double",
                        "unit": unit,
                    },
                    columns={"hot": True},
                    at=_ns(world.now - dt.timedelta(days=DAYS)),
                )
            for k in range(6):  # KPIs, stored under the KPI node's group
                sender.row(
                    tables.raw.name,
                    symbols={
                        "site": KPI_GROUP,
                        "node": "kpi-w0",
                        "device": node,
                        "metric": "DrillingEfficiency",
                    },
                    columns={
                        "value": 40.0 + k,
                        "hot": True,
                        "historical": False,
                        "received": received,
                    },
                    at=_ns(world.now - dt.timedelta(minutes=10 * k + 1)),
                )
        sender.flush()


def _wait_for_views(questdb: QuestDB, tables: TableSet, expected: int) -> None:
    deadline = time.monotonic() + 90
    sql_1h = f"SELECT sum(count) FROM {tables.telemetry_1h.name} WHERE site IN ('s201', 's202')"
    sql_latest = f"SELECT count() FROM {tables.latest.name}"
    got: Any = None
    while time.monotonic() < deadline:
        try:
            got = questdb.exec_sql(sql_1h)["dataset"][0][0]
            latest = questdb.exec_sql(sql_latest)["dataset"][0][0]
            if got == expected and latest:
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"views not refreshed: {got} of {expected} samples in the 1h view")


def wait_for_daily(
    questdb: QuestDB, tables: TableSet, expected: int, site: str | None = None
) -> None:
    """Wait (90 s at most) until the daily view counts ``expected`` samples (of ``site``)."""
    where = "" if site is None else f" WHERE site = '{site}'"
    q = f"SELECT sum(count) FROM {tables.telemetry_1d.name}{where}"
    deadline, got = time.monotonic() + 90, None
    while time.monotonic() < deadline:
        got = questdb.exec_sql(q)["dataset"][0][0]
        if got == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"daily view holds {got} of {expected} samples")


def make_app(world: World, questdb: QuestDB, live: LiveFeed | None = None) -> Litestar:
    pg: AsyncConnectionPool[Any] = AsyncConnectionPool(
        world.registry_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    qdb: AsyncConnectionPool[Any] = AsyncConnectionPool(
        questdb.pg_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    reader = Reader(qdb, world.tables, KPI_GROUP)
    return create_app(
        Services(
            Access(pg),
            reader,
            pools=[pg, qdb],
            live=live,
            clock=lambda: world.now,
            vendor_key=VENDOR_KEY,
        )
    )
