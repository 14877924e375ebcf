"""``/metrics`` of a real ingest worker after real traffic (edge agent -> Mosquitto ->
ingest -> QuestDB): the series exist and carry the values the traffic implies."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from pathlib import Path

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import Mosquitto, QuestDB
from harness.derrick import EdgeSpec, SimulatedDevice, edge_process, ingest_process
from harness.observer import SparkplugObserver
from harness.ports import allocate_port
from ingest.compiled import COMPILED_MODULES

pytestmark = [pytest.mark.integration]

SITE = "s004"
NODE = f"{SITE}-a001"


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _publish_garbage(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(f"spBv1.0/{SITE}/NDATA/{SITE}-a999", b"\xffnot protobuf", qos=1)


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_metrics_endpoint_reports_real_traffic(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    port = allocate_port()
    ingest = ingest_process(
        tmp_path / "ingest",
        mqtt_port=mosquitto.port,
        ilp_conf=questdb.ilp_conf,
        pg_dsn=questdb.pg_dsn,
        table_prefix=prefix,
        extra=f"flush_interval_ms = 100\n\n[metrics]\nport = {port}",
    )
    edge = edge_process(
        EdgeSpec(site=SITE, appliance=NODE, devices=[SimulatedDevice("daq", seed=4)],
                 normal_per_min=600, alarm_per_min=600, ack_timeout_ms=3000),
        tmp_path / NODE,
        [mosquitto.port],
    )  # fmt: skip
    with SparkplugObserver("127.0.0.1", mosquitto.port) as observer:
        ingest.start()
        edge.start()
        try:
            _wait(lambda: observer.counts["DDATA"] >= 5, 90, "data from the agent")
            # a malformed message from a node nobody knows: dead letter + rebirth request
            asyncio.run(_publish_garbage(mosquitto.port))
            time.sleep(3)
            edge.stop()
            time.sleep(1)
            stored = questdb.exec_sql(f"SELECT count() FROM {prefix}telemetry_raw")["dataset"][0][0]
            m = _scrape(port)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
                ready = (r.status, r.read().decode())
        finally:
            edge.stop()
            ingest.stop()
        data_messages = observer.counts["DDATA"] + observer.counts["NDATA"]

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert value("derrick_ingest_messages_total") >= data_messages > 0
    assert value("derrick_ingest_metrics_total") >= stored > 0
    assert value("derrick_ingest_acks_total") >= 1
    assert 0 <= value("derrick_ingest_ack_age_seconds", group=SITE, node=NODE) < 10
    dead = {
        labels: v for (name, labels), v in m.items() if name == "derrick_ingest_dead_letters_total"
    }
    assert sum(dead.values()) >= 1, m
    assert value("derrick_ingest_rebirth_requests_total") >= 1
    assert value("derrick_ingest_online") == 1
    assert value("derrick_ingest_nodes") >= 1
    assert value("derrick_ingest_shed_messages_total") == 0
    # the worker runs the modules compiled with mypyc (tests/conftest.py builds them)
    assert value("derrick_ingest_compiled_modules") == len(COMPILED_MODULES)
    assert ready == (200, "ready\n")
