"""``./derrick up``: the whole system on this machine, with a simulated drill site.

Starts Mosquitto, QuestDB and PostgreSQL on free loopback ports in a run directory, then an
ingest worker, an OPC UA server serving simulated rigs (``harness.opcua_rig``) and a site of
simulated appliances running the real edge agent, each through its own command line; every
third appliance also reads a rig over OPC UA (device ``opc``) besides its local channels.
Prints where to look, runs until Ctrl-C (or ``--duration`` seconds),
then stops everything, the programs first, the services last.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from core.ids import check_site_id
from harness.derrick import (
    EdgeSpec,
    OpcUaDeviceSpec,
    SimulatedDevice,
    edge_process,
    ingest_process,
    opcua_rig_process,
)
from harness.errors import HarnessError
from harness.ports import allocate_port
from harness.process import ManagedProcess
from harness.stack import ServiceStack


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="derrick up", description=__doc__.splitlines()[0])
    p.add_argument(
        "--site", default="s001", type=check_site_id, help="simulated site id (default s001)"
    )
    p.add_argument("--appliances", type=int, default=10, help="appliances on the site")
    p.add_argument("--dir", type=Path, help="run directory (default: a new temporary one)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--summary-json", type=Path, help="write a JSON summary here at the end")
    return p


def _rows(stack: ServiceStack, sql: str) -> list[list[Any]]:
    dataset: list[list[Any]] = stack.questdb.exec_sql(sql)["dataset"]
    return dataset


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_dir = args.dir or Path(tempfile.mkdtemp(prefix="derrick-up-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    print(f"[up] run directory: {run_dir}", flush=True)
    stack = ServiceStack(run_dir / "services")
    programs: list[ManagedProcess] = []
    try:
        print("[up] starting Mosquitto, QuestDB, PostgreSQL ...", flush=True)
        stack.start()
        ingest = ingest_process(
            run_dir / "ingest",
            mqtt_port=stack.mosquitto.port,
            ilp_conf=stack.questdb.ilp_conf,
            pg_dsn=stack.questdb.pg_dsn,
        )
        ingest.start()
        programs.append(ingest)
        opc_port = allocate_port()
        opc_endpoint = f"opc.tcp://127.0.0.1:{opc_port}/derrick/rig"
        opc_appliances = [i for i in range(1, args.appliances + 1) if i % 3 == 0]
        rig_args = [a for i in opc_appliances for a in ("--prefix", f"Rig{i:03d}")]
        if opc_appliances:
            rig = opcua_rig_process(run_dir / "opcua", opc_port, args=rig_args)
            rig.start()
            programs.append(rig)
        for i in range(1, args.appliances + 1):
            appliance = f"{args.site}-a{i:03d}"
            devices: list[SimulatedDevice | OpcUaDeviceSpec] = [SimulatedDevice("daq", seed=i)]
            if i in opc_appliances:
                devices.append(
                    OpcUaDeviceSpec(
                        "opc", opc_endpoint, ("GAS", "H2S", "PIT", "SPP"), prefix=f"Rig{i:03d}"
                    )
                )
            spec = EdgeSpec(site=args.site, appliance=appliance, devices=devices)
            agent = edge_process(spec, run_dir / "edge" / appliance, [stack.mosquitto.port])
            agent.start()
            programs.append(agent)
        q = stack.questdb
        print(
            "\n".join(
                [
                    "",
                    "Derrick is up.",
                    f"  QuestDB web console:  {q.http_url}",
                    f"  QuestDB PGWire:       psql -h 127.0.0.1 -p {q.pg_port} -U admin qdb"
                    "  (password: quest)",
                    f"  MQTT broker:          mqtt://127.0.0.1:{stack.mosquitto.port}"
                    f"  (try: mosquitto_sub -p {stack.mosquitto.port} -t 'spBv1.0/#' -v)",
                    f"  PostgreSQL:           port {stack.postgres.port}",
                    f"  OPC UA rig server:    {opc_endpoint}"
                    f"  (try: derrick-edge opcua-browse --endpoint {opc_endpoint})",
                    "  SQL to paste into the console:",
                    "    SELECT node, metric, count(), last(value), max(ts) FROM telemetry_raw"
                    " GROUP BY node, metric ORDER BY node, metric;",
                    f"  Logs:                 {run_dir}/ingest/ingest.log,"
                    f" {run_dir}/edge/<appliance>/agent.log, {run_dir}/services/*/",
                    "Press Ctrl-C to stop.",
                    "",
                ]
            ),
            flush=True,
        )
        started = time.monotonic()
        while not stop.wait(5.0):
            dead = [p.name for p in programs if not p.running]
            if dead:
                raise HarnessError(f"{', '.join(dead)} exited; see the logs in {run_dir}")
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
        summary = _summary(stack, args)
        print(f"[up] {json.dumps(summary)}", flush=True)
        if args.summary_json:
            args.summary_json.write_text(json.dumps(summary), encoding="utf-8")
    except HarnessError as exc:
        print(f"[up] error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("[up] stopping ...", flush=True)
        for program in reversed(programs):
            program.stop(timeout=15)
        stack.stop()
        print("[up] stopped.", flush=True)
    return 0


def _summary(stack: ServiceStack, args: argparse.Namespace) -> dict[str, Any]:
    try:
        # The site's own rows: the KPI edge node's (group derrick-cloud) are not the site's.
        where = f"WHERE site = '{args.site}'"  # a checked site id (argument type)
        nodes = _rows(stack, f"SELECT count_distinct(node) FROM telemetry_raw {where}")[0][0]
        rows = _rows(stack, f"SELECT count() FROM telemetry_raw {where}")[0][0]
    except HarnessError as exc:
        return {"error": str(exc)}
    return {"site": args.site, "appliances": args.appliances, "nodes_stored": nodes, "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
