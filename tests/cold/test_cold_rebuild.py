"""Disaster recovery: a day dropped from QuestDB is rebuilt from the audit archive, row for row.

A real Primary Host (in-process, ``[audit] directory`` set) receives a hand-made node's births
and data over real Mosquitto: numbers and strings, for yesterday (buffered data arriving
late) and for today. Yesterday's partitions are dropped; ``python -m cold rebuild`` replays
the archive through the ingest worker's own code; yesterday's rows come back identical,
today's are untouched, and the views the drop invalidated are valid again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from core.sparkplug import DataType, Metric, Payload, PropertyValue, encode_payload
from harness import Mosquitto, QuestDB
from ingest.config import (
    AuditSettings,
    IngestConfig,
    IngestSettings,
    KpiSettings,
    MqttConfig,
    QuestDBConfig,
)
from ingest.host import PrimaryHost

from .world import cold_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.asyncio]

SITE, NODE = "s201", "s201-a001"
RAW_COLUMNS = "ts, site, node, device, metric, value, hot, historical"
EVENT_COLUMNS = "ts, site, node, device, metric, datatype, value, historical"


def ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def births() -> list[tuple[str, bytes]]:
    now = ms(datetime.now(UTC))
    base = f"spBv1.0/{SITE}"
    nbirth = Payload(
        timestamp=now,
        seq=0,
        metrics=[
            Metric(name="bdSeq", datatype=DataType.Int64, value=0, timestamp=now),
            Metric(
                name="Node Control/Rebirth", datatype=DataType.Boolean, value=False, timestamp=now
            ),
        ],
    )
    hot = {
        "hot": PropertyValue(DataType.Boolean, True),
        "engUnit": PropertyValue(DataType.String, "klbf"),
    }
    dbirth = Payload(
        timestamp=now,
        seq=1,
        metrics=[
            Metric(
                name="WOB",
                alias=1,
                datatype=DataType.Double,
                value=0.0,
                timestamp=now,
                properties=hot,
            ),
            Metric(name="TEMP", alias=2, datatype=DataType.Float, value=0.0, timestamp=now),
            Metric(name="NOTE", alias=3, datatype=DataType.String, value="", timestamp=now),
        ],
    )
    return [
        (f"{base}/NBIRTH/{NODE}", encode_payload(nbirth)),
        (f"{base}/DBIRTH/{NODE}/daq", encode_payload(dbirth)),
    ]


def data(seq: int, at: datetime, n: int) -> tuple[str, bytes]:
    metrics = []
    for k in range(3):
        t = ms(at) + k * 1000
        metrics.append(Metric(alias=1, timestamp=t, value=n + k * 0.5))
        metrics.append(Metric(alias=2, timestamp=t, value=float(n % 7)))
    metrics.append(Metric(alias=3, timestamp=ms(at), value=f"note {n}"))
    payload = Payload(timestamp=ms(at), seq=seq % 256, batch=n + 1, metrics=metrics)
    types = {1: DataType.Double, 2: DataType.Float, 3: DataType.String}
    return f"spBv1.0/{SITE}/DDATA/{NODE}/daq", encode_payload(payload, types)


def rows(questdb: QuestDB, table: str, where: str) -> list[list[object]]:
    columns = RAW_COLUMNS if table.endswith("raw") else EVENT_COLUMNS
    sql = f"SELECT {columns} FROM {table} WHERE {where} ORDER BY ts, metric"
    return questdb.exec_sql(sql)["dataset"]


async def wait_count(questdb: QuestDB, table: str, n: int) -> None:
    deadline = time.monotonic() + 60
    got = -1
    while time.monotonic() < deadline:
        try:
            got = questdb.exec_sql(f"SELECT count() FROM {table}")["dataset"][0][0]
        except Exception:
            got = -1
        if got == n:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{table}: {got} rows, expected {n}")


async def test_a_dropped_day_is_rebuilt_from_the_archive(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}_"
    raw, events = f"{prefix}telemetry_raw", f"{prefix}telemetry_events"
    audit_dir = tmp_path / "audit"
    cfg = IngestConfig(
        mqtt=MqttConfig(port=mosquitto.port),
        questdb=QuestDBConfig(table_prefix=prefix),
        ingest=IngestSettings(rebirth_cooldown_s=0),
        audit=AuditSettings(directory=audit_dir, segment_max_bytes=8192),
        kpi=KpiSettings(enabled=False),  # its derived rows would land in the same tables
    )
    host = PrimaryHost(cfg, ilp_conf=questdb.ilp_conf, pg_dsn=questdb.pg_dsn)
    task = asyncio.create_task(host.run(), name="primary-host")
    await asyncio.wait_for(host.online.wait(), 30)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=NODE) as edge:
        for topic, payload in births():
            await edge.publish(topic, payload)
        seq = 2
        for n in range(60):  # yesterday, every 20 minutes
            await edge.publish(*data(seq, yesterday + timedelta(minutes=20 * n), n))
            seq += 1
        for n in range(60, 70):  # today, a few
            await edge.publish(*data(seq, today + timedelta(seconds=10 * n), n))
            seq += 1
    await wait_count(questdb, raw, 70 * 6)
    await wait_count(questdb, events, 70)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    day = f"ts >= '{yesterday.isoformat()}' AND ts < '{today.isoformat()}'"
    later = f"ts >= '{today.isoformat()}'"
    before = {t: rows(questdb, t, day) for t in (raw, events)}
    today_before = {t: rows(questdb, t, later) for t in (raw, events)}
    assert len(before[raw]) == 60 * 6 and len(before[events]) == 60
    for table in (raw, events):
        questdb.exec_sql(f"ALTER TABLE {table} DROP PARTITION WHERE {day}")
    for table in (raw, events):
        await wait_count(questdb, f"{table} WHERE {day}", 0)

    config = tmp_path / "cold.toml"
    config.write_text(
        f'[questdb]\ntable_prefix = "{prefix}"\n'
        f'[archive]\naudit_directory = "{audit_dir}"\nparquet_uri = "{tmp_path / "parquet"}"\n'
        f'[nightly]\nstate_directory = "{tmp_path / "state"}"\n'
    )
    assert cold_cli(questdb, "verify", "--config", str(config)).returncode == 0
    result = cold_cli(
        questdb,
        "rebuild",
        "--config",
        str(config),
        "--from",
        yesterday.isoformat(),
        "--to",
        today.isoformat(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for table in (raw, events):
        assert rows(questdb, table, day) == before[table]
        assert rows(questdb, table, later) == today_before[table]
    views = questdb.exec_sql(
        f"SELECT view_name, view_status FROM materialized_views() WHERE view_name LIKE '{prefix}%'"
    )["dataset"]
    assert views and all(status == "valid" for _, status in views), views
