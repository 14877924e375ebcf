"""Bad input never stops the ingest worker: each case is dead-lettered, counted, logged once.

A real Primary Host runs in-process against real Mosquitto and QuestDB; a hand-made publisher
sends each kind of bad message, then good data, which must still be stored.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from core.sparkplug import DataType, Metric, Payload, PropertyValue, encode_payload
from harness import Mosquitto, QuestDB
from ingest.config import IngestConfig, IngestSettings, MqttConfig, QuestDBConfig
from ingest.host import PrimaryHost

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SITE, NODE = "s009", "s009-a001"
NOW = lambda: time.time_ns() // 1_000_000  # noqa: E731


def nbirth(bdseq: int = 0) -> bytes:
    now = NOW()
    return encode_payload(
        Payload(
            timestamp=now,
            seq=0,
            metrics=[
                Metric(name="bdSeq", datatype=DataType.Int64, value=bdseq, timestamp=now),
                Metric(
                    name="Node Control/Rebirth",
                    datatype=DataType.Boolean,
                    value=False,
                    timestamp=now,
                ),
            ],
        )
    )


def dbirth(seq: int) -> bytes:
    now = NOW()
    return encode_payload(
        Payload(
            timestamp=now,
            seq=seq,
            metrics=[
                Metric(
                    name="WOB",
                    alias=1,
                    datatype=DataType.Double,
                    value=1.0,
                    timestamp=now,
                    properties={
                        "engUnit": PropertyValue(DataType.String, "klbf"),
                        "hot": PropertyValue(DataType.Boolean, True),
                    },
                ),
                Metric(name="NOTE", alias=2, datatype=DataType.String, value="x", timestamp=now),
            ],
        )
    )


def ddata(seq: int, metrics: list[Metric]) -> bytes:
    return encode_payload(
        Payload(timestamp=NOW(), seq=seq, metrics=metrics),
        {1: DataType.Double, 2: DataType.String, 99: DataType.Double},
    )


@pytest.fixture
async def host(mosquitto: Mosquitto, questdb: QuestDB) -> AsyncIterator[tuple[PrimaryHost, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    cfg = IngestConfig(
        mqtt=MqttConfig(port=mosquitto.port),
        questdb=QuestDBConfig(table_prefix=prefix),
        ingest=IngestSettings(max_payload_bytes=64 * 1024, rebirth_cooldown_s=0),
    )
    primary = PrimaryHost(cfg, ilp_conf=questdb.ilp_conf, pg_dsn=questdb.pg_dsn)
    task = asyncio.create_task(primary.run(), name="primary-host")
    await asyncio.wait_for(primary.online.wait(), 30)
    yield primary, prefix
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def wait_rows(questdb: QuestDB, sql: str, n: int, within_s: float = 20) -> list[list[object]]:
    deadline = time.monotonic() + within_s
    rows: list[list[object]] = []
    while time.monotonic() < deadline:
        try:
            rows = questdb.exec_sql(sql)["dataset"]
        except Exception:
            rows = []
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.3)
    return rows


async def test_every_kind_of_bad_input_is_dead_lettered_and_the_worker_goes_on(
    host: tuple[PrimaryHost, str],
    mosquitto: Mosquitto,
    questdb: QuestDB,
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, prefix = host
    caplog.set_level(logging.WARNING, logger="ingest")
    base = f"spBv1.0/{SITE}"
    now = NOW()
    cases = [
        # data before any birth: dead-lettered, a rebirth is requested
        (f"{base}/DDATA/{NODE}/daq", ddata(1, [Metric(alias=1, timestamp=now, value=1.5)])),
        (f"{base}/NBIRTH/{NODE}", nbirth()),
        (f"{base}/DBIRTH/{NODE}/daq", dbirth(1)),
        # malformed protobuf on a valid topic
        (f"{base}/DDATA/{NODE}/daq", b"\xff\xff\xff\x07garbage" * 3),
        # a topic outside the Sparkplug namespace rules (unknown message type, missing ids)
        (f"{base}/BOGUS/{NODE}", b"\x00"),
        (f"{base}/NDATA", b"\x00"),
        # an oversized payload
        (f"{base}/DDATA/{NODE}/daq", b"\x08\x01" * 40_000),
        # unknown alias
        (f"{base}/DDATA/{NODE}/daq", ddata(2, [Metric(alias=99, timestamp=now, value=2.0)])),
        # a timestamp before 2000 and one two days ahead
        (f"{base}/DDATA/{NODE}/daq", ddata(3, [Metric(alias=1, timestamp=1000, value=3.0)])),
        (
            f"{base}/DDATA/{NODE}/daq",
            ddata(4, [Metric(alias=1, timestamp=now + 2 * 86_400_000, value=4.0)]),
        ),
        # a value that does not fit its datatype (a string where the birth says Double)
        (
            f"{base}/DDATA/{NODE}/daq",
            ddata(5, [Metric(alias=1, timestamp=now, datatype=DataType.String, value="x")]),
        ),
        # and finally good data, which must be stored
        (f"{base}/DDATA/{NODE}/daq", ddata(6, [Metric(alias=1, timestamp=now, value=42.25)])),
    ]
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
        for topic, payload in cases:
            await pub.publish(topic, payload, qos=1)
            await asyncio.sleep(0.05)

    stored = await wait_rows(
        questdb, f"SELECT value FROM {prefix}telemetry_raw WHERE node = '{NODE}'", 1
    )
    assert stored == [[42.25]]
    dead = await wait_rows(
        questdb,
        f"SELECT reason, topic, detail, payload_b64 FROM {prefix}ingest_dead_letters",
        9,
    )
    reasons = sorted(r[0] for r in dead)
    assert reasons == sorted(
        [
            "before-birth",
            "malformed",
            "topic",
            "topic",
            "oversized",
            "bad-metric",
            "bad-metric",
            "bad-metric",
            "bad-metric",
        ]
    ), dead
    # the raw bytes are kept for inspection
    malformed = next(r for r in dead if r[0] == "malformed")
    assert base64.b64decode(str(malformed[3])) == b"\xff\xff\xff\x07garbage" * 3
    details = " | ".join(str(r[2]) for r in dead)
    assert "unknown alias 99" in details and "out of range" in details
    assert "String for Double" in details or "datatype String" in details
    # counted
    c = primary.counters
    assert c["dead_letters.topic"] == 2 and c["dead_letters.malformed"] == 1
    assert c["dead_letters.oversized"] == 1 and c["dead_letters.bad-metric"] == 4
    assert c["rebirth_requests"] >= 1
    # logged once per bad message, with the topic and a truncated payload
    warnings = [r for r in caplog.records if "dead letter" in r.getMessage()]
    assert len(warnings) == 9
    oversized = next(r.getMessage() for r in warnings if "(oversized)" in r.getMessage())
    assert len(oversized) < 600
