"""Vendor datasets: only the shared component types of the sites shared with the vendor (two
customers' sites, on a world of their own), numbers equal to those computed here from the
samples written, identities pseudonymised consistently per site and appliance, and no
customer identifier anywhere in the Parquet bytes or its decoded values."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple

import psycopg
import pyarrow.parquet as pq
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg import sql
from questdb import Sender, TimestampMicros, TimestampNanos

from api import keys, migrate, registry
from core.pseudonym import Pseudonymiser
from core.tables import TableSet
from harness import Postgres, QuestDB

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


# -- a world of its own: two customers' sites shared with the vendor ---------------------------

SHARE_START, SHARE_END = dt.date(2026, 10, 1), dt.date(2026, 10, 6)  # the dataset: 5 days


class Appliance(NamedTuple):
    """An appliance of the vendor world: its site, its device (named after a customer's data
    source, as OPC UA servers are), a value base and a sampling step, so that every
    (appliance, day) has numbers no other one has."""

    id: str
    site: str
    device: str
    base: int
    step_min: int


TENANTS = {"acme": "Acme Drilling", "bolt": "Bolt Energy"}
SITES = {  # site -> (tenant, name, shared with "vend")
    "s401": ("acme", "North pad", True),
    "s402": ("acme", "Quarry pad", False),  # shared with another vendor only
    "s403": ("bolt", "South pad", True),
}
APPLIANCES = (  # (appliance, device) pairs: s401-a002 has two devices (two mud pumps)
    Appliance("s401-a001", "s401", "acme-opc", 100, 60),
    Appliance("s401-a002", "s401", "acme-opc", 200, 30),
    Appliance("s401-a002", "s401", "acme-pump-2", 250, 30),
    Appliance("s402-a001", "s402", "acme-plc", 300, 60),
    Appliance("s403-a001", "s403", "bolt-scada", 400, 20),
)


def reading(a: Appliance, metric: str, t: dt.datetime) -> float:
    """Whole numbers (so every sum is exact and ``sum / count`` is the one double a rollup
    gives), apart per appliance, metric and day."""
    return float(a.base + (0 if metric == "ROP" else 1000) + t.day % 10 * 10 + t.hour % 5)


def vendor_samples() -> Iterator[tuple[Appliance, str, dt.datetime]]:
    """ROP (component 'drilling', shared) and WOB ('drawworks', not shared) of every
    appliance, from the day before the dataset to the day after it."""
    first = dt.datetime.combine(SHARE_START - dt.timedelta(days=1), dt.time(), dt.UTC)
    for a in APPLIANCES:
        for metric in ("ROP", "WOB"):
            for k in range(7 * 24 * 60 // a.step_min):
                yield a, metric, first + dt.timedelta(minutes=k * a.step_min + 7)


def expected_rows() -> dict[tuple[str, str, dt.date], tuple[float, float, float, int]]:
    """(appliance, device, day) -> (avg, min, max, count) of ROP on the shared sites in the
    dataset's days, from :func:`vendor_samples` alone."""
    values: dict[tuple[str, str, dt.date], list[float]] = defaultdict(list)
    for a, metric, t in vendor_samples():
        if metric == "ROP" and SITES[a.site][2] and SHARE_START <= t.date() < SHARE_END:
            values[(a.id, a.device, t.date())].append(reading(a, metric, t))
    return {k: (sum(v) / len(v), min(v), max(v), len(v)) for k, v in values.items()}


class VendorWorld(NamedTuple):
    client: AsyncTestClient[Litestar]
    vendor_key: str


def _write_vendor_data(questdb: QuestDB, tables: TableSet) -> int:
    received = TimestampMicros(int(time.time() * 1_000_000))
    n = 0
    with Sender.from_conf(questdb.ilp_conf) as sender:
        for a, metric, t in vendor_samples():
            sender.row(
                tables.raw.name,
                symbols={"site": a.site, "node": a.id, "device": a.device, "metric": metric},
                columns={"value": reading(a, metric, t), "hot": True, "historical": False,
                         "received": received},
                at=TimestampNanos(int(t.timestamp()) * 1_000_000_000),
            )  # fmt: skip
            n += 1
        for a in APPLIANCES:
            for metric, unit in (("ROP", "ft/h"), ("WOB", "klbf")):
                sender.row(
                    tables.catalogue.name,
                    symbols={"site": a.site, "node": a.id, "device": a.device, "metric": metric,
                             "datatype": "Double", "unit": unit},
                    columns={"hot": True},
                    at=TimestampNanos(int(dt.datetime(2026, 9, 1, tzinfo=dt.UTC).timestamp())
                                      * 1_000_000_000),
                )  # fmt: skip
        sender.flush()
    return n


@pytest.fixture(scope="module")
def vendor_registry(
    _postgres_server: Postgres, _questdb_server: QuestDB
) -> Iterator[tuple[str, TableSet, str]]:
    """Registry database, QuestDB tables and the vendor's key of the vendor world."""
    name = f"reg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_postgres_server.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _postgres_server.dsn_for(name)
    migrate.apply(dsn)
    tables = TableSet(f"v{uuid.uuid4().hex[:8]}_")
    for statement in tables.create_statements():
        _questdb_server.exec_sql(statement)
    w.wait_for_daily(_questdb_server, tables, _write_vendor_data(_questdb_server, tables))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tenant, tenant_name in TENANTS.items():
            registry.create_tenant(conn, tenant, tenant_name)
        registry.create_tenant(conn, "vend", "Mud Vendor", "vendor")
        registry.create_tenant(conn, "vend2", "Pump Vendor", "vendor")
        for site, (tenant, site_name, shared) in SITES.items():
            registry.create_site(conn, site, tenant, site_name)
            registry.share_site(conn, site, "vend" if shared else "vend2")
        for vendor in ("vend", "vend2"):
            conn.execute("INSERT INTO vendor_component_shares VALUES (%s, 'drilling')", (vendor,))
        with psycopg.connect(_questdb_server.pg_dsn, autocommit=True) as q:
            synced = registry.sync_catalogue(conn, q, tables).appliances
            assert synced == len({a.id for a in APPLIANCES})
        uid = registry.create_user(conn, "vend", "analyst@vend.example", keys.Role.VENDOR)
        key = registry.issue_api_key(conn, uid, "vendor").plaintext
    yield dsn, tables, key
    with psycopg.connect(_postgres_server.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def vendor_world(
    vendor_registry: tuple[str, TableSet, str], questdb: QuestDB
) -> AsyncIterator[VendorWorld]:
    dsn, tables, key = vendor_registry
    now = dt.datetime(2026, 10, 20, tzinfo=dt.UTC)
    async with AsyncTestClient(w.make_app(w.World(dsn, tables, now), questdb)) as c:
        yield VendorWorld(c, key)


# every identifier of the customers: tenants, their names, sites, site names, appliances (and
# their local part), devices
IDENTIFIERS = (
    *TENANTS,
    *TENANTS.values(),
    *SITES,
    *(name for _, name, _ in SITES.values()),
    *(a.id for a in APPLIANCES),
    "a001",
    "a002",
    *(a.device for a in APPLIANCES),
)


async def test_vendor_dataset_of_two_customers_sites_pseudonymised_without_identifiers(
    vendor_world: VendorWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    window = {"start": str(SHARE_START), "end": str(SHARE_END)}
    r = await vendor_world.client.get(
        "/v1/vendor/datasets/daily",
        params=window,
        headers={"Authorization": f"Bearer {vendor_world.vendor_key}"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.apache.parquet")
    data = r.content
    parquet = pq.ParquetFile(io.BytesIO(data))
    table = parquet.read()
    assert table.column_names == ["site", "appliance", "device", "component_type", "metric",
                                  "day", "avg", "min", "max", "count"]  # fmt: skip
    rows = table.to_pylist()

    # which (appliance, device) each row is: its day and numbers belong to exactly one
    # (appliance, device, day) of the shared sites; every one of those is there once (the two
    # devices of s401-a002 as two rows a day); nothing of s402 (shared with another vendor),
    # of WOB (not a shared component) or outside the window
    expected = expected_rows()
    by_numbers = {(day, *numbers): (a, d) for (a, d, day), numbers in expected.items()}
    assert len(by_numbers) == len(expected)  # the numbers tell the series apart
    truth: list[tuple[str, str]] = []
    for row in rows:
        assert (row["component_type"], row["metric"]) == ("drilling", "ROP"), row
        key = (row["day"], row["avg"], row["min"], row["max"], row["count"])
        assert key in by_numbers, row
        truth.append(by_numbers[key])
    got = sorted((a, d, row["day"]) for (a, d), row in zip(truth, rows, strict=True))
    assert got == sorted(expected)
    sites_of = {a.id: a.site for a in APPLIANCES}

    # one pseudonym per site and per appliance, the same in every row, distinct between them;
    # an appliance's rows all carry its own site's pseudonym
    site_names: dict[str, set[str]] = defaultdict(set)
    appliance_names: dict[str, set[str]] = defaultdict(set)
    device_names: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row, (appliance, device) in zip(rows, truth, strict=True):
        site_names[sites_of[appliance]].add(row["site"])
        appliance_names[appliance].add(row["appliance"])
        device_names[(appliance, device)].add(row["device"])
    assert sorted(site_names) == ["s401", "s403"]  # two customers' sites
    assert sorted(appliance_names) == ["s401-a001", "s401-a002", "s403-a001"]
    assert len(device_names) == 4  # a001's device, a002's two, s403-a001's
    assert all(
        len(names) == 1
        for names in (*site_names.values(), *appliance_names.values(), *device_names.values())
    )
    device_pseudonym = {k: next(iter(names)) for k, names in device_names.items()}
    assert len(set(device_pseudonym.values())) == 4
    site_pseudonym = {site: next(iter(names)) for site, names in site_names.items()}
    appliance_pseudonym = {a: next(iter(names)) for a, names in appliance_names.items()}
    assert len(set(site_pseudonym.values())) == 2
    assert len(set(appliance_pseudonym.values())) == 3
    assert not set(site_pseudonym.values()) & set(appliance_pseudonym.values())

    # the documented keyed scheme: the key reproduces them, a bare hash or another key does not
    p = Pseudonymiser(w.VENDOR_KEY, f"vend|daily|{SHARE_START}|{SHARE_END}")
    assert site_pseudonym == {site: p("site", site) for site in site_pseudonym}
    assert appliance_pseudonym == {a: p("appliance", a) for a in appliance_pseudonym}
    assert device_pseudonym == {(a, d): p("device", f"{a}/{d}") for a, d in device_pseudonym}
    other = Pseudonymiser(b"another-key-of-at-least-thirty-two-bytes", "vend|daily")
    for site, pseudonym in site_pseudonym.items():
        assert hashlib.sha256(site.encode()).hexdigest()[:16] not in pseudonym
        assert other("site", site) != pseudonym

    # no customer identifier anywhere: in the bytes (data pages, statistics, footer), in any
    # decoded value, in the schema, the metadata or the row groups' statistics
    decoded = [str(v) for column in table.columns for v in column.to_pylist()]
    footer = [str(parquet.schema_arrow), str(parquet.metadata.metadata)]
    for g in range(parquet.metadata.num_row_groups):
        group = parquet.metadata.row_group(g)
        for c in range(group.num_columns):
            stats = group.column(c).statistics
            if stats is not None and stats.has_min_max:
                footer += [str(stats.min), str(stats.max)]
    text = "\n".join(decoded + footer).lower()
    for needle in IDENTIFIERS:
        assert needle.encode() not in data and needle.lower().encode() not in data, needle
        assert needle.lower() not in text, needle
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
