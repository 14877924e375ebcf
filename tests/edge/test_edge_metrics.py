"""``/metrics`` of a real edge agent process against a real Mosquitto: the queue depth and
age, the connection state and the version it reports are the queue's real contents."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.agent import AGENT_VERSION
from harness import Mosquitto
from harness.derrick import EdgeSpec, SimulatedDevice, edge_process
from harness.ports import allocate_port

pytestmark = [pytest.mark.integration]

SITE = "s005"
NODE = f"{SITE}-a001"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _queued_samples(queue: Path) -> int:
    db = sqlite3.connect(f"file:{queue}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT coalesce(sum(samples), 0) FROM batch").fetchone()[0])
    finally:
        db.close()


def test_edge_metrics_show_the_real_queue(tmp_path: Path, mosquitto: Mosquitto) -> None:
    port = allocate_port()
    base = tmp_path / NODE
    # No Primary Host: the agent is born (not waiting for STATE), publishes, and nothing is
    # ever acknowledged, so the queue only grows.
    spec = EdgeSpec(
        site=SITE,
        appliance=NODE,
        devices=[SimulatedDevice("daq", seed=5)],
        normal_per_min=600,
        wait_for_primary_host=False,
        extra=f"\n[metrics]\nport = {port}\n",
    )
    edge = edge_process(spec, base, [mosquitto.port])
    edge.start()
    try:
        deadline = time.monotonic() + 60
        m: Samples = {}
        while time.monotonic() < deadline:
            try:
                m = _scrape(port)
            except OSError:
                m = {}
            if (
                m.get(("derrick_edge_queue_samples", ()), 0) > 0
                and m.get(("derrick_edge_live", ()), 0) == 1
            ):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no live agent with a non-empty queue in 60 s: {m}")
        queued_after = _queued_samples(base / "queue.db")
    finally:
        edge.stop()

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    # Nothing is acknowledged or evicted: the queue only grows, so what the scrape saw lies
    # between one sample and what the queue holds afterwards.
    assert 0 < value("derrick_edge_queue_samples") <= queued_after
    assert value("derrick_edge_queue_batches") >= 1
    assert 0 < value("derrick_edge_queue_bytes") <= value("derrick_edge_queue_max_bytes")
    assert 0 < value("derrick_edge_oldest_unacked_age_seconds") < 60
    assert value("derrick_edge_acked_batch") == 0
    assert value("derrick_edge_evicted_samples_total") == 0
    assert value("derrick_edge_connected_seconds") > 0
    assert value("derrick_edge_published_samples_total") > 0
    assert value("derrick_edge_sampling_mode", mode="normal") == 1
    assert value("derrick_edge_sampling_mode", mode="alarm") == 0
    assert value("derrick_edge_info", appliance=NODE, version=AGENT_VERSION) == 1
    assert 0 <= value("derrick_edge_status_age_seconds") < 30
    assert ("derrick_edge_last_ack_age_seconds", ()) not in m


def test_edge_json_logs_are_one_object_per_line(tmp_path: Path, mosquitto: Mosquitto) -> None:
    spec = EdgeSpec(site=SITE, appliance=NODE, devices=[SimulatedDevice("daq", seed=6)],
                    wait_for_primary_host=False)  # fmt: skip
    config = tmp_path / "agent.toml"
    config.write_text(spec.toml([mosquitto.port], tmp_path / "queue.db"), encoding="utf-8")
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge", "--log-format", "json", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert agent.stderr is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = agent.stderr.readline()
            assert line, "the agent exited"
            lines.append(json.loads(line))
            if "starting" in lines[-1]["message"]:
                break
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)
    start = lines[-1]
    assert start["logger"] == "edge.agent" and start["level"] == "INFO"
    assert start["message"].startswith(f"edge node {SITE}/{NODE} starting")
