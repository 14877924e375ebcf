"""Legacy hand-off end to end: a v4.x appliance's unsent readings (nanosecond timestamps) are
imported with ``derrick-edge import-legacy`` before the new agent first starts; the real agent
replays them through a real Mosquitto to a real ingest, and every one lands in QuestDB at its
exact nanosecond, with its exact value, marked historical, exactly once.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness import Mosquitto, QuestDB
from harness.derrick import EdgeSpec, SimulatedDevice, edge_process, ingest_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TAGS = ("WOB", "RPM", "SPP")

Stored = tuple[int, str, str, float, bool]


def write_handoff(path: Path, readings: list[tuple[str, str, int, float]]) -> None:
    lines = [
        {
            "format": "derrick-legacy-handoff",
            "version": 1,
            "appliance": "s017-a042",
            "source_version": "v4.2",
            "precision": "ns",
        },
        *({"device": d, "tag": t, "ts_ns": ts, "value": v} for d, t, ts, v in readings),
        {"end": "derrick-legacy-handoff", "readings": len(readings)},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def import_legacy(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def stored(questdb: QuestDB, table: str, upto_ns: int) -> list[Stored]:
    try:
        result = questdb.exec_sql(
            f"SELECT ts::long, device, metric, value, historical FROM {table} "
            "WHERE node = 's017-a042'"
        )
    except Exception:  # the table does not exist before the first flush
        return []
    return [(t, d, m, v, h) for t, d, m, v, h in result["dataset"] if t <= upto_ns]


def test_imported_legacy_readings_reach_questdb_with_exact_ns_timestamps(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    table = f"{prefix}telemetry_raw"
    rng = random.Random(7)
    start_ns = time.time_ns() - 3 * 3600 * 10**9  # three hours of backlog, 1000 readings
    readings = [
        ("daq", TAGS[i % 3], start_ns + i * 10_000_000_000 + rng.randrange(10**9), rng.random())
        for i in range(1000)
    ]
    readings.append(("daq", "WOB", start_ns - 1, 12.5))  # whole ms minus 1 ns: 999999 remainder
    upto_ns = max(r[2] for r in readings)
    assert sum(1 for r in readings if r[2] % 10**6) > 990  # nanoseconds, not milliseconds

    ingest = ingest_process(
        tmp_path / "ingest",
        mqtt_port=mosquitto.port,
        ilp_conf=questdb.ilp_conf,
        pg_dsn=questdb.pg_dsn,
        table_prefix=prefix,
    )
    spec = EdgeSpec(
        site="s017",
        appliance="s017-a042",
        devices=[SimulatedDevice("daq", tags=TAGS, seed=3)],
        normal_per_min=30,
        publish_interval_ms=200,
        link_bytes_per_s=200_000,
    )
    edge = edge_process(spec, tmp_path / "edge", [mosquitto.port])
    handoff = tmp_path / "handoff.jsonl"
    write_handoff(handoff, readings)
    command = [
        sys.executable, "-m", "edge", "import-legacy",
        "--config", str(tmp_path / "edge" / "agent.toml"), str(handoff),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = import_legacy(command, env)
    assert done.returncode == 0, done.stderr
    assert "imported 1001 readings (daq 1001) from v4.2 at precision ns" in done.stdout

    expected = {(ts, d, t, v, True) for d, t, ts, v in readings}
    rows: list[Stored] = []
    ingest.start()
    edge.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = stored(questdb, table, upto_ns)
            if len(set(rows)) >= len(expected):
                break
            time.sleep(0.5)
        assert edge.running, edge.log_path.read_text()[-3000:]
        assert ingest.running, (tmp_path / "ingest" / "ingest.log").read_text()[-3000:]
        time.sleep(1.0)  # WAL apply is asynchronous: give extras, if any, a moment to show
        rows = stored(questdb, table, upto_ns)
        again = import_legacy(command, env)
    finally:
        edge.stop()
        ingest.stop()
    assert len(rows) == len(set(rows)), "a row was stored twice"
    missing = expected - set(rows)
    extra = set(rows) - expected
    assert not missing, f"{len(missing)} legacy readings missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected rows, e.g. {sorted(extra)[:3]}"
    # Re-running the migration while the agent runs changes nothing.
    assert again.returncode == 0 and "already imported" in again.stdout, again.stderr
