"""The Primary Host archives every received message before it acknowledges anything.

A real host runs in-process against real Mosquitto and QuestDB with ``[audit] directory`` set;
a hand-made edge node sends births and numbered batches and listens for its NCMD acks. While
the archive cannot be written (its directory replaced by a file, segments rotating at every
commit), nothing is acknowledged and nothing stored; once it can, the ack comes and the chain
verifies and holds every message byte for byte.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from core import audit, conventions
from core.sparkplug import DataType, Metric, Payload, decode_payload, encode_payload
from harness import Mosquitto, QuestDB
from ingest.config import AuditSettings, IngestConfig, IngestSettings, MqttConfig, QuestDBConfig
from ingest.host import PrimaryHost

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SITE, NODE = "s031", "s031-a001"
ACK_ALIAS = 100
NOW = lambda: time.time_ns() // 1_000_000  # noqa: E731


def nbirth() -> bytes:
    now = NOW()
    return encode_payload(
        Payload(
            timestamp=now,
            seq=0,
            metrics=[
                Metric(name="bdSeq", datatype=DataType.Int64, value=0, timestamp=now),
                Metric(
                    name=conventions.REBIRTH_METRIC,
                    datatype=DataType.Boolean,
                    value=False,
                    timestamp=now,
                ),
                Metric(
                    name=conventions.ACKED_BATCH_METRIC,
                    alias=ACK_ALIAS,
                    datatype=DataType.UInt64,
                    value=0,
                    timestamp=now,
                ),
            ],
        )
    )


def dbirth() -> bytes:
    now = NOW()
    return encode_payload(
        Payload(
            timestamp=now,
            seq=1,
            metrics=[
                Metric(name="WOB", alias=1, datatype=DataType.Double, value=0.0, timestamp=now)
            ],
        )
    )


def ddata(seq: int, batch: int, value: float) -> bytes:
    return encode_payload(
        Payload(
            timestamp=NOW(),
            seq=seq,
            batch=batch,
            metrics=[Metric(alias=1, timestamp=NOW(), value=value)],
        ),
        {1: DataType.Double},
    )


@pytest.fixture
async def host(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> AsyncIterator[tuple[PrimaryHost, str, Path]]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    archive = tmp_path / "audit"
    cfg = IngestConfig(
        mqtt=MqttConfig(port=mosquitto.port),
        questdb=QuestDBConfig(table_prefix=prefix),
        ingest=IngestSettings(ack_interval_ms=0, rebirth_cooldown_s=0),
        audit=AuditSettings(directory=archive, segment_max_age_s=0.05),
    )
    primary = PrimaryHost(cfg, ilp_conf=questdb.ilp_conf, pg_dsn=questdb.pg_dsn)
    task = asyncio.create_task(primary.run(), name="primary-host")
    await asyncio.wait_for(primary.online.wait(), 30)
    yield primary, prefix, archive / "derrick-w0"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def count_rows(questdb: QuestDB, table: str) -> int:
    try:
        return int(questdb.exec_sql(f"SELECT count() FROM {table}")["dataset"][0][0])
    except Exception:
        return 0


async def test_nothing_is_acknowledged_before_it_is_archived(
    host: tuple[PrimaryHost, str, Path], mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    primary, prefix, chain = host
    acks: list[int] = []
    sent: list[tuple[str, bytes]] = []
    base = f"spBv1.0/{SITE}"
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=NODE) as edge:
        await edge.subscribe(f"{base}/NCMD/{NODE}")

        async def listen() -> None:
            async for message in edge.messages:  # ends with the client
                payload = decode_payload(bytes(message.payload), {ACK_ALIAS: DataType.UInt64})
                acks.extend(int(m.value) for m in payload.metrics if m.alias == ACK_ALIAS)  # type: ignore[arg-type]

        listener = asyncio.create_task(listen(), name="acks")
        listener.add_done_callback(lambda t: t.cancelled() or t.exception())

        async def send(topic: str, payload: bytes) -> None:
            sent.append((topic, payload))
            await edge.publish(topic, payload)

        await send(f"{base}/NBIRTH/{NODE}", nbirth())
        await send(f"{base}/DBIRTH/{NODE}/daq", dbirth())
        await send(f"{base}/DDATA/{NODE}/daq", ddata(2, 1, 1.5))
        deadline = time.monotonic() + 20
        while 1 not in acks:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert 1 in acks, "batch 1 never acknowledged"

        # The archive breaks: its directory is replaced by a file. The segment open at that
        # moment still takes the next commit (its descriptor is open: that message is
        # archived, and may be acknowledged); the segment after it cannot be created, and
        # from then on nothing is acknowledged or stored.
        moved = chain.with_name("moved")
        os.replace(chain, moved)
        chain.write_bytes(b"not a directory")
        assert primary.audit is not None
        await send(f"{base}/DDATA/{NODE}/daq", ddata(3, 2, 2.5))
        deadline = time.monotonic() + 20
        while not primary.audit.failures:
            assert time.monotonic() < deadline, "the archive never failed"
            await asyncio.sleep(0.05)
        await send(f"{base}/DDATA/{NODE}/daq", ddata(4, 3, 3.5))
        await asyncio.sleep(3)
        assert 3 not in acks, f"acknowledged without an archive: {acks}"
        assert primary.audit.failures > 1
        assert count_rows(questdb, f"{prefix}telemetry_raw WHERE value = 3.5") == 0

        # The archive is back: the held message is archived, stored, then acknowledged.
        chain.unlink()
        os.replace(moved, chain)
        deadline = time.monotonic() + 20
        while 3 not in acks:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert 3 in acks, "batch 3 not acknowledged after the archive recovered"
        deadline = time.monotonic() + 20
        while count_rows(questdb, f"{prefix}telemetry_raw WHERE value = 3.5") != 1:
            assert time.monotonic() < deadline, "batch 3 acknowledged but not visible in QuestDB"
            await asyncio.sleep(0.2)
        listener.cancel()
    await asyncio.sleep(0.3)
    assert primary.audit is not None
    await primary.audit.commit()
    report = audit.verify_chain(chain)
    assert report.ok, report
    archived = [(r.topic, r.payload) for _, recs in audit.iter_records(chain) for r in recs]
    ours = [a for a in archived if a[0].startswith(base) and "/NCMD/" not in a[0]]
    assert ours == sent
