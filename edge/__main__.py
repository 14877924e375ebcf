"""``derrick-edge``: the edge agent's command line.

- ``derrick-edge run --config agent.toml``: run the agent until SIGTERM/SIGINT;
- ``derrick-edge check-config --config agent.toml``: validate and exit (0 valid, 2 invalid).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from edge.agent import EdgeAgent
from edge.config import ConfigError, load_config, read_password

log = logging.getLogger("edge")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="derrick-edge", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "check-config"):
        p = sub.add_parser(name)
        p.add_argument("--config", type=Path, required=True)
    return parser


async def _run(agent: EdgeAgent) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runner = asyncio.create_task(agent.run(), name="edge-agent")
    waiter = asyncio.create_task(stopping.wait(), name="stop-signal")
    done, _ = await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if runner in done:
        waiter.cancel()
        runner.result()
        return
    log.info("stopping: NDEATH, final commit")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(agent.stop_gracefully(), 2)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = load_config(args.config)
        password = read_password(cfg.mqtt)
    except ConfigError as exc:
        print(f"derrick-edge: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: valid ({cfg.node.appliance}, {cfg.sensor_count()} sensors)")
        return 0
    asyncio.run(_run(EdgeAgent(cfg, password=password)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
