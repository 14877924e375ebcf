"""Rebuild QuestDB's raw and event rows of a time range from the audit archive.

The messages are interpreted by the ingest worker's own code: this runs
``python -m ingest replay`` (a command-line contract; the cold job never imports ingest),
waits until QuestDB applied the rows, then fully refreshes any materialized view that a
dropped partition left invalid.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from typing import Any

from cold.config import ColdConfig
from cold.questdb import ColdError, QuestDB
from core.tables import TableSet

log = logging.getLogger(__name__)


def rebuild(cfg: ColdConfig, db: QuestDB, start: str, end: str) -> dict[str, Any]:
    tables = TableSet(cfg.questdb.table_prefix)
    cmd = [
        sys.executable,
        "-m",
        "ingest",
        "replay",
        "--archive",
        str(cfg.archive.audit_directory),
        "--from",
        start,
        "--to",
        end,
        "--table-prefix",
        cfg.questdb.table_prefix,
        "--primary-host-id",
        cfg.archive.primary_host_id,
        "--ilp-env",
        cfg.questdb.ilp_conf_env,
    ]
    log.info("replaying the audit archive for [%s, %s)", start, end)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ColdError(f"ingest replay failed ({done.returncode}): {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    for table in (tables.raw, tables.events):
        db.wait_wal_applied(table.name)
    refreshed = refresh_invalid_views(db, tables)
    summary["views_refreshed"] = refreshed
    log.info("rebuilt [%s, %s): %s", start, end, summary)
    return summary


def refresh_invalid_views(db: QuestDB, tables: TableSet, timeout_s: float = 600.0) -> list[str]:
    """Fully refresh views a dropped partition left invalid, each once the views it is built
    on are valid again (a view on a view is invalidated by its base's full refresh), until
    every view is valid."""
    views = [v.name for v in tables.views()]
    refreshed: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        status = {
            name: st
            for name, st in db.query("SELECT view_name, view_status FROM materialized_views()")
            if name in views
        }
        if all(st == "valid" for st in status.values()):
            return refreshed
        for name in views:
            st = status.get(name)
            if st == "invalid":
                db.execute(f"REFRESH MATERIALIZED VIEW {name} FULL")
                refreshed.append(name)
                break
            if st != "valid" and st is not None:
                break  # refreshing: the views built on it wait
        if time.monotonic() > deadline:
            raise ColdError(f"materialized views not valid after {timeout_s:.0f} s: {status}")
        time.sleep(0.5)
