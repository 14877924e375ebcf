"""``python -m api``: the API service and its registry administration.

    python -m api migrate        --dsn-env DERRICK_PG_DSN
    python -m api serve          --config api.toml
    python -m api sync-catalogue --dsn-env DERRICK_PG_DSN --questdb-env DERRICK_QUESTDB_PG
    python -m api tenant  ID NAME [--kind customer|vendor|operator] [--rate-per-s R --burst B]
                                  [--max-appliances N]
    python -m api tenant-limits ID [--rate-per-s R] [--burst B]
                                   [--max-appliances N | --no-appliance-quota]
    python -m api user    TENANT EMAIL ROLE          (prints the user id)
    python -m api key     USER_ID [--label L]        (prints the key once)
    python -m api revoke-key KEY_ID                  (the key id: dk_<id>_..., never the secret)
    python -m api site    ID TENANT [--timezone Z]
    python -m api provision APPLIANCE                (prints the MQTT password once)
    python -m api retire    APPLIANCE
    python -m api service-account NAME [--role R --site S] (prints the MQTT password once)
    python -m api broker-files DIR                   (Mosquitto passwd + ACL, EMQX exports)
    python -m api report (--site S | --all-sites) --out DIR [--month YYYY-MM]

Connection strings come from environment variables (named by ``--dsn-env``, default
``DERRICK_PG_DSN``), never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from api import config, keys, migrate, registry
from api.broker_auth import ServiceRole
from api.errors import ApiError, NotFoundError
from core.logformat import LOG_FORMATS, LogFormat, configure_logging
from core.runtime import freeze_startup_objects
from core.tables import TableSet

if TYPE_CHECKING:
    from api.reports import MonthlyReport

log = logging.getLogger("api")


def _registry_conn(args: argparse.Namespace) -> psycopg.Connection:
    return psycopg.connect(config.secret_from_env(args.dsn_env), autocommit=True)


def _serve(path: Path, log_format: LogFormat) -> None:
    import uvicorn  # noqa: PLC0415 - only the serve command needs it

    from api.access import Access  # noqa: PLC0415
    from api.app import Services, create_app  # noqa: PLC0415
    from api.live import LiveFeed  # noqa: PLC0415
    from api.readings import Reader  # noqa: PLC0415

    cfg = config.load(path)
    pg: AsyncConnectionPool[Any] = AsyncConnectionPool(
        config.secret_from_env(cfg.registry.dsn_env),
        min_size=1,
        max_size=cfg.registry.pool_max,
        kwargs={"autocommit": True},
        open=False,
    )
    qdb: AsyncConnectionPool[Any] = AsyncConnectionPool(
        config.secret_from_env(cfg.questdb.dsn_env),
        min_size=1,
        max_size=cfg.questdb.pool_max,
        kwargs={"autocommit": True},
        open=False,
    )
    live = None
    if cfg.live is not None:
        password = config.secret_from_env(cfg.live.password_env) if cfg.live.password_env else None
        live = LiveFeed(
            cfg.live.host,
            cfg.live.port,
            username=cfg.live.username,
            password=password,
            client_id=cfg.live.client_id,
            max_streams_per_key=cfg.live.max_streams_per_key,
            max_streams_per_tenant=cfg.live.max_streams_per_tenant,
        )
    reader = Reader(qdb, TableSet(cfg.questdb.table_prefix), cfg.questdb.kpi_group)
    vendor_key = config.secret_file(cfg.vendor.pseudonym_key_file) if cfg.vendor else None
    app = create_app(
        Services(
            Access(pg, cfg.registry.cache_s),
            reader,
            pools=[pg, qdb],
            live=live,
            vendor_key=vendor_key,
        ),
        metrics=cfg.metrics is not None,
        log_format=log_format,
    )
    if cfg.metrics is not None:
        from api.ops import serve_metrics  # noqa: PLC0415

        serve_metrics(cfg.metrics.port, cfg.metrics.host)
        log.info("metrics on http://%s:%s/metrics", cfg.metrics.host, cfg.metrics.port)
    log.info("serving on http://%s:%s (OpenAPI at /schema)", cfg.server.host, cfg.server.port)
    freeze_startup_objects()  # the modules, the app and its routes: ~150,000 objects
    uvicorn.run(app, host=cfg.server.host, port=cfg.server.port, log_config=None)


def previous_month(now: dt.datetime) -> str:
    first = now.astimezone(dt.UTC).date().replace(day=1)
    return (first - dt.timedelta(days=1)).strftime("%Y-%m")


def _report(args: argparse.Namespace) -> list[Path]:
    """Render a site's monthly report into ``--out``: ``<site>-<month>.pdf`` and the CSV
    tables ``<site>-<month>-<table>.csv``, each written to a temporary name then renamed.
    With ``--all-sites``, every site of the registry, each into ``--out/<site>/``."""
    from psycopg import AsyncConnection  # noqa: PLC0415

    from api import reports  # noqa: PLC0415

    month = args.month or previous_month(dt.datetime.now(dt.UTC))

    async def gather() -> list[reports.MonthlyReport]:
        pg_dsn, q_dsn = (
            config.secret_from_env(args.dsn_env),
            config.secret_from_env(args.questdb_env),
        )
        async with (
            await AsyncConnection.connect(pg_dsn, autocommit=True) as pg,
            await AsyncConnection.connect(q_dsn, autocommit=True) as qdb,
        ):
            if args.all_sites:
                cur = await pg.execute(
                    "SELECT id, name, timezone, tenant_id FROM sites ORDER BY id"
                )
            else:
                cur = await pg.execute(
                    "SELECT id, name, timezone, tenant_id FROM sites WHERE id = %s", (args.site,)
                )
            sites = await cur.fetchall()
            if not sites and not args.all_sites:
                raise NotFoundError(f"no site {args.site!r}")
            tables, now = TableSet(args.table_prefix), dt.datetime.now(dt.UTC)
            rendered = []
            try:
                for site in sites:
                    rendered.append(
                        await reports.gather(
                            site, month, registry=pg, questdb=qdb, tables=tables, now=now
                        )
                    )
            except reports.ReportError as exc:
                raise ApiError(str(exc)) from exc
            return rendered

    rendered = asyncio.run(gather())
    written = []
    for report in rendered:
        written += _write_report(report, args.out / report.site if args.all_sites else args.out)
    if args.all_sites:
        log.info("reports %s: %d site(s) into %s", month, len(rendered), args.out)
    return written


def _write_report(report: MonthlyReport, out: Path) -> list[Path]:
    from api import report_pdf, reports  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    name = f"{report.site}-{report.month}"
    files = {f"{name}.pdf": report_pdf.render(report)}
    files |= {f"{name}-{t}.csv": to_csv(report) for t, to_csv in reports.CSV_TABLES.items()}
    written = []
    for filename, body in files.items():
        tmp = out / f".{filename}.tmp"
        tmp.write_bytes(body)
        tmp.replace(out / filename)
        written.append(out / filename)
    log.info("report %s %s: %d series, %d alerts", report.site, report.month, len(report.series()),
             len(report.alerts))  # fmt: skip
    return written


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m api", description="Derrick customer API")
    p.add_argument("--dsn-env", default="DERRICK_PG_DSN", help="env var with the registry DSN")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending SQL migrations")
    s = sub.add_parser("serve", help="run the HTTP API")
    s.add_argument("--config", type=Path, required=True)
    s = sub.add_parser("sync-catalogue", help="copy appliances/metrics from QuestDB's births")
    s.add_argument("--questdb-env", default="DERRICK_QUESTDB_PG")
    s.add_argument("--table-prefix", default="")
    s = sub.add_parser("tenant")
    s.add_argument("id")
    s.add_argument("name")
    s.add_argument("--kind", default="customer", choices=["customer", "vendor", "operator"])
    s.add_argument("--rate-per-s", type=float, default=50.0, help="API requests/s, all keys")
    s.add_argument("--burst", type=int, default=200)
    s.add_argument("--max-appliances", type=int, help="quota of provisioned appliances")
    s = sub.add_parser("tenant-limits", help="change a tenant's rate limit or appliance quota")
    s.add_argument("id")
    s.add_argument("--rate-per-s", type=float, help="API requests/s, all keys")
    s.add_argument("--burst", type=int)
    quota = s.add_mutually_exclusive_group()
    quota.add_argument("--max-appliances", type=int, help="quota of provisioned appliances")
    quota.add_argument("--no-appliance-quota", action="store_true", help="lift the quota")
    s = sub.add_parser("user")
    s.add_argument("tenant")
    s.add_argument("email")
    s.add_argument("role", choices=[r.value for r in keys.Role])
    s = sub.add_parser("key")
    s.add_argument("user_id", type=int)
    s.add_argument("--label", default="")
    s = sub.add_parser("revoke-key", help="revoke an API key by its id")
    s.add_argument("key_id")
    s = sub.add_parser("site")
    s.add_argument("id")
    s.add_argument("tenant")
    s.add_argument("--name", default="")
    s.add_argument("--timezone", default="UTC")
    for name in ("provision", "retire"):
        sub.add_parser(name).add_argument("appliance")
    s = sub.add_parser("service-account")
    s.add_argument("name")
    s.add_argument(
        "--role", choices=[r.value for r in ServiceRole], default=ServiceRole.PRIMARY_HOST.value
    )
    s.add_argument("--site", help="the site a site_gateway account serves")
    sub.add_parser("broker-files").add_argument("directory", type=Path)
    s = sub.add_parser(
        "registry-export", help="sites and appliances as the fleet inventory's JSON export"
    )
    s.add_argument("out", type=Path)
    s.add_argument("--site", action="append", default=[], help="only this site (repeatable)")
    s = sub.add_parser("report", help="render a site's monthly compliance report (PDF + CSV)")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--site")
    which.add_argument(
        "--all-sites", action="store_true", help="every site of the registry, into --out/<site>/"
    )
    s.add_argument("--month", help="YYYY-MM (UTC); default: the previous month")
    s.add_argument("--out", type=Path, required=True, help="directory to write the files into")
    s.add_argument("--questdb-env", default="DERRICK_QUESTDB_PG")
    s.add_argument("--table-prefix", default="")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(logging.INFO, args.log_format)
    try:
        match args.command:
            case "migrate":
                applied = migrate.apply(config.secret_from_env(args.dsn_env))
                print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'up to date'}")
            case "serve":
                _serve(args.config, args.log_format)
            case "sync-catalogue":
                qdsn = config.secret_from_env(args.questdb_env)
                with _registry_conn(args) as conn, psycopg.connect(qdsn, autocommit=True) as q:
                    report = registry.sync_catalogue(conn, q, TableSet(args.table_prefix))
                print(report)
            case "tenant":
                with _registry_conn(args) as conn:
                    registry.create_tenant(
                        conn,
                        args.id,
                        args.name,
                        args.kind,
                        rate_per_s=args.rate_per_s,
                        burst=args.burst,
                        max_appliances=args.max_appliances,
                    )
            case "tenant-limits":
                with _registry_conn(args) as conn:
                    registry.set_tenant_limits(
                        conn,
                        args.id,
                        rate_per_s=args.rate_per_s,
                        burst=args.burst,
                        max_appliances=(
                            registry.NO_QUOTA if args.no_appliance_quota else args.max_appliances
                        ),
                    )
            case "user":
                with _registry_conn(args) as conn:
                    print(registry.create_user(conn, args.tenant, args.email, keys.Role(args.role)))
            case "key":
                with _registry_conn(args) as conn:
                    issued = registry.issue_api_key(conn, args.user_id, args.label)
                print(issued.plaintext)
            case "revoke-key":
                with _registry_conn(args) as conn:
                    registry.revoke_api_key(conn, args.key_id)
            case "site":
                with _registry_conn(args) as conn:
                    registry.create_site(conn, args.id, args.tenant, args.name, args.timezone)
            case "provision":
                with _registry_conn(args) as conn:
                    password = registry.provision(conn, args.appliance).password
                print(password)
            case "retire":
                with _registry_conn(args) as conn:
                    registry.retire(conn, args.appliance)
            case "service-account":
                with _registry_conn(args) as conn:
                    account = registry.create_service_account(
                        conn, args.name, ServiceRole(args.role), args.site
                    )
                print(account.password)
            case "report":
                for path in _report(args):
                    print(path)
            case "broker-files":
                with _registry_conn(args) as conn:
                    for name, path in registry.write_broker_files(conn, args.directory).items():
                        print(f"{name}: {path}")
            case "registry-export":
                with _registry_conn(args) as conn:
                    count = registry.write_export(conn, args.out, args.site)
                print(f"{args.out}: {count} appliance(s)")
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
