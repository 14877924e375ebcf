"""Edge agent benchmarks: queue throughput, agent CPU and memory at alarm rate, backlog drain,
bytes on the wire per value.

* ``queue``: the SQLite store-and-forward queue alone (``synchronous=FULL``): commit N samples
  in one transaction (one fsync), then acknowledge them; samples/s for both, at several batch
  sizes. The limit is one fsync per commit on this disk (also measured: an empty commit).
* ``agent``: a real agent process (16 sensors at the alarm rate, 3000 values/min) on a real
  Mosquitto, acknowledged by a minimal Primary Host in this process; CPU (utime + stime from
  /proc) as a share of one core, peak RSS (VmHWM).
* ``drain``: a one-hour alarm backlog (180,000 readings, imported with
  ``derrick-edge import-legacy``) drained over loopback with a generous link budget, until the
  host has acknowledged every batch.
* ``wire``: bytes of MQTT payload per value, live and during replay (compressed historical).

Usage: ``python bench/edge_bench.py [--quick] [--json]`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
from _common import machine
from paho.mqtt.enums import CallbackAPIVersion

from core import conventions
from core.sparkplug import (
    DataType,
    Metric,
    Payload,
    decode_payload,
    decompress_payload,
    encode_payload,
    is_compressed,
)
from edge.queue import PendingSample, StoreAndForwardQueue
from harness import Mosquitto
from harness.derrick import ALL_TAGS, EdgeSpec, SimulatedDevice, edge_process
from ingest.nodes import AckFrontier

ROOT = Path(__file__).resolve().parent.parent
SITE = "s900"


# -- queue -------------------------------------------------------------------------------


def bench_queue(quick: bool) -> list[dict[str, Any]]:
    rows = []
    total = 50_000 if quick else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (50, 500, 5000):
            q = StoreAndForwardQueue(Path(tmp) / f"q{batch}.db", max_bytes=2_000_000_000)
            q.open()
            t0 = 1_800_000_000_000
            commits: list[float] = []
            start = time.perf_counter()
            n = 0
            while n < total:
                pending = [PendingSample(1 + i % 16, t0 + n + i, 1000.0 + i) for i in range(batch)]
                c0 = time.perf_counter()
                q.commit({"daq": pending}, now_ms=n)
                commits.append(time.perf_counter() - c0)
                n += batch
            commit_s = time.perf_counter() - start
            newest = q.stats().newest_batch or 0
            acks: list[float] = []
            start = time.perf_counter()
            for upto in range(1, newest + 1, max(1, newest // 200)):
                a0 = time.perf_counter()
                q.ack(upto)
                acks.append(time.perf_counter() - a0)
            q.ack(newest)
            ack_s = time.perf_counter() - start
            q.close()
            rows.append(_row(f"queue commit, {batch}/txn", n, n / commit_s, commits))
            rows.append(_row(f"queue ack, ~{n // len(acks)}/txn", n, n / ack_s, acks))
        q = StoreAndForwardQueue(Path(tmp) / "empty.db", max_bytes=2_000_000_000)
        q.open()
        fsyncs: list[float] = []
        for i in range(200 if quick else 1000):
            f0 = time.perf_counter()
            q.commit({"daq": [PendingSample(1, i, 0.0)]}, now_ms=i)
            fsyncs.append(time.perf_counter() - f0)
        q.close()
        rows.append(
            _row("limit: 1-sample commit (fsync)", len(fsyncs), len(fsyncs) / sum(fsyncs), fsyncs)
        )
    return rows


def _row(
    what: str, count: int, per_s: float, samples_s: list[float], **extra: Any
) -> dict[str, Any]:
    ordered = sorted(samples_s)
    p50 = ordered[len(ordered) // 2] * 1000 if ordered else None
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000 if ordered else None
    return {"what": what, "count": count, "per_s": per_s, "p50_ms": p50, "p99_ms": p99, **extra}


# -- a minimal acknowledging Primary Host ------------------------------------------------


class AckingHost:
    """STATE online, then acknowledges every batch it sees (cumulative), counts bytes."""

    def __init__(self, port: int) -> None:
        self.frontier: dict[str, AckFrontier] = {}
        self.ack_alias: dict[str, int] = {}
        self.types: dict[str, dict[int, DataType]] = {}
        self.live_bytes = self.live_values = self.hist_bytes = self.hist_values = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-host")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"spBv1.0/{SITE}/#", qos=0)
        state = json.dumps({"online": True, "timestamp": int(time.time() * 1000)})
        self.client.publish("spBv1.0/STATE/derrick", state, qos=1, retain=True)
        self.client.loop_start()

    def acked(self, node: str) -> int:
        with self.lock:
            f = self.frontier.get(node)
            return 0 if f is None else f.value

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        kind, node = parts[2], parts[3]
        payload = bytes(msg.payload)
        if kind in ("NBIRTH", "DBIRTH"):
            p = decode_payload(payload)
            types = self.types.setdefault(node, {})
            for m in p.metrics:
                if m.alias is not None and m.datatype is not None:
                    types[m.alias] = m.datatype
                if m.name == conventions.ACKED_BATCH_METRIC and m.alias is not None:
                    self.ack_alias[node] = m.alias
                    with self.lock:
                        self.frontier.setdefault(node, AckFrontier()).advance_to(int(m.value or 0))
            return
        if kind != "DDATA":
            return
        outer = decode_payload(payload, self.types.get(node))
        p = decompress_payload(outer, self.types.get(node))
        n = len(p.metrics)
        historical = bool(p.metrics) and p.metrics[0].is_historical
        with self.lock:
            if historical:
                self.hist_bytes += len(payload)
                self.hist_values += n
            else:
                self.live_bytes += len(payload)
                self.live_values += n
            if p.batch is None:
                return
            f = self.frontier.setdefault(node, AckFrontier())
            if not f.commit([p.batch]):
                return
            value = f.value
        alias = self.ack_alias.get(node)
        if alias is None:
            return
        ack = encode_payload(
            Payload(timestamp=int(time.time() * 1000), metrics=[Metric(alias=alias, value=value)]),
            {alias: DataType.UInt64},
        )
        self.client.publish(f"spBv1.0/{SITE}/NCMD/{node}", ack, qos=0)
        _ = is_compressed(outer)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_agent(quick: bool, *, compress_live: bool = True) -> list[dict[str, Any]]:
    seconds = 20 if quick else 60
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        host = AckingHost(broker.port)
        spec = EdgeSpec(site=SITE, appliance=f"{SITE}-a001",
                        devices=[SimulatedDevice("daq", ALL_TAGS, seed=1)],
                        normal_per_min=3000, alarm_per_min=3000,
                        compress_live=compress_live)  # fmt: skip
        proc = edge_process(spec, Path(tmp) / "agent", [broker.port])
        proc.start()
        try:
            deadline = time.monotonic() + 60
            while host.acked(spec.appliance) == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert proc.pid is not None
            time.sleep(3)  # past start-up
            cpu0, t0, v0 = _proc_cpu_s(proc.pid), time.monotonic(), host.live_values
            time.sleep(seconds)
            cpu1, t1, v1 = _proc_cpu_s(proc.pid), time.monotonic(), host.live_values
            hwm = _proc_hwm_mb(proc.pid)
        finally:
            proc.stop()
            host.close()
    cpu_share = (cpu1 - cpu0) / (t1 - t0)
    values = v1 - v0
    return [
        {
            "what": "agent at alarm rate, 16 sensors"
            + ("" if compress_live else ", compress_live = false"),
            "count": values,
            "per_s": values / (t1 - t0),
            "cpu_pct_of_core": 100 * cpu_share,
            "peak_rss_mb": hwm,
            "live_bytes_per_value": host.live_bytes / max(1, host.live_values),
        }
    ]


def _write_backlog(path: Path, appliance: str, samples: int) -> None:
    t0 = (time.time_ns() // 1_000_000 - 3_700_000) * 1_000_000
    with path.open("w") as f:
        f.write(json.dumps({"format": "derrick-legacy-handoff", "version": 1,
                            "appliance": appliance, "source_version": "v4.2",
                            "precision": "ms"}) + "\n")  # fmt: skip
        rng = random.Random(5)
        level = {tag: 100.0 for tag in ALL_TAGS}
        for i in range(samples):
            tag = ALL_TAGS[i % 16]
            level[tag] = round(level[tag] + rng.gauss(0, 0.5), 2)
            ts = t0 + (i // 16) * 320_000_000
            f.write(
                json.dumps({"device": "daq", "tag": tag, "ts_ns": ts, "value": level[tag]}) + "\n"
            )
        f.write(json.dumps({"end": "derrick-legacy-handoff", "readings": samples}) + "\n")


def bench_drain(quick: bool) -> list[dict[str, Any]]:
    samples = 36_000 if quick else 180_000
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        appliance = f"{SITE}-a002"
        spec = EdgeSpec(site=SITE, appliance=appliance,
                        devices=[SimulatedDevice("daq", ALL_TAGS, seed=2)],
                        normal_per_min=150, alarm_per_min=3000,
                        link_bytes_per_s=50_000_000, publish_interval_ms=200)  # fmt: skip
        proc = edge_process(spec, Path(tmp) / "agent", [broker.port])
        backlog = Path(tmp) / "backlog.jsonl"
        _write_backlog(backlog, appliance, samples)
        imported = subprocess.run(
            [sys.executable, "-m", "edge", "import-legacy", "--config",
             str(Path(tmp) / "agent" / "agent.toml"), str(backlog)],
            capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
        if imported.returncode != 0:
            raise SystemExit(imported.stdout + imported.stderr)
        db = sqlite3.connect(Path(tmp) / "agent" / "queue.db")
        top = db.execute("SELECT max(id) FROM batch").fetchone()[0]
        db.close()
        host = AckingHost(broker.port)
        start = time.monotonic()
        proc.start()
        try:
            while host.acked(appliance) < top and time.monotonic() - start < 600:
                time.sleep(0.1)
            drained = time.monotonic() - start
        finally:
            proc.stop()
            host.close()
    return [
        {
            "what": f"drain {samples:,}-reading backlog (loopback)",
            "count": samples,
            "per_s": samples / drained,
            "seconds": drained,
            "replay_bytes_per_value": host.hist_bytes / max(1, host.hist_values),
        }
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--only", choices=["queue", "agent", "drain"], action="append")
    args = parser.parse_args()
    parts = args.only or ["queue", "agent", "drain"]
    results: list[dict[str, Any]] = []
    if "queue" in parts:
        results += bench_queue(args.quick)
    if "agent" in parts:
        results += bench_agent(args.quick)
        results += bench_agent(True, compress_live=False)
    if "drain" in parts:
        results += bench_drain(args.quick)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "machine": machine(sqlite=sqlite3.sqlite_version),
        "bench_peak_rss_mb": rss,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, SQLite {m['sqlite']}, "
          f"load {m['loadavg'][0]:.1f}, {m['date']}")  # fmt: skip
    print(f"{'what':44} {'count':>9} {'per s':>11} {'p50 ms':>8} {'p99 ms':>8}  other")
    for r in results:
        other = {
            k: v for k, v in r.items() if k not in ("what", "count", "per_s", "p50_ms", "p99_ms")
        }
        p50 = f"{r['p50_ms']:.2f}" if r.get("p50_ms") is not None else "-"
        p99 = f"{r['p99_ms']:.2f}" if r.get("p99_ms") is not None else "-"
        extra = ", ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in other.items()
        )
        print(f"{r['what']:44} {r['count']:>9,} {r['per_s']:>11,.0f} {p50:>8} {p99:>8}  {extra}")
    print(f"benchmark process peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
