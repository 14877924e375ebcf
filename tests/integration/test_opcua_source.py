"""The OPC UA source against a real asyncua server (``harness.opcua_rig`` as its own
process), a real agent, Mosquitto, ingest and QuestDB.

What OPC UA can promise across a server restart, and what this test holds the agent to:
every value the server published while the agent was subscribed reaches QuestDB with the
server's source timestamp, except what was still queued in the server's session when the
server stopped (at most about one publishing interval: the session dies with the server
and a new server cannot republish it); values are not sampled while the server is down.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core import conventions
from core.sparkplug import DataType, Metric, Payload, encode_payload
from harness import Mosquitto, QuestDB
from harness.derrick import (
    EdgeSpec,
    OpcUaDeviceSpec,
    edge_process,
    ingest_process,
    opcua_rig_process,
)
from harness.observer import SparkplugObserver
from harness.ports import allocate_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, NODE = "s005", "s005-a001"
TAGS = ("WOB", "RPM", "SPP", "GAS")


def published(rig_dir: Path) -> list[tuple[int, str, float | None, str]]:
    lines = (rig_dir / "published.jsonl").read_text(encoding="utf-8").splitlines()
    return [tuple(json.loads(line)) for line in lines if line]  # type: ignore[misc]


def sampling_ms(rig_dir: Path) -> float | None:
    try:
        value = json.loads((rig_dir / "status.json").read_text(encoding="utf-8"))["sampling_ms"]
    except (OSError, ValueError):
        return None
    return float(value) if value is not None else None


def serving(rig_dir: Path) -> int:
    """How many times the rig server has started serving (its log says so each time)."""
    try:
        return (rig_dir / "rig.log").read_text(encoding="utf-8").count("[opcua-rig] serving")
    except OSError:
        return 0


def wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def alarm_command(port: int, on: bool) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"op-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = encode_payload(
        Payload(
            timestamp=int(time.time() * 1000),
            metrics=[Metric(name=conventions.ALARM_COMMAND_METRIC, datatype=DataType.Boolean,
                            value=on)],
        )
    )  # fmt: skip
    client.publish(f"spBv1.0/{SITE}/NCMD/{NODE}", payload, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def test_server_values_arrive_with_source_timestamps_across_a_restart_and_alarm_mode(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    port = allocate_port()
    rig_dir = tmp_path / "rig"
    rig_args = ("--tags", ",".join(TAGS), "--bad-quality", "GAS")
    rig = opcua_rig_process(rig_dir, port, seed=5, args=rig_args)
    ingest = ingest_process(
        tmp_path / "ingest",
        mqtt_port=mosquitto.port,
        ilp_conf=questdb.ilp_conf,
        pg_dsn=questdb.pg_dsn,
        table_prefix=prefix,
    )
    spec = EdgeSpec(
        site=SITE,
        appliance=NODE,
        devices=[OpcUaDeviceSpec("opc", f"opc.tcp://127.0.0.1:{port}/derrick/rig", TAGS)],
        normal_per_min=480,  # 4 sensors: each every 500 ms
        alarm_per_min=2400,  # each every 100 ms
        publish_interval_ms=200,
    )
    agent = edge_process(spec, tmp_path / "edge", [mosquitto.port])
    with SparkplugObserver("127.0.0.1", mosquitto.port) as observer:
        try:
            rig.start()
            ingest.start()
            # asyncua builds its standard address space at start: slow on a busy machine.
            wait(lambda: serving(rig_dir) == 1, 120, "the OPC UA server")
            agent.start()
            wait(lambda: sampling_ms(rig_dir) == 500.0, 60, "normal sampling on the server")
            wait(lambda: observer.counts["DBIRTH"] >= 1, 60, "the device's DBIRTH")
            time.sleep(3)
            alarm_command(mosquitto.port, True)
            # The agent modified the monitored items: the server now samples every 100 ms.
            wait(lambda: sampling_ms(rig_dir) == 100.0, 20, "alarm sampling on the server")
            time.sleep(2)
            stopped_at_ms = time.time_ns() // 1_000_000
            rig.stop()
            wait(lambda: observer.counts["DDEATH"] >= 1, 30, "DDEATH after the server went away")
            time.sleep(1)
            (rig_dir / "status.json").unlink()
            rig.start()
            wait(lambda: serving(rig_dir) == 2, 120, "the OPC UA server again")
            # (the agent's own DBIRTH of the device: the KPI node's DBIRTHs count in counts[])
            wait(lambda: observer.device_births[(SITE, NODE, "opc")] >= 2, 60, "DBIRTH again")
            reborn_ms = observer.device_birth_ms[(SITE, NODE, "opc")]  # subscribed again
            # The reconnected subscription asks for the current mode's (alarm) interval.
            wait(lambda: sampling_ms(rig_dir) == 100.0, 20, "alarm sampling after reconnect")
            time.sleep(3)
            alarm_command(mosquitto.port, False)
            wait(lambda: sampling_ms(rig_dir) == 500.0, 20, "normal sampling again")
            time.sleep(1)
            asked = time.monotonic()
            code = agent.stop()
            took = time.monotonic() - asked
            # SIGTERM ends the agent (and its OPC UA session) cleanly, not the SIGKILL after 20 s
            assert code == 0 and took < 10, (code, took)
            end_ms = time.time_ns() // 1_000_000
            rig.stop()
            assert not observer.errors, observer.errors[:5]
            table = f"{prefix}telemetry_raw"
            log = published(rig_dir)
            good = {(ts, tag, v) for ts, tag, v, status in log if status == "good"}
            bad = {(ts, tag) for ts, tag, _, status in log if status == "bad"}
            wanted_sent = {r for r in observer.snapshot() if r[3] == "opc"}
            deadline = time.monotonic() + 40
            rows: set[tuple[int, str, float]] = set()
            while time.monotonic() < deadline:
                try:
                    result = questdb.exec_sql(
                        f"SELECT ts::long, metric, value FROM {table} WHERE device = 'opc'"
                    )["dataset"]
                except Exception:
                    result = []
                rows = {(ts // 1_000_000, m, v) for ts, m, v in result}
                sent_good = {(r[0], r[4], r[5]) for r in wanted_sent} & good
                if rows >= sent_good and rows:
                    break
                time.sleep(0.5)
        finally:
            agent.stop()
            ingest.stop()
            rig.stop()
    # Everything stored is a value the server published, with its source timestamp.
    assert rows and rows <= good, sorted(rows - good)[:5]
    assert not {(ts, m) for ts, m, _ in rows} & bad, "a bad-quality value was stored"
    first_ms = min(ts for ts, _, _ in rows)
    # The second server's values are owed from the agent's DBIRTH after its new subscription
    # (what the server sampled before the agent subscribed again is not: OPC UA gives the
    # current value at subscription, not the values before it).
    after_restart = min(ts for ts, _, _ in rows if ts > stopped_at_ms)
    # Completeness: all the server published while subscribed, except the last publishing
    # interval before it stopped (and what it published after the agent was stopped).
    expected = {
        (ts, tag, v)
        for ts, tag, v in good
        if first_ms <= ts < stopped_at_ms - 1000 or reborn_ms <= ts < end_ms - 1500
    }
    missing = expected - rows
    assert not missing, (
        f"{len(missing)} of {len(expected)} missing, e.g. {sorted(missing)[:5]}; server stopped"
        f" at {stopped_at_ms}, DBIRTH again by {reborn_ms}, first row after {after_restart}"
    )
    # Alarm mode really sampled faster: ~10 values/s per tag during it.
    assert len(expected) > 4 * (3 * 2 + 3 * 10)
    # The server going away is one WARNING of ours, not asyncua's ERROR and traceback.
    agent_log = (tmp_path / "edge" / "agent.log").read_text(encoding="utf-8")
    assert "WARNING edge.agent: device opc unavailable" in agent_log
    assert " ERROR " not in agent_log and "Traceback" not in agent_log, agent_log
