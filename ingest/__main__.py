"""``derrick-ingest``: the ingest worker (Sparkplug Primary Host) command line.

``derrick-ingest run --config ingest.toml`` runs until SIGTERM/SIGINT. The QuestDB ILP
configuration string and PGWire DSN come from the environment variables the config names
(defaults ``DERRICK_QUESTDB_ILP``, ``DERRICK_QUESTDB_PG``), never from the file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from core.config import ConfigError, secret_from_env
from ingest.config import load_config, read_password
from ingest.host import PrimaryHost

log = logging.getLogger("ingest")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="derrick-ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--config", type=Path, required=True)
    return parser


async def _run(host: PrimaryHost) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runner = asyncio.create_task(host.run(), name="primary-host")
    waiter = asyncio.create_task(stopping.wait(), name="stop-signal")
    done, _ = await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if runner in done:
        waiter.cancel()
        runner.result()
        return
    log.info("stopping: final flush, STATE offline")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(host.flush(), 5)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(host.stop_gracefully(), 2)
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
        ilp_conf = secret_from_env(cfg.questdb.ilp_conf_env)
        pg_dsn = secret_from_env(cfg.questdb.pg_dsn_env) if cfg.questdb.create_tables else None
        password = read_password(cfg.mqtt)
    except ConfigError as exc:
        print(f"derrick-ingest: invalid configuration: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_run(PrimaryHost(cfg, ilp_conf=ilp_conf, pg_dsn=pg_dsn, password=password)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
