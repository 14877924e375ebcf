"""Fixtures of the alert service tests: a migrated registry with one customer site, and a
Sparkplug edge node that the test drives by hand (exact values at exact times)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from api import migrate, registry
from core.sparkplug import DataType, decode_state
from core.sparkplug.session import EdgeNodeSession, MetricDef
from harness import Mosquitto, Postgres, QuestDB
from harness.derrick import ingest_process

SITE, APPLIANCE = "s301", "s301-a001"
METRICS = ("SPP", "ROP", "WOB", "RPM")


@pytest.fixture
def registry_dsn(postgres: Postgres) -> Iterator[str]:
    name = f"reg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = postgres.dsn_for(name)
    migrate.apply(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        registry.create_tenant(conn, "acme", "Acme Drilling")
        registry.create_site(conn, SITE, "acme", "North pad", "UTC")
    yield dsn
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def registry_pool(registry_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        registry_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    async with pool:
        yield pool


_last_ms = [0]


def now_ms() -> int:
    """Wall-clock ms, strictly increasing: a sample's timestamp is its identity (the
    engine judges a (metric, ts) once, QuestDB keeps one row per (metric, ts)), so two
    samples sent within one millisecond would otherwise be one."""
    _last_ms[0] = max(_last_ms[0] + 1, time.time_ns() // 1_000_000)
    return _last_ms[0]


class HandNode:
    """One Sparkplug edge node (device ``daq`` with SPP, ROP, WOB, RPM) on a real broker."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        defs = [
            MetricDef(i + 1, "daq", m, DataType.Double, hot=True) for i, m in enumerate(METRICS)
        ]
        self.session = EdgeNodeSession(
            group_id=SITE, edge_node_id=APPLIANCE, metrics=defs, clock=now_ms
        )
        self.alias = {m: i + 1 for i, m in enumerate(METRICS)}
        self.bdseq = 0

    async def birth(self) -> None:
        self.session.will(self.bdseq)
        self.bdseq += 1
        for out in (self.session.nbirth({}), self.session.dbirth("daq", {})):
            await self.client.publish(str(out.topic), out.payload, qos=0)

    async def send(self, ts: int, **values: float) -> None:
        samples = [(self.alias[k], ts, v, 0) for k, v in values.items()]
        out = self.session.data("daq", samples, historical=False)
        await self.client.publish(str(out.topic), out.payload, qos=0)

    async def death(self) -> None:
        out = self.session.ndeath()
        await self.client.publish(str(out.topic), out.payload, qos=1)


@pytest.fixture
async def hand_node(mosquitto: Mosquitto) -> AsyncIterator[HandNode]:
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="hand-node") as client:
        yield HandNode(client)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}_"


@pytest.fixture
async def ingest(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB, prefix: str
) -> AsyncIterator[None]:
    """An ingest worker, online (its STATE says so) before the test's node is born."""
    proc = ingest_process(
        tmp_path / "ingest",
        mqtt_port=mosquitto.port,
        ilp_conf=questdb.ilp_conf,
        pg_dsn=questdb.pg_dsn,
        table_prefix=prefix,
        extra="[kpi]\nfreshness_ms = 5000\n",
    )
    proc.start()
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="state-watch") as c:
            await c.subscribe("spBv1.0/STATE/derrick", qos=1)
            async with asyncio.timeout(60):
                async for message in c.messages:
                    if decode_state(bytes(message.payload)).online:
                        break
        yield
    finally:
        proc.stop()
