"""``python -m alerts``: the alert evaluator and notifier.

    python -m alerts run --config alerts.toml

Runs until SIGTERM/SIGINT. The registry and QuestDB DSNs, the MQTT and SMTP passwords come
from the environment variables the config names, never from the file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from alerts.config import AlertsConfig, load_config
from alerts.evaluator import AlertEvaluator
from alerts.notify import Notifier
from alerts.store import AlertStore
from core.config import ConfigError, secret_from_env
from core.logformat import LOG_FORMATS, configure_logging
from core.runtime import run_until_signal

log = logging.getLogger("alerts")


def _pool(dsn: str, max_size: int) -> AsyncConnectionPool[Any]:
    return AsyncConnectionPool(
        dsn, min_size=1, max_size=max_size, kwargs={"autocommit": True}, open=False
    )


async def serve(cfg: AlertsConfig, secrets: dict[str, str | None]) -> None:
    """The evaluator and the notifier in one task group, until cancelled."""
    registry = _pool(secrets["registry"] or "", 4)
    questdb = _pool(secrets["questdb"] or "", 2)
    async with registry, questdb:
        store = AlertStore(registry)
        evaluator = AlertEvaluator(cfg, store, questdb=questdb, mqtt_password=secrets["mqtt"])
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(evaluator.run(), name="alert-evaluator")
            if cfg.notify.enabled:
                notifier = Notifier(
                    registry, cfg.notify, smtp=cfg.smtp, smtp_password=secrets["smtp"]
                )
                tasks.create_task(notifier.run(), name="alert-notifier")


def _secrets(cfg: AlertsConfig) -> dict[str, str | None]:
    smtp_env = cfg.smtp.password_env if cfg.smtp else None
    return {
        "registry": secret_from_env(cfg.registry.dsn_env),
        "questdb": secret_from_env(cfg.questdb.dsn_env),
        "mqtt": secret_from_env(cfg.mqtt.password_env) if cfg.mqtt.password_env else None,
        "smtp": secret_from_env(smtp_env) if smtp_env else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alerts", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run").add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper(), args.log_format)
    try:
        cfg = load_config(args.config)
        secrets = _secrets(cfg)
    except ConfigError as exc:
        print(f"alerts: invalid configuration: {exc}", file=sys.stderr)
        return 2
    asyncio.run(
        run_until_signal(
            serve(cfg, secrets), name="alerts", farewell=[], stopping_message="alerts stopping"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
