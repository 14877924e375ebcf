"""``derrick-ingest``: the ingest worker (Sparkplug Primary Host) command line.

``derrick-ingest run --config ingest.toml`` runs until SIGTERM/SIGINT;
``derrick-ingest check --config ingest.toml`` only validates the file (exit 2 when invalid),
as Ansible's ``validate`` does before installing a rendered configuration. The QuestDB ILP
configuration string and PGWire DSN come from the environment variables the config names
(defaults ``DERRICK_QUESTDB_ILP``, ``DERRICK_QUESTDB_PG``), never from the file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from core.config import ConfigError, secret_from_env
from core.runtime import run_until_signal
from ingest import metrics
from ingest.config import load_config, read_password
from ingest.host import PrimaryHost

log = logging.getLogger("ingest")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="derrick-ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--config", type=Path, required=True)
    check = sub.add_parser("check", help="validate the configuration file and exit")
    check.add_argument("--config", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = load_config(args.config)
        if args.command == "check":
            print(f"{args.config}: valid")
            return 0
        ilp_conf = secret_from_env(cfg.questdb.ilp_conf_env)
        pg_dsn = secret_from_env(cfg.questdb.pg_dsn_env) if cfg.questdb.create_tables else None
        password = read_password(cfg.mqtt)
    except ConfigError as exc:
        print(f"derrick-ingest: invalid configuration: {exc}", file=sys.stderr)
        return 2
    host = PrimaryHost(cfg, ilp_conf=ilp_conf, pg_dsn=pg_dsn, password=password)
    if cfg.metrics.port is not None:
        metrics.serve(host, cfg.metrics.port, cfg.metrics.address)
    asyncio.run(
        run_until_signal(
            host.run(),
            name="primary-host",
            farewell=[(host.flush, 5.0), (host.stop_gracefully, 2.0)],
            stopping_message="final flush, STATE offline",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
