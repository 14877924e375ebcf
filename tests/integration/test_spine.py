"""The spine: simulated appliances → Mosquitto → ingest → QuestDB, every row accounted for.

Five edge agents with two devices of sixteen sensors each publish births and aliased DDATA
through a real Mosquitto; a real ingest worker writes them to a real QuestDB. The set of
(timestamp, site, node, device, metric, value) rows in QuestDB must equal the set an
independent subscriber saw published: nothing missing, nothing extra, nothing doubled.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness import Mosquitto, QuestDB
from harness.derrick import EdgeSpec, SimulatedDevice, edge_process, ingest_process
from harness.observer import Row, SparkplugObserver

pytestmark = pytest.mark.integration


def health(edge_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "health", "--config", str(edge_dir / "agent.toml")],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )


def stored_rows(questdb: QuestDB, table: str) -> list[Row]:
    result = questdb.exec_sql(
        f"SELECT ts::long ts_ns, site, node, device, metric, value FROM {table}"
    )
    return [(ts // 1_000_000, s, n, d, m, v) for ts, s, n, d, m, v in result["dataset"]]


def wait_for_rows(questdb: QuestDB, table: str, expected: set[Row], timeout: float) -> list[Row]:
    deadline = time.monotonic() + timeout
    rows: list[Row] = []
    while time.monotonic() < deadline:
        try:
            rows = stored_rows(questdb, table)
        except Exception:
            rows = []
        if set(rows) >= expected:
            # WAL apply is asynchronous: give it one more moment to show extras, if any.
            time.sleep(1.0)
            return stored_rows(questdb, table)
        time.sleep(0.5)
    return rows


def test_five_nodes_two_devices_sixteen_metrics_stored_exactly(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    table = f"{prefix}telemetry_raw"
    ingest = ingest_process(
        tmp_path / "ingest",
        mqtt_port=mosquitto.port,
        ilp_conf=questdb.ilp_conf,
        pg_dsn=questdb.pg_dsn,
        table_prefix=prefix,
    )
    edges = [
        edge_process(
            EdgeSpec(
                site="s001",
                appliance=f"s001-a{i:03d}",
                devices=[SimulatedDevice("daq", seed=i), SimulatedDevice("opc", seed=100 + i)],
                # 32 sensors, each read about every 0.5 s
                normal_per_min=3840,
                publish_interval_ms=200,
            ),
            tmp_path / f"edge{i}",
            [mosquitto.port],
        )
        for i in range(1, 6)
    ]
    with SparkplugObserver("127.0.0.1", mosquitto.port) as observer:
        ingest.start()
        try:
            for edge in edges:
                edge.start()
            deadline = time.monotonic() + 90
            while observer.counts["DBIRTH"] < 10 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(6)
            healthy = health(tmp_path / "edge1")
            assert healthy.returncode == 0, healthy.stdout + healthy.stderr
            assert ingest.running, (tmp_path / "ingest" / "ingest.log").read_text()[-3000:]
            for edge in edges:
                assert edge.running, edge.log_path.read_text()[-3000:]
            for edge in edges:
                edge.stop()
            # The site's rows (the cloud's KPI node publishes under its own group).
            published = {r for r in observer.snapshot() if r[1] == "s001"}
            stopped = health(tmp_path / "edge1")
            assert stopped.returncode == 1 and "not running" in stopped.stdout
            assert not observer.errors, observer.errors[:5]
            assert observer.counts["NBIRTH"] >= 5 and observer.counts["DBIRTH"] >= 10
            nodes = {r[2] for r in published}
            metrics = {(r[2], r[3], r[4]) for r in published if r[3]}
            assert len(nodes) == 5 and len(metrics) == 5 * 2 * 16
            rows = wait_for_rows(questdb, table, published, timeout=30)
        finally:
            for edge in edges:
                edge.stop()
            ingest.stop()
    rows = [r for r in rows if r[1] == "s001"]
    assert len(rows) == len(set(rows)), "a row was stored twice"
    missing = published - set(rows)
    extra = set(rows) - published
    assert not missing, f"{len(missing)} published rows missing, e.g. {sorted(missing)[:3]}"
    assert not extra, (
        f"{len(extra)} rows stored that were never published, e.g. {sorted(extra)[:3]}"
    )
    assert len(published) > 5 * 32 * 5
