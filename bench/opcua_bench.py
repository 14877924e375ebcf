"""OPC UA source benchmark: values/s one edge agent reads from an OPC UA server with 200
monitored items, and the agent's CPU doing it.

The server is ``harness.opcua_rig`` in its own process: 13 simulated rigs (``Rig01`` ..
``Rig13``), all sixteen tags each; the agent (a real process, ``derrick-edge run``) reads
them as 13 OPC UA devices (12 × 16 + 1 × 8 tags = 200 monitored items, one session and one
subscription each) and publishes to a real Mosquitto (births at once, no Primary Host, no
acknowledgements; unacknowledged batches are not re-sent during the run). The server
samples at the interval the agent's mode asks for; each level runs at a sampling interval
(``--levels``, ms) and counts the values the agent published (a Sparkplug subscriber
decodes every DDATA) over the window; CPU is utime + stime of the agent (and of the
server) from /proc, as a share of one core. At the end of each level the agent gets SIGTERM:
its exit code and how long it took are printed (13 OPC UA sessions to close).

Usage: ``python bench/opcua_bench.py [--seconds 20] [--levels 1000,200] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine

from harness import Mosquitto
from harness.derrick import ALL_TAGS, EdgeSpec, OpcUaDeviceSpec, edge_process, opcua_rig_process
from harness.observer import SparkplugObserver
from harness.ports import allocate_port

SITE = "s901"
RIGS = 13
ITEMS = 200


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def devices(endpoint: str) -> list[OpcUaDeviceSpec]:
    out, left = [], ITEMS
    for i in range(1, RIGS + 1):
        tags = ALL_TAGS[: min(len(ALL_TAGS), left)]
        left -= len(tags)
        out.append(OpcUaDeviceSpec(f"rig{i:02d}", endpoint, tags, prefix=f"Rig{i:02d}"))
    return out


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def run_level(sampling_ms: int, seconds: float) -> dict[str, Any]:
    per_min = round(ITEMS * 60_000 / sampling_ms)  # every sensor once per sampling interval
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        port = allocate_port()
        rig_dir = Path(tmp) / "rig"
        prefixes = [a for i in range(1, RIGS + 1) for a in ("--prefix", f"Rig{i:02d}")]
        rig = opcua_rig_process(rig_dir, port, args=prefixes)
        spec = EdgeSpec(
            site=SITE,
            appliance=f"{SITE}-a001",
            devices=list(devices(f"opc.tcp://127.0.0.1:{port}/derrick/rig")),
            normal_per_min=per_min,
            alarm_per_min=per_min,
            publish_interval_ms=1000,
            ack_timeout_ms=3_600_000,
            wait_for_primary_host=False,
        )
        agent = edge_process(spec, Path(tmp) / "edge", [broker.port])
        with SparkplugObserver("127.0.0.1", broker.port) as observer:
            try:
                rig.start()
                wait_for(lambda: "serving" in (rig_dir / "rig.log").read_text(), 180, "the server")
                agent.start()
                wait_for(lambda: observer.counts["DBIRTH"] >= RIGS, 180, "13 DBIRTHs")
                time.sleep(5)  # warm-up
                assert agent.pid is not None and rig.pid is not None
                rows0, a0, s0 = len(observer.snapshot()), proc_cpu_s(agent.pid), proc_cpu_s(rig.pid)
                t0 = time.monotonic()
                time.sleep(seconds)
                rows1, a1, s1 = len(observer.snapshot()), proc_cpu_s(agent.pid), proc_cpu_s(rig.pid)
                elapsed = time.monotonic() - t0
                status = json.loads((rig_dir / "status.json").read_text())
            finally:
                asked = time.monotonic()
                agent_rc = agent.stop()  # SIGTERM; SIGKILL after 20 s
                stop_s = time.monotonic() - asked
                rig.stop()
    values = (rows1 - rows0) / elapsed
    return {
        "sampling_ms": sampling_ms,
        "monitored_items": ITEMS,
        "server_sampling_ms": status.get("sampling_ms"),
        "offered_values_per_s": ITEMS * 1000 / sampling_ms,
        "values_per_s": round(values, 1),
        "agent_cpu_share": round((a1 - a0) / elapsed, 3),
        "agent_cpu_us_per_value": round((a1 - a0) / max(1.0, rows1 - rows0) * 1e6, 1),
        "server_cpu_share": round((s1 - s0) / elapsed, 3),
        "seconds": round(elapsed, 1),
        "agent_exit": agent_rc,
        "agent_stop_s": round(stop_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--levels", default="1000,200", help="sampling intervals, ms")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [run_level(int(ms), args.seconds) for ms in args.levels.split(",")]
    report = {"machine": machine(), "opcua": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(f"{m['cpu']} ({m['cores']} cores), Python {m['python']}, {m['date']}")
    print(
        f"{'sampling ms':>11} {'offered/s':>10} {'values/s':>9} {'agent CPU':>9} "
        f"{'µs/value':>9} {'server CPU':>10} {'SIGTERM: rc in s':>16}"
    )
    for r in results:
        print(
            f"{r['sampling_ms']:>11} {r['offered_values_per_s']:>10.0f} {r['values_per_s']:>9.1f} "
            f"{r['agent_cpu_share']:>9.1%} {r['agent_cpu_us_per_value']:>9.1f} "
            f"{r['server_cpu_share']:>10.1%} {r['agent_exit']!s:>8} in {r['agent_stop_s']:>4.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
