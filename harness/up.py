"""``./derrick up``: the whole system on this machine, with a simulated drill site.

Starts Mosquitto, QuestDB and PostgreSQL on free loopback ports in a run directory, then an
ingest worker, an OPC UA server serving simulated rigs (``harness.opcua_rig``) and a site of
simulated appliances running the real edge agent, each through its own command line; every
third appliance also reads a rig over OPC UA (device ``opc``) besides its local channels.
The registry is migrated and given a demo tenant owning the site, with an API key (written
to ``<run>/api/demo-key``, mode 0600, never printed); the customer API and the alert
service run against it.
Prints where to look, runs until Ctrl-C (or ``--duration`` seconds),
then stops everything, the programs first, the services last.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from core.ids import check_site_id
from harness.derrick import (
    EdgeSpec,
    OpcUaDeviceSpec,
    SimulatedDevice,
    api_process,
    edge_process,
    ingest_process,
    opcua_rig_process,
    python_env,
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


def _cli(env: dict[str, str], *args: str) -> str:
    """One ``python -m api`` command, as an operator would run it; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "api", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise HarnessError(f"python -m api {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def _registry(stack: ServiceStack, run_dir: Path, site: str) -> tuple[dict[str, str], Path]:
    """Migrate the registry and give it a demo tenant owning the site, one viewer and an API
    key (in a 0600 file). The environment the API commands need, and the key's path."""
    env = python_env()
    env["DERRICK_PG_DSN"] = stack.postgres.dsn_for("postgres")
    env["DERRICK_QUESTDB_PG"] = stack.questdb.pg_dsn
    _cli(env, "migrate")
    _cli(env, "tenant", "demo", "Demo Drilling")
    _cli(env, "site", site, "demo", "--name", "Simulated site")
    user = _cli(env, "user", "demo", "viewer@demo.example", "customer_viewer")
    key = _cli(env, "key", user, "--label", "derrick up")
    key_path = run_dir / "api" / "demo-key"
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return env, key_path


def _alerts_process(run_dir: Path, env: dict[str, str], mqtt_port: int) -> ManagedProcess:
    base = run_dir / "alerts"
    base.mkdir(parents=True, exist_ok=True)
    config = base / "alerts.toml"
    config.write_text(
        f'[mqtt]\nport = {mqtt_port}\nclient_id = "alerts-up"\n[evaluator]\nname = "alerts-up"\n',
        encoding="utf-8",
    )
    return ManagedProcess(
        "alerts",
        [sys.executable, "-m", "alerts", "run", "--config", str(config)],
        log_path=base / "alerts.log",
        env=env,
        cwd=base,
    )


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
        print("[up] registry: migrations, demo tenant, API key ...", flush=True)
        env, key_path = _registry(stack, run_dir, args.site)
        api_port = allocate_port()
        api = api_process(
            run_dir / "api",
            port=api_port,
            registry_dsn=env["DERRICK_PG_DSN"],
            questdb_dsn=stack.questdb.pg_dsn,
        )
        api.start()
        programs.append(api)
        alerts = _alerts_process(run_dir, env, stack.mosquitto.port)
        alerts.start()
        programs.append(alerts)
        _wait_ready(f"http://127.0.0.1:{api_port}/ready", api, timeout=180)
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
                    f"  Customer API:         http://127.0.0.1:{api_port}/schema"
                    f'  (key of tenant demo in {key_path}; try: curl -H "X-API-Key:'
                    f' $(cat {key_path})" http://127.0.0.1:{api_port}/v1/sites)',
                    f"  OPC UA rig server:    {opc_endpoint}"
                    f"  (try: derrick-edge opcua-browse --endpoint {opc_endpoint})",
                    "  SQL to paste into the console:",
                    "    SELECT node, metric, count(), last(value), max(ts) FROM telemetry_raw"
                    " GROUP BY node, metric ORDER BY node, metric;",
                    f"  Logs:                 {run_dir}/ingest/ingest.log,"
                    f" {run_dir}/edge/<appliance>/agent.log, {run_dir}/api/api.log,"
                    f" {run_dir}/alerts/alerts.log, {run_dir}/services/*/",
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
        _cli(env, "sync-catalogue")  # the appliances the births declared, into the registry
        summary = _summary(stack, args)
        summary["api"] = _api_summary(api_port, key_path, args.site)
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


def _wait_ready(url: str, program: ManagedProcess, timeout: float) -> None:
    """Until ``url`` answers 200 (the program is up and its dependencies reachable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not program.running:
            raise HarnessError(f"{program.name} exited; see {program.log_path}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise HarnessError(f"{program.name} not ready after {timeout:.0f} s ({url})")


def _api_summary(port: int, key_path: Path, site: str) -> dict[str, Any]:
    """What the demo tenant sees through the API: its sites, and the site with its appliances."""
    key = key_path.read_text().strip()
    out: dict[str, Any] = {}
    for name, path in (("sites", "/v1/sites"), ("site", f"/v1/sites/{site}")):
        try:
            response = httpx.get(
                f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": key}, timeout=10
            )
            out[name] = {"status": response.status_code, "body": response.json()}
        except (httpx.HTTPError, ValueError) as exc:
            out[name] = {"error": str(exc)}
    return out


if __name__ == "__main__":
    sys.exit(main())
