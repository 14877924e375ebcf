"""The registry on real PostgreSQL, and provisioned MQTT credentials on a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiomqtt
import psycopg
import pytest
from psycopg import sql
from questdb import Sender, TimestampNanos

from api import broker_auth, keys, migrate, registry
from api.broker_auth import IssuedPassword
from api.errors import MigrationError, NotFoundError, QuotaError, RegistryError
from core.tables import TableSet
from harness import Mosquitto, Postgres, QuestDB

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def test_migrations_apply_once_and_are_recorded(postgres: Postgres, tmp_path: Path) -> None:
    name = f"mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = postgres.dsn_for(name)
    first = migrate.apply(dsn)
    assert first == [m.name for m in migrate.load()]
    assert migrate.apply(dsn) == []  # idempotent
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert [r[1] for r in rows] == first
    # an applied migration edited afterwards is refused
    edited = tmp_path / "migrations"
    edited.mkdir()
    for m in migrate.load():
        (edited / m.name).write_text(m.sql + "\n-- edited\n", encoding="utf-8")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate.apply(dsn, edited)


def test_keys_are_stored_hashed_and_shown_once(reg_conn: psycopg.Connection) -> None:
    registry_tenant(reg_conn, "acme")
    uid = registry_user(reg_conn, "acme", keys.Role.CUSTOMER_VIEWER)
    issued = registry_key(reg_conn, uid)
    assert "hidden" in repr(issued) and issued.plaintext not in repr(issued)
    row = reg_conn.execute(
        "SELECT secret_sha256 FROM api_keys WHERE key_id = %s", (issued.key_id,)
    ).fetchone()
    assert row is not None and keys.matches(issued.plaintext, bytes(row[0]))
    assert issued.plaintext.encode() not in bytes(row[0])
    assert keys.parse_key_id(issued.plaintext) == issued.key_id
    assert keys.parse_key_id("dk_' OR 1=1 --") is None


def registry_tenant(conn: psycopg.Connection, tenant: str) -> None:
    registry.create_tenant(conn, tenant, tenant.title())


def registry_user(conn: psycopg.Connection, tenant: str, role: keys.Role) -> int:
    return registry.create_user(conn, tenant, f"{uuid.uuid4().hex[:6]}@{tenant}.example", role)


def registry_key(conn: psycopg.Connection, user: int) -> keys.IssuedKey:
    return registry.issue_api_key(conn, user, "test")


def test_registry_refuses_bad_ids(reg_conn: psycopg.Connection) -> None:
    registry_tenant(reg_conn, "acme")
    with pytest.raises(RegistryError):
        registry.create_site(reg_conn, "x17'; DROP TABLE sites; --", "acme")
    with pytest.raises(RegistryError):
        registry.create_site(reg_conn, "s017", "nobody")
    with pytest.raises(RegistryError):
        registry.provision(reg_conn, "s017-b1")
    with pytest.raises(NotFoundError):
        registry.provision(reg_conn, "s999-a001")  # site not registered
    with pytest.raises(NotFoundError):
        registry.retire(reg_conn, "s017-a001")


def test_mosquitto_password_line_matches_mosquitto_format() -> None:
    issued = broker_auth.issue("s017-a042")
    line = broker_auth.mosquitto_password_line(issued.credential)
    user, rest = line.split(":", 1)
    assert user == "s017-a042"
    _, kind, iterations, _salt, _key = rest.split("$")
    assert (kind, int(iterations)) == ("7", broker_auth.ITERATIONS)
    assert broker_auth.verify(issued.credential, issued.password)
    assert not broker_auth.verify(issued.credential, issued.password + "x")
    assert issued.password not in repr(issued)


async def _connects(port: int, user: str, password: str) -> bool:
    try:
        async with aiomqtt.Client("127.0.0.1", port, username=user, password=password, timeout=5):
            return True
    except aiomqtt.MqttError:
        return False


def _provisioned_site(
    reg_conn: psycopg.Connection, tmp_path: Path
) -> tuple[IssuedPassword, IssuedPassword, IssuedPassword, Mosquitto]:
    """Site s101 of tenant acme with s101-a001 and s101-a002 provisioned and the ingest
    service account (their passwords, in that order), and a Mosquitto, not started, on the
    broker files of the registry (written to ``tmp_path/auth``)."""
    registry.create_site(reg_conn, "s101", "acme")
    a1 = registry.provision(reg_conn, "s101-a001")
    a2 = registry.provision(reg_conn, "s101-a002")
    svc = registry.create_service_account(reg_conn, "ingest")
    files = registry.write_broker_files(reg_conn, tmp_path / "auth")
    broker = Mosquitto(
        tmp_path / "mosquitto",
        insecure_allow_anonymous=False,
        password_file=files["mosquitto.passwd"],
        acl_file=files["mosquitto.acl"],
    )
    return a1, a2, svc, broker


@pytest.mark.asyncio
async def test_provisioned_node_is_confined_to_its_topics_and_retired_node_is_locked_out(
    reg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    registry_tenant(reg_conn, "acme")
    registry.create_site(reg_conn, "s102", "acme")
    a1, a2, svc, broker = _provisioned_site(reg_conn, tmp_path)
    with broker:
        port = broker.port
        assert not await _connects(port, "s101-a001", a2.password)  # another node's password
        assert not await _connects(port, "intruder", "x")
        seen: list[str] = []
        async with aiomqtt.Client(
            "127.0.0.1", port, username="ingest", password=svc.password
        ) as host:
            await host.subscribe("spBv1.0/#")
            async with aiomqtt.Client(
                "127.0.0.1", port, username="s101-a001", password=a1.password
            ) as node:
                await node.subscribe("spBv1.0/s101/NCMD/s101-a001")
                await node.subscribe("spBv1.0/STATE/+")
                for topic in (
                    "spBv1.0/s101/NDATA/s101-a002",  # a neighbour's node topic
                    "spBv1.0/s101/DDATA/s101-a002/daq",
                    "spBv1.0/s102/NDATA/s101-a001",  # another site
                    "spBv1.0/STATE/derrick",  # only the Primary Host may declare STATE
                    "spBv1.0/s101/NDATA/s101-a001",  # its own: these two arrive
                    "spBv1.0/s101/DDATA/s101-a001/daq",
                ):
                    await node.publish(topic, b"x", qos=1)
                await host.publish("spBv1.0/s101/NCMD/s101-a001", b"cmd", qos=1)
                received = await anext(aiter(node.messages))
                assert str(received.topic) == "spBv1.0/s101/NCMD/s101-a001"

                async def collect() -> None:
                    async for message in host.messages:
                        seen.append(str(message.topic))
                        if str(message.topic).endswith("/daq"):
                            return

                await asyncio.wait_for(collect(), 10)
        assert seen == [
            "spBv1.0/s101/NDATA/s101-a001",
            "spBv1.0/s101/DDATA/s101-a001/daq",
        ]

        registry.retire(reg_conn, "s101-a001")
        registry.write_broker_files(reg_conn, tmp_path / "auth")
        broker.reload()
        await asyncio.sleep(0.5)
        assert not await _connects(port, "s101-a001", a1.password)
        assert await _connects(port, "s101-a002", a2.password)

        # rotation (docs/runbooks/rotate-credentials.md): re-provisioning an appliance and
        # re-issuing a service account; after broker-files + SIGHUP only the new ones work
        a2_new = registry.provision(reg_conn, "s101-a002")
        svc_new = registry.create_service_account(reg_conn, "ingest")
        assert a2_new.password != a2.password and svc_new.password != svc.password
        registry.write_broker_files(reg_conn, tmp_path / "auth")
        broker.reload()
        await asyncio.sleep(0.5)
        assert not await _connects(port, "s101-a002", a2.password)
        assert await _connects(port, "s101-a002", a2_new.password)
        assert not await _connects(port, "ingest", svc.password)
        assert await _connects(port, "ingest", svc_new.password)
    states = registry.appliance_states(reg_conn, ["s101-a001", "s101-a002"])
    assert states == {"s101-a001": "retired", "s101-a002": "provisioned"}


@pytest.mark.asyncio
async def test_a_node_retired_while_connected_can_no_longer_publish(
    reg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    """Retiring revokes at the broker at once, not at the node's next connect: after
    broker-files and a reload, what the still-connected node publishes on its own topics no
    longer reaches the Primary Host, while a neighbour's does."""
    registry_tenant(reg_conn, "acme")
    a1, a2, svc, broker = _provisioned_site(reg_conn, tmp_path)
    with broker:
        port = broker.port
        async with (
            aiomqtt.Client("127.0.0.1", port, username="ingest", password=svc.password) as host,
            aiomqtt.Client("127.0.0.1", port, username="s101-a002", password=a2.password) as a002,
        ):
            await host.subscribe("spBv1.0/#", qos=1)
            seen: list[str] = []

            async def until(topic: str) -> None:
                async for message in host.messages:
                    seen.append(str(message.topic))
                    if str(message.topic) == topic:
                        return

            retired_node = aiomqtt.Client(
                "127.0.0.1", port, username="s101-a001", password=a1.password
            )
            async with retired_node as a001:
                await a001.publish("spBv1.0/s101/NDATA/s101-a001", b"before", qos=1)
                await asyncio.wait_for(until("spBv1.0/s101/NDATA/s101-a001"), 10)
                registry.retire(reg_conn, "s101-a001")
                registry.write_broker_files(reg_conn, tmp_path / "auth")
                broker.reload()
                await asyncio.sleep(1.0)
                seen.clear()
                with contextlib.suppress(aiomqtt.MqttError):  # refused, or disconnected
                    await a001.publish("spBv1.0/s101/NDATA/s101-a001", b"after", qos=1)
                    await a001.publish("spBv1.0/s101/DDATA/s101-a001/daq", b"after", qos=1)
                # a marker from the neighbour, published after: once it arrived, anything
                # the retired node got through would have arrived before it
                await a002.publish("spBv1.0/s101/NDATA/s101-a002", b"marker", qos=1)
                await asyncio.wait_for(until("spBv1.0/s101/NDATA/s101-a002"), 10)
    assert seen == ["spBv1.0/s101/NDATA/s101-a002"]


def test_catalogue_sync_follows_rebirths(reg_conn: psycopg.Connection, questdb: QuestDB) -> None:
    """A later birth that changes a metric's unit and hot flag and adds a metric: the next
    sync updates the one and adds the other; the appliance's first birth stays, its last
    moves; a node of an unregistered site is counted and skipped; a third sync changes
    nothing."""
    registry_tenant(reg_conn, "acme")
    registry.create_site(reg_conn, "s101", "acme")
    tables = TableSet(f"c{uuid.uuid4().hex[:8]}_")
    for statement in tables.create_statements():
        questdb.exec_sql(statement)
    t1 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    t2 = t1 + dt.timedelta(days=3)

    def born(rows: list[tuple[str, str, str, bool, dt.datetime]]) -> None:
        with Sender.from_conf(questdb.ilp_conf) as sender:
            for node, metric, unit, hot, at in rows:
                sender.row(
                    tables.catalogue.name,
                    symbols={"site": node[:4], "node": node, "device": "daq", "metric": metric,
                             "datatype": "Double", "unit": unit},
                    columns={"hot": hot},
                    at=TimestampNanos(int(at.timestamp()) * 1_000_000_000),
                )  # fmt: skip
            sender.flush()

    def sync() -> tuple[registry.SyncReport, list[tuple[object, ...]]]:
        with psycopg.connect(questdb.pg_dsn, autocommit=True) as q:
            report = registry.sync_catalogue(reg_conn, q, tables)
        rows = reg_conn.execute(
            "SELECT m.name, m.unit, m.hot, a.first_seen, a.last_birth FROM metrics m"
            " JOIN appliances a ON a.id = m.appliance_id ORDER BY m.name"
        ).fetchall()
        return report, rows

    def applied(n: int) -> None:
        deadline = time.monotonic() + 30
        while questdb.exec_sql(f"SELECT count() FROM {tables.catalogue.name}")["dataset"] != [[n]]:
            assert time.monotonic() < deadline, "catalogue rows not applied"
            time.sleep(0.2)

    born([("s101-a001", "ROP", "ft/h", True, t1), ("s999-a001", "ROP", "ft/h", True, t1)])
    applied(2)
    report, rows = sync()
    assert (report.metrics, report.skipped_unknown_site) == (1, 1)
    assert rows == [("ROP", "ft/h", True, t1, t1)]
    born([("s101-a001", "ROP", "m/h", False, t2), ("s101-a001", "WOB", "klbf", True, t2)])
    applied(4)
    report, rows = sync()
    assert rows == [("ROP", "m/h", False, t1, t2), ("WOB", "klbf", True, t1, t2)]
    assert sync()[1] == rows


def test_tenant_appliance_quota_refuses_provisioning_over_it(
    reg_conn: psycopg.Connection, registry_dsn: str
) -> None:
    registry.create_tenant(reg_conn, "quota", "Quota Drilling", max_appliances=2)
    registry.create_site(reg_conn, "s301", "quota")
    registry.create_site(reg_conn, "s302", "quota")
    registry_tenant(reg_conn, "other")  # no quota
    registry.create_site(reg_conn, "s303", "other")
    registry.provision(reg_conn, "s301-a001")
    registry.provision(reg_conn, "s302-a001")  # the quota counts across the tenant's sites
    with pytest.raises(QuotaError) as refused:
        registry.provision(reg_conn, "s301-a002")
    assert str(refused.value) == (
        "cannot provision s301-a002: tenant quota has 2 appliance(s) provisioned and a quota "
        "of 2; retire one, or raise the quota with "
        "'python -m api tenant-limits quota --max-appliances N'"
    )

    def states() -> dict[str, str]:
        rows = reg_conn.execute("SELECT id, state FROM appliances ORDER BY id").fetchall()
        return dict(rows)

    assert states() == {"s301-a001": "provisioned", "s302-a001": "provisioned"}  # nothing half-done
    registry.provision(reg_conn, "s301-a001")  # rotating a provisioned one's password: allowed
    for i in range(1, 6):
        registry.provision(reg_conn, f"s303-a00{i}")  # another tenant's count is its own
    registry.retire(reg_conn, "s302-a001")
    registry.provision(reg_conn, "s301-a002")  # a retired one frees its place

    # lowered under what is provisioned: nothing retired, new ones refused
    registry.set_tenant_limits(reg_conn, "quota", max_appliances=1)
    assert states()["s301-a002"] == "provisioned"
    with pytest.raises(QuotaError, match=r"has 2 appliance\(s\) provisioned and a quota of 1"):
        registry.provision(reg_conn, "s302-a001")
    registry.set_tenant_limits(reg_conn, "quota", max_appliances=registry.NO_QUOTA)
    registry.provision(reg_conn, "s302-a001")
    with pytest.raises(NotFoundError, match="tenant 'nobody'"):
        registry.set_tenant_limits(reg_conn, "nobody", max_appliances=3)
    with pytest.raises(RegistryError):
        registry.set_tenant_limits(reg_conn, "quota", max_appliances=-5)


def test_concurrent_provisioning_cannot_overrun_the_quota(
    reg_conn: psycopg.Connection, registry_dsn: str
) -> None:
    """Eight connections provision eight appliances at once for a tenant with three places
    left: exactly three get credentials (the tenant's row is locked while counting)."""
    registry.create_tenant(reg_conn, "race", "Race Drilling", max_appliances=4)
    registry.create_site(reg_conn, "s401", "race")
    registry.provision(reg_conn, "s401-a001")
    barrier = threading.Barrier(8)

    def provision(i: int) -> str:
        with psycopg.connect(registry_dsn, autocommit=True) as conn:
            barrier.wait(timeout=30)
            try:
                registry.provision(conn, f"s401-a1{i:02d}")
            except QuotaError:
                return "refused"
            return "provisioned"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(provision, range(8)))
    assert sorted(outcomes) == ["provisioned"] * 3 + ["refused"] * 5
    count = reg_conn.execute(
        "SELECT count(*) FROM appliances a JOIN mqtt_credentials c ON c.appliance_id = a.id "
        "WHERE a.site_id = 's401' AND a.state = 'provisioned'"
    ).fetchone()
    assert count == (4,)


def test_tenant_limits_command(registry_dsn: str, reg_conn: psycopg.Connection) -> None:
    env = {**os.environ, "DERRICK_PG_DSN": registry_dsn}

    def api(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    assert api("tenant", "cli", "CLI Drilling", "--max-appliances", "1").returncode == 0
    assert api("site", "s501", "cli").returncode == 0
    assert api("provision", "s501-a001").returncode == 0
    refused = api("provision", "s501-a002")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: cannot provision s501-a002: tenant cli has 1 appliance(s) provisioned and a "
        "quota of 1; retire one, or raise the quota with "
        "'python -m api tenant-limits cli --max-appliances N'"
    )
    done = api("tenant-limits", "cli", "--max-appliances", "2", "--rate-per-s", "7.5")
    assert done.returncode == 0, done.stderr
    assert api("provision", "s501-a002").returncode == 0
    row = reg_conn.execute(
        "SELECT max_appliances, rate_per_s, burst FROM tenants WHERE id = 'cli'"
    ).fetchone()
    assert row == (2, 7.5, 200)
    assert api("tenant-limits", "cli", "--no-appliance-quota").returncode == 0
    assert api("provision", "s501-a003").returncode == 0
    missing = api("tenant-limits", "nobody", "--burst", "5")
    assert missing.returncode == 1 and "tenant 'nobody' is not registered" in missing.stderr

    # an API key rotated from the command line: a new one printed once, the old revoked
    user = api("user", "cli", "ops@cli.example", "customer_admin")
    assert user.returncode == 0, user.stderr
    old = api("key", user.stdout.strip()).stdout.strip()
    new = api("key", user.stdout.strip()).stdout.strip()
    old_id, new_id = keys.parse_key_id(old), keys.parse_key_id(new)
    assert old_id and new_id and old_id != new_id
    revoked = api("revoke-key", old_id)
    assert revoked.returncode == 0, revoked.stderr
    assert old not in revoked.stdout + revoked.stderr
    rows = dict(reg_conn.execute("SELECT key_id, revoked_at IS NOT NULL FROM api_keys").fetchall())
    assert rows == {old_id: True, new_id: False}
    again = api("revoke-key", old_id)
    assert again.returncode == 1 and f"no active API key '{old_id}'" in again.stderr
