"""``python -m cold``: the cold path (audit archive, nightly job, Parquet archive, DuckDB).

Commands:

- ``verify --archive DIR`` (or ``--config``): walk every audit chain; exit 1 and name the
  first broken or missing segment if one is.
- ``nightly --config C [--day YYYY-MM-DD] [--force]``: the nightly job for a UTC day
  (default: yesterday); resumable, idempotent.
- ``rebuild --config C --from T --to T``: rows of ``[from, to)`` from the audit archive.
- ``query --config C [--registry-dsn-env NAME] SQL``: DuckDB over the Parquet archive.
- ``freshness --config C --max-age-h H``: exit 1 when the last successful nightly run is
  older than H hours (or there is none): the alert for a failed or late job.

Secrets (QuestDB DSN and URL) come from the environment variables the config names.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec

from cold.config import ColdConfig, load_config
from cold.questdb import ColdError, QuestDB
from core import audit
from core.config import ConfigError, secret_from_env
from core.logformat import LOG_FORMATS, configure_logging

log = logging.getLogger("cold")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cold", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="walk the audit chains")
    where = v.add_mutually_exclusive_group(required=True)
    where.add_argument("--archive", type=Path, help="the audit root ([audit] directory)")
    where.add_argument("--config", type=Path)
    v.add_argument("--anchors", type=Path, help="JSON {chain: {index: digest}} recorded earlier")
    n = sub.add_parser("nightly", help="the nightly job for one UTC day")
    n.add_argument("--config", type=Path, required=True)
    n.add_argument("--day", type=date.fromisoformat, help="YYYY-MM-DD (default: yesterday)")
    n.add_argument("--force", action="store_true", help="redo steps done earlier")
    r = sub.add_parser("rebuild", help="rebuild a time range from the audit archive")
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--from", dest="start", required=True)
    r.add_argument("--to", dest="end", required=True)
    q = sub.add_parser("query", help="DuckDB SQL over the Parquet archive")
    q.add_argument("--config", type=Path, required=True)
    q.add_argument("--registry-dsn-env", help="env var with the registry's PostgreSQL DSN")
    q.add_argument("--json", action="store_true", help="rows as JSON lines")
    q.add_argument("sql")
    f = sub.add_parser("freshness", help="alert when the nightly job failed or is late")
    f.add_argument("--config", type=Path, required=True)
    f.add_argument("--max-age-h", type=float, default=30.0)
    return parser


def _questdb(cfg: ColdConfig) -> QuestDB:
    return QuestDB(
        secret_from_env(cfg.questdb.pg_dsn_env), secret_from_env(cfg.questdb.http_url_env)
    )


def _verify(args: argparse.Namespace) -> int:
    anchors: dict[str, dict[str, str]] = {}
    if args.archive:
        root = args.archive
    else:
        cfg = load_config(args.config)
        root = cfg.archive.audit_directory
        recorded = cfg.nightly.state_directory / "audit-anchors.json"  # by the nightly job
        if recorded.exists() and not args.anchors:
            anchors = json.loads(recorded.read_text())
    if args.anchors:
        anchors = json.loads(args.anchors.read_text())
    chain_dirs = audit.chains(root)
    if not chain_dirs:
        print(f"no audit chain under {root}", file=sys.stderr)
        return 1
    failed = False
    for chain in chain_dirs:
        expected = {int(k): v for k, v in anchors.get(chain.name, {}).items()}
        report = audit.verify_chain(chain, anchors=expected)
        if report.ok:
            print(
                f"{chain.name}: ok, {report.segments} segments, {report.records} records, "
                f"head {report.head_index} {report.head_digest}"
                + (f", open {report.open_segment}" if report.open_segment else "")
            )
        else:
            failed = True
            print(f"{chain.name}: BROKEN at {report.first_broken}: {report.reason}")
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "verify":
        return _verify(args)
    cfg = load_config(args.config)
    if args.command == "freshness":
        from cold.nightly import freshness  # noqa: PLC0415

        ok, message = freshness(cfg.nightly.state_directory, args.max_age_h)
        print(message)
        return 0 if ok else 1
    if args.command == "query":
        from cold.analytics import connect, load_registry, query  # noqa: PLC0415

        con = connect(cfg.archive)
        if args.registry_dsn_env:
            load_registry(con, secret_from_env(args.registry_dsn_env))
        names, rows = query(con, args.sql)
        if args.json:
            for row in rows:
                print(msgspec.json.encode(dict(zip(names, row, strict=True))).decode())
        else:
            print("\t".join(names))
            for row in rows:
                print("\t".join("" if v is None else str(v) for v in row))
        return 0
    db = _questdb(cfg)
    try:
        if args.command == "nightly":
            from cold.nightly import NightlyJob  # noqa: PLC0415

            day = args.day or (datetime.now(UTC).date() - timedelta(days=1))
            state = NightlyJob(cfg, db).run(day, force=args.force)
            print(json.dumps(state))
            return 0
        from cold.rebuild import rebuild  # noqa: PLC0415

        print(json.dumps(rebuild(cfg, db, args.start, args.end)))
        return 0
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level.upper(), args.log_format)
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"cold: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except ColdError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
