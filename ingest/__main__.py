"""``derrick-ingest``: the ingest worker (Sparkplug Primary Host) command line.

``derrick-ingest run --config ingest.toml`` runs until SIGTERM/SIGINT;
``derrick-ingest check --config ingest.toml`` only validates the file (exit 2 when invalid),
as Ansible's ``validate`` does before installing a rendered configuration;
``derrick-ingest replay`` rebuilds rows of a time range from the audit archive. The QuestDB ILP
configuration string and PGWire DSN come from the environment variables the config names
(defaults ``DERRICK_QUESTDB_ILP``, ``DERRICK_QUESTDB_PG``), never from the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from core import conventions
from core.config import ConfigError, secret_from_env
from core.logformat import LOG_FORMATS, configure_logging
from core.runtime import freeze_startup_objects, run_until_signal
from ingest import compiled
from ingest.config import load_config, read_password

log = logging.getLogger("ingest")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="derrick-ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--config", type=Path, required=True)
    check = sub.add_parser("check", help="validate the configuration file and exit")
    check.add_argument("--config", type=Path, required=True)
    rp = sub.add_parser("replay", help="rebuild rows of a time range from the audit archive")
    rp.add_argument("--archive", type=Path, required=True, help="the [audit] directory")
    rp.add_argument("--from", dest="start", required=True, help="ISO time, inclusive")
    rp.add_argument("--to", dest="end", required=True, help="ISO time, exclusive")
    rp.add_argument("--table-prefix", default="")
    rp.add_argument("--primary-host-id", default=conventions.DEFAULT_PRIMARY_HOST_ID)
    rp.add_argument("--ilp-env", default="DERRICK_QUESTDB_ILP")
    return parser


def _iso_ns(text: str) -> int:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


def _replay(args: argparse.Namespace) -> int:
    from core.tables import TableSet  # noqa: PLC0415
    from ingest.replay import replay_archive, summary  # noqa: PLC0415

    try:
        ilp_conf = secret_from_env(args.ilp_env)
        start, end = _iso_ns(args.start), _iso_ns(args.end)
    except (ConfigError, ValueError) as exc:
        print(f"derrick-ingest replay: {exc}", file=sys.stderr)
        return 2
    result = replay_archive(
        args.archive,
        ilp_conf,
        TableSet(args.table_prefix),
        primary_host_id=args.primary_host_id,
        start_ns=start,
        end_ns=end,
    )
    print(json.dumps(summary(result)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level.upper(), args.log_format)
    if args.command != "check":
        # Before anything imports the hot modules (ingest/compiled.py): this process only.
        loaded = compiled.activate()
        log.log(logging.INFO if loaded.reason is None else logging.WARNING, "%s", loaded.describe())
    if args.command == "replay":
        return _replay(args)
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
    from ingest import metrics  # noqa: PLC0415  (after compiled.activate)
    from ingest.host import PrimaryHost  # noqa: PLC0415

    host = PrimaryHost(cfg, ilp_conf=ilp_conf, pg_dsn=pg_dsn, password=password)
    if cfg.metrics.port is not None:
        metrics.serve(host, cfg.metrics.port, cfg.metrics.address)
    freeze_startup_objects()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
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
