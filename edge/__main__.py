"""``derrick-edge``: the edge agent's command line.

- ``derrick-edge run --config agent.toml``: run the agent until SIGTERM/SIGINT;
- ``derrick-edge check-config --config agent.toml``: validate and exit (0 valid, 2 invalid);
- ``derrick-edge health --config agent.toml``: 0 when the running agent is healthy, 1 when
  not (each reason printed), 2 when the configuration is invalid;
- ``derrick-edge opcua-browse --endpoint opc.tcp://host:4840 [--device-id opc]``: browse an
  OPC UA server and print a proposed ``[[devices]]`` block (node id → tag, unit); 1 when
  the server cannot be browsed. ``--security SignAndEncrypt`` with ``--certificate``,
  ``--private-key`` and ``--server-certificate`` (Basic256Sha256);
- ``derrick-edge import-legacy --config agent.toml FILE``: queue a legacy installation's
  unsent readings (``docs/legacy-handoff.md``); 0 imported or already imported, 2 invalid
  (nothing queued), 1 the queue cannot take it (nothing queued).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import io
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from core.config import ConfigError
from core.logformat import LOG_FORMATS, configure_logging
from core.runtime import run_until_signal
from edge import metrics
from edge.agent import EdgeAgent
from edge.config import (
    AgentConfig,
    OpcUaDevice,
    SensorConfig,
    load_config,
    read_password,
)
from edge.legacy import HandoffError, import_handoff
from edge.queue import QueueError, StoreAndForwardQueue
from edge.status import check_health

log = logging.getLogger("edge")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="derrick-edge", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "check-config", "health"):
        p = sub.add_parser(name)
        p.add_argument("--config", type=Path, required=True)
    p = sub.add_parser("opcua-browse", help="propose the sensor mapping of an OPC UA server")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--device-id", default="opc")
    p.add_argument("--security", choices=("None", "SignAndEncrypt"), default="None")
    p.add_argument("--certificate", type=Path)
    p.add_argument("--private-key", type=Path)
    p.add_argument("--server-certificate", type=Path)
    p = sub.add_parser("import-legacy", help="queue a legacy hand-off file's readings")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("file", type=Path)
    return parser


def _utc(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return datetime.fromtimestamp(ts_ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{ts_ns % 10**9:09d}Z"
    )


def _import_legacy(cfg: AgentConfig, path: Path) -> int:
    queue = StoreAndForwardQueue(
        cfg.queue.path, max_bytes=cfg.queue.max_bytes, fsync=cfg.queue.fsync
    )
    try:
        queue.open()
        result = import_handoff(path, cfg, queue, now_ns=time.time_ns())
    except HandoffError as exc:
        print(f"derrick-edge: invalid hand-off {exc.path}, nothing queued:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        if exc.invalid_lines > len(exc.problems):
            print(f"  ... {exc.invalid_lines} invalid lines in all", file=sys.stderr)
        return 2
    except QueueError as exc:
        print(f"derrick-edge: cannot import {path}, nothing queued: {exc}", file=sys.stderr)
        return 1
    finally:
        queue.close()
    if result.already_imported:
        print(
            f"{path}: already imported ({result.readings} readings, sha256 {result.sha256}, "
            f"at {_utc((result.imported_ms or 0) * 10**6)[:23]}Z); nothing queued"
        )
        return 0
    devices = ", ".join(f"{d} {n}" for d, n in sorted(result.by_device.items())) or "none"
    print(
        f"{path}: imported {result.readings} readings ({devices}) from {result.source_version} "
        f"at precision {result.precision} in {result.batches} historical batch(es); "
        f"{_utc(result.first_ts_ns)} .. {_utc(result.last_ts_ns)}; sha256 {result.sha256}"
    )
    return 0


def _opcua_browse(args: argparse.Namespace) -> int:
    # asyncua is slow to import: only the commands that use it pay for it.
    from edge.sources.opcua_browse import BrowseError, browse, proposal_toml  # noqa: PLC0415

    try:
        device = OpcUaDevice(
            id=args.device_id,
            endpoint=args.endpoint,
            security=args.security,
            certificate=args.certificate,
            private_key=args.private_key,
            server_certificate=args.server_certificate,
            sensors=[SensorConfig(tag="WOB", unit="klbf", node_id="i=0")],  # unused
        )
        proposals = asyncio.run(browse(device))
    except BrowseError as exc:
        print(f"derrick-edge: {exc}", file=sys.stderr)
        return 1
    print(proposal_toml(args.device_id, args.endpoint, proposals), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level.upper(), args.log_format)
    # asyncua narrates every connection attempt at INFO; our OPC UA source logs what matters.
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.command == "opcua-browse":
        return _opcua_browse(args)
    try:
        cfg = load_config(args.config)
        password = read_password(cfg.mqtt) if args.command != "import-legacy" else None
    except ConfigError as exc:
        print(f"derrick-edge: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: valid ({cfg.node.appliance}, {cfg.sensor_count()} sensors)")
        return 0
    if args.command == "import-legacy":
        return _import_legacy(cfg, args.file)
    if args.command == "health":
        healthy, reasons = check_health(cfg, time.time_ns() // 1_000_000)
        for reason in reasons:
            print(f"{'healthy' if healthy else 'UNHEALTHY'}: {reason}")
        return 0 if healthy else 1
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a stuck agent in the field.
    with contextlib.suppress(io.UnsupportedOperation, ValueError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    agent = EdgeAgent(cfg, password=password)
    if cfg.metrics.port is not None:
        metrics.serve(agent, cfg.metrics.port, cfg.metrics.address)
    asyncio.run(
        run_until_signal(
            agent.run(),
            name="edge-agent",
            farewell=[(agent.stop_gracefully, 2.0)],
            stopping_message="NDEATH, final commit",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
