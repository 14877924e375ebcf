"""The agent's sources end to end, as processes (agent, Mosquitto, ingest, QuestDB, and an
asyncua rig server), asserted on what is stored and on what crossed the wire:

- **CSV replay** at full speed (``speed = 0``): every cell of the file is a row in QuestDB at
  the row's own time, marked historical in QuestDB and on the wire (no live metric at all);
  empty and non-numeric cells are skipped, every batch acknowledged.
- **Simulator, two paths**: one appliance reads the same seeded rig as local channels and
  from the OPC UA server. The rig is picked (by its seed) so that during the test its phase
  changes and a gas kick starts. Both paths follow the model's drilling phases (rotary and
  pumps stopped exactly when the phase says), both see the kick (GAS above 5 while the model
  is in it, not before), the kick switches the appliance into alarm sampling on both paths,
  and a tag the server sends with bad status crosses the wire with quality 0 and is not
  stored.
- **OPC UA reconnect backoff**: doubles from ``reconnect_min_s`` to ``reconnect_max_s``.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from edge.sources.simulator import KICK_DURATION_S, DrillingSimulator, RigEvent
from harness import Mosquitto, QuestDB
from harness.derrick import (
    UNITS,
    EdgeSpec,
    OpcUaDeviceSpec,
    SimulatedDevice,
    edge_process,
    ingest_process,
    opcua_rig_process,
)
from harness.observer import SparkplugObserver
from harness.ports import allocate_port
from harness.process import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Stored = tuple[int, str, str, float]  # ts_ms, device, metric, value


def _wait(
    cond: Callable[[], object], timeout: float, what: str, alive: Sequence[ManagedProcess] = ()
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in alive:
            assert proc.running, f"{proc.name} ended: see {proc.log_path}"
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stored(questdb: QuestDB, prefix: str, node: str) -> list[tuple[int, str, str, float, bool]]:
    try:
        result = questdb.exec_sql(
            f"SELECT ts::long, device, metric, value, historical FROM {prefix}telemetry_raw "
            f"WHERE node = '{node}' AND device != ''"  # device data, not the node's own metrics
        )
    except Exception:
        return []
    return [(t // 1_000_000, d, m, v, h) for t, d, m, v, h in result["dataset"]]


def _ingest(tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB, prefix: str) -> ManagedProcess:
    return ingest_process(
        tmp_path / "ingest",
        mqtt_port=mosquitto.port,
        ilp_conf=questdb.ilp_conf,
        pg_dsn=questdb.pg_dsn,
        table_prefix=prefix,
        extra="flush_interval_ms = 100",
    )


def _acked_all(queue_db: Path) -> bool:
    db = sqlite3.connect(f"file:{queue_db}?mode=ro", uri=True)
    try:
        acked = db.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone()
        newest = db.execute("SELECT max(id) FROM batch").fetchone()
    finally:
        db.close()
    return acked is not None and (newest[0] is None or acked[0] >= newest[0])


# -- CSV replay ------------------------------------------------------------------------------

CSV_SITE, CSV_NODE = "s007", "s007-a001"
CSV_COLUMNS = {"Bit Depth": "DEPTH", "WOB": "WOB", "RPM": "RPM", "SPP": "SPP"}
CSV_T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
CSV_ROWS = 3000


def _write_csv(path: Path) -> set[Stored]:
    """Rows a second apart; every 7th WOB empty, every 11th RPM "n/a". The cells expected."""
    expected: set[Stored] = set()
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["time", *CSV_COLUMNS])
        for i in range(CSV_ROWS):
            ts = CSV_T0 + i * 1000
            cells = {
                "DEPTH": round(8000 + i * 0.05, 4),
                "WOB": round(20 + (i % 50) * 0.1, 4),
                "RPM": float(100 + i % 40),
                "SPP": round(2800 + (i % 97) * 1.5, 4),
            }
            row: list[str] = [f"{ts / 1000:.3f}"]
            for tag in CSV_COLUMNS.values():
                if (tag == "WOB" and i % 7 == 0) or (tag == "RPM" and i % 11 == 0):
                    row.append("" if tag == "WOB" else "n/a")
                    continue
                row.append(repr(cells[tag]))
                expected.add((ts, "csv", tag, cells[tag]))
            out.writerow(row)
    return expected


@pytest.mark.timeout(300)
def test_csv_replay_stores_every_cell_at_its_row_time_as_historical(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    path = tmp_path / "well.csv"
    expected = _write_csv(path)
    sensors = ", ".join(
        f'{{tag = "{tag}", unit = "{UNITS[tag]}", column = "{column}"}}'
        for column, tag in CSV_COLUMNS.items()
    )
    spec = EdgeSpec(
        site=CSV_SITE,
        appliance=CSV_NODE,
        link_bytes_per_s=2_000_000,
        publish_interval_ms=200,
        extra=(
            f'\n[[devices]]\nid = "csv"\nsource = "csv"\npath = "{path}"\nspeed = 0.0\n'
            f"sensors = [{sensors}]\n"
        ),
    )
    ingest = _ingest(tmp_path, mosquitto, questdb, prefix)
    agent = edge_process(spec, tmp_path / "edge", [mosquitto.port])
    with SparkplugObserver("127.0.0.1", mosquitto.port) as observer:
        try:
            ingest.start()
            agent.start()
            started = time.monotonic()
            _wait(lambda: len(_stored(questdb, prefix, CSV_NODE)) >= len(expected), 120,
                  f"{len(expected)} rows in QuestDB", (agent, ingest))  # fmt: skip
            took = time.monotonic() - started
            _wait(lambda: _acked_all(tmp_path / "edge" / "queue.db"), 60, "every batch acked")
        finally:
            agent.stop()
            ingest.stop()
    rows = _stored(questdb, prefix, CSV_NODE)
    assert {(t, d, m, v) for t, d, m, v, _ in rows} == expected
    assert len(rows) == len(expected), "a cell stored twice"
    assert all(h for *_, h in rows), "a replayed cell stored as live"
    flags = {k[3]: n for k, n in observer.flags.items() if k[2] == "csv"}
    assert flags.get(True, 0) >= len(expected) and False not in flags, flags
    log = (tmp_path / "edge" / "agent.log").read_text(encoding="utf-8")
    skipped = CSV_ROWS // 7 + 1 + CSV_ROWS // 11 + 1
    assert f"{CSV_ROWS} rows, {skipped} empty or non-numeric cells skipped" in log
    print(f"CSV replay: {len(expected)} values stored in {took:.1f} s")


# -- the simulator, local and over OPC UA ----------------------------------------------------

SIM_SITE, SIM_NODE = "s008", "s008-a001"
KICK_IN_S = (60.0, 70.0)  # the kick starts this long after the test picks the rig
BEFORE_S, DURING_S = 15.0, (14.0, 26.0)  # windows compared around the kick's start


def _pick_rig(now: float) -> tuple[int, RigEvent]:
    """A seed whose recurring gas kick starts ``KICK_IN_S`` from now, whose phase changes
    between 20 s from now and the end of the test, with no pressure spike meanwhile."""
    for seed in range(1_000_000):
        sim = DrillingSimulator(seed)
        probe = now + KICK_IN_S[1] + 1
        kick = next((e for e in sim.events_at(probe) if e.kind == "gas_kick"), None)
        if kick is None or not now + KICK_IN_S[0] <= kick.start <= now + KICK_IN_S[1]:
            continue
        end = kick.start + DURING_S[1] + 2
        times = [now + 20 + 2 * i for i in range(int((end - now - 20) / 2) + 1)]
        if len({sim.phase(t) for t in times}) < 2:
            continue
        if any(e.kind == "pressure_spike" for t in times for e in sim.events_at(t)):
            continue
        return seed, kick
    raise AssertionError("no seed in a million puts a kick and a phase change in the window")


def _rig_published(rig_dir: Path) -> list[tuple[int, str, float | None, str]]:
    lines = (rig_dir / "published.jsonl").read_text(encoding="utf-8").splitlines()
    return [tuple(json.loads(line)) for line in lines if line]  # type: ignore[misc]


@pytest.mark.timeout(400)
def test_simulator_local_and_over_opcua_follow_the_same_phases_and_kick(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    seed, kick = _pick_rig(time.time())
    model = DrillingSimulator(seed)  # phases and events are functions of time alone
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    port = allocate_port()
    rig_dir = tmp_path / "rig"
    rig = opcua_rig_process(rig_dir, port, seed=seed, args=("--bad-quality", "TEMP"))
    ingest = _ingest(tmp_path, mosquitto, questdb, prefix)
    spec = EdgeSpec(
        site=SIM_SITE,
        appliance=SIM_NODE,
        devices=[
            SimulatedDevice("local", seed=seed),
            OpcUaDeviceSpec("opc", f"opc.tcp://127.0.0.1:{port}/derrick/rig"),
        ],
        normal_per_min=960,  # 32 sensors: each every 2 s
        alarm_per_min=9600,  # each every 0.2 s
        publish_interval_ms=250,
        link_bytes_per_s=1_000_000,
        extra='\n[[alarms]]\ntag = "GAS"\nabove = 5.0\n',
    )
    agent = edge_process(spec, tmp_path / "edge", [mosquitto.port])
    with SparkplugObserver("127.0.0.1", mosquitto.port) as observer:
        try:
            rig.start()
            ingest.start()
            agent.start()

            def flowing() -> bool:
                devices = {r[3] for r in observer.snapshot()}
                return {"local", "opc"} <= devices

            _wait(flowing, kick.start - BEFORE_S - time.time(),
                  f"both devices' data {BEFORE_S:.0f} s before the kick (seed {seed})",
                  (rig, ingest, agent))  # fmt: skip
            end_ms = int((kick.start + DURING_S[1]) * 1000)
            time.sleep(max(0.0, end_ms / 1000 + 1 - time.time()))
            # everything published until then is stored (before the agent stops: acks)
            sent = {
                (t, d, m, v)
                for t, g, n, d, m, v in observer.snapshot()
                if (g, n) == (SIM_SITE, SIM_NODE) and d and t < end_ms
            }

            missing: set[Stored] = set()

            def stored() -> bool:
                missing.clear()
                missing.update(sent - {r[:4] for r in _stored(questdb, prefix, SIM_NODE)})
                return not missing

            try:
                _wait(stored, 60, f"the {len(sent)} values published to be stored", (agent,))
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}: {len(missing)} missing, {sorted(missing)[:4]}"
                ) from None
        finally:
            agent.stop()
            rig.stop()
            ingest.stop()
    assert not observer.errors, observer.errors[:5]
    rows = [r for r in _stored(questdb, prefix, SIM_NODE) if r[0] < end_ms]
    by_device: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
    for ts, device, metric, value, _ in rows:
        by_device[device].append((ts, metric, value))
    assert set(by_device) == {"local", "opc"}, set(by_device)

    start_ms = int(kick.start * 1000)
    for device, samples in by_device.items():
        phases = set()
        for ts, metric, value in samples:
            phase = model.phase(ts / 1000)
            phases.add(phase)
            where = f"{device} {metric} {value} at {ts} ({phase})"
            if metric == "RPM":
                assert (value == 0.0) == (phase != "drilling"), where
            elif metric in ("SPP", "FLWI"):
                assert (value < 100) == (phase == "connection"), where
            elif metric == "GAS" and ts < start_ms:
                assert value < 5, where
            elif metric == "GAS" and ts >= start_ms + 0.03 * KICK_DURATION_S * 1000:
                assert value > 5, where
        assert len(phases) >= 2, f"{device}: one phase only ({phases}): the pick is wrong"

        # alarm sampling: reads per 10 s before the kick and once it is well under way
        def reads(lo: float, hi: float, samples: list[tuple[int, str, float]] = samples) -> int:
            return len({ts for ts, m, _ in samples if m == "WOB" and lo <= ts < hi})

        before = reads(start_ms - BEFORE_S * 1000, start_ms - (BEFORE_S - 10) * 1000)
        during = reads(start_ms + DURING_S[0] * 1000, start_ms + (DURING_S[0] + 10) * 1000)
        assert before <= 7 and during >= 25, (device, before, during)

    # bad status from the server: quality 0 on the wire, nothing stored for it
    published = _rig_published(rig_dir)
    bad_at = {ts for ts, tag, _, status in published if tag == "TEMP" and status == "bad"}
    on_wire = {k[0] for k, q in observer.not_good.items() if k[3:] == ("opc", "TEMP") and q == 0}
    assert on_wire and on_wire <= bad_at, (sorted(on_wire)[:3], sorted(bad_at)[:3])
    stored_temp = {ts for ts, m, _ in by_device["opc"] if m == "TEMP"}
    assert not stored_temp & on_wire
    assert {k[3:] for k in observer.not_good} == {("opc", "TEMP")}, set(observer.not_good)


def test_opcua_reconnect_backoff_doubles_up_to_its_cap(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Nothing listens at the endpoint: the agent retries after 0.2, 0.4, 0.8, 1.6, 1.6, 1.6 s."""
    dead = allocate_port()
    spec = EdgeSpec(
        site=SIM_SITE,
        appliance="s008-a002",
        wait_for_primary_host=False,
        extra=(
            f'\n[[devices]]\nid = "opc"\nsource = "opcua"\n'
            f'endpoint = "opc.tcp://127.0.0.1:{dead}/derrick/rig"\n'
            "reconnect_min_s = 0.2\nreconnect_max_s = 1.6\n"
            f'sensors = [{{tag = "WOB", unit = "klbf", node_id = "ns=2;s=Rig.WOB"}}]\n'
        ),
    )
    agent = edge_process(spec, tmp_path / "edge", [mosquitto.port])
    log = tmp_path / "edge" / "agent.log"

    def attempts() -> list[float]:
        stamps = []
        for line in log.read_text(encoding="utf-8").splitlines():
            if f"127.0.0.1:{dead}/derrick/rig unavailable" in line:
                when = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                stamps.append(when.timestamp())
        return stamps

    try:
        agent.start()
        _wait(lambda: len(attempts()) >= 7, 60, "seven connection attempts", (agent,))
    finally:
        agent.stop()
    stamps = attempts()
    gaps = [b - a for a, b in itertools.pairwise(stamps)][:6]
    for gap, expected in zip(gaps, (0.2, 0.4, 0.8, 1.6, 1.6, 1.6), strict=True):
        # never sooner than the backoff says; later only by the time a refused connect takes
        assert expected * 0.95 <= gap < expected + 1.0, gaps
