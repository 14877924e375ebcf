"""The nightly job for one UTC day: one command, idempotent, resumable, with progress.

Steps, each logged when it starts and ends and recorded in ``<state>/nightly/<day>.json``
when done:

0. ``audit``: the audit chains verified from the last recorded head on; the new heads are
   recorded in ``<state>/audit-anchors.json`` (``python -m cold verify --config`` checks
   them, so a removed or rewritten tail is found).
1. ``tables``: the cold tables exist; raw and event tables carry the retention TTL.
2. ``rollups``: ``telemetry_daily`` for every metric.
3. ``completeness``: the per-node report into ``completeness_daily``.
4. ``export``: Parquet per (table, site), each verified and manifested (``cold.export``).
5. ``recheck``: the ``recheck_days`` days before: a partition whose QuestDB row count no
   longer equals its manifest (late arrivals) is exported again, and that day's rollups and
   report are recomputed.
6. ``retention``: fail when a day that TTL will drop within ``unarchived_margin_days`` has
   rows in QuestDB but no manifest.

A run that stops (killed, QuestDB down) is resumed by running the same command again: done
steps are skipped (``--force`` redoes them), partitions with a manifest are skipped, and
every write is keyed (DEDUP) or overwritten, so a step done twice ends the same. Only one run
at a time (``flock`` on ``<state>/nightly.lock``). When all steps are done,
``<state>/last-success`` records the day and the time: ``python -m cold freshness`` alerts
on it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from cold.config import ColdConfig
from cold.daily import completeness_day, rollup_day, store_completeness
from cold.export import ExportResult, export_day, open_archive, read_manifest, site_counts
from cold.questdb import ColdError, QuestDB
from core import audit
from core.cold_tables import ColdTables
from core.tables import TableSet

log = logging.getLogger(__name__)

STEPS = ("audit", "tables", "rollups", "completeness", "export", "recheck", "retention")
ANCHORS = "audit-anchors.json"


class NightlyJob:
    def __init__(self, cfg: ColdConfig, db: QuestDB, *, today: date | None = None) -> None:
        self._cfg = cfg
        self._db = db
        self._tables = TableSet(cfg.questdb.table_prefix)
        self._cold = ColdTables(cfg.questdb.table_prefix)
        self._state_dir = cfg.nightly.state_directory
        self._today = today or datetime.now(UTC).date()
        self.exports: list[ExportResult] = []

    def _progress(self, message: str) -> None:
        log.info("%s", message)

    def _state_path(self, day: date) -> Path:
        return self._state_dir / "nightly" / f"{day.isoformat()}.json"

    def _load_state(self, day: date) -> dict[str, Any]:
        path = self._state_path(day)
        if path.exists():
            loaded: dict[str, Any] = json.loads(path.read_text())
            return loaded
        return {"day": day.isoformat(), "done": {}}

    def _save_state(self, day: date, state: dict[str, Any]) -> None:
        path = self._state_path(day)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)

    def run(self, day: date, *, force: bool = False) -> dict[str, Any]:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        with open(self._state_dir / "nightly.lock", "ab") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise ColdError("another nightly run holds the lock") from exc
            return self._run(day, force)

    def _run(self, day: date, force: bool) -> dict[str, Any]:
        started = time.monotonic()
        state = self._load_state(day)
        steps: dict[str, Callable[[date], Any]] = {
            "audit": self._step_audit,
            "tables": self._step_tables,
            "rollups": self._step_rollups,
            "completeness": self._step_completeness,
            "export": self._step_export,
            "recheck": self._step_recheck,
            "retention": self._step_retention,
        }
        for n, name in enumerate(STEPS, start=1):
            if name in state["done"] and not force:
                self._progress(f"[{n}/{len(STEPS)}] {name}: done earlier, skipped")
                continue
            self._progress(f"[{n}/{len(STEPS)}] {name}: starting")
            t0 = time.monotonic()
            detail = steps[name](day)
            state["done"][name] = {
                "at": datetime.now(UTC).isoformat(),
                "seconds": round(time.monotonic() - t0, 3),
                "detail": detail,
            }
            self._save_state(day, state)
            self._progress(
                f"[{n}/{len(STEPS)}] {name}: done in {time.monotonic() - t0:.1f} s ({detail})"
            )
        state["seconds"] = round(time.monotonic() - started, 3)
        self._save_state(day, state)
        marker = {"day": day.isoformat(), "finished_at": datetime.now(UTC).isoformat()}
        tmp = self._state_dir / "last-success.tmp"
        tmp.write_text(json.dumps(marker))
        os.replace(tmp, self._state_dir / "last-success")
        if self._cfg.nightly.metrics_textfile is not None:
            write_metrics(self._cfg.nightly.metrics_textfile, day, state["seconds"])
        return state

    # -- steps ---------------------------------------------------------------------------

    def _step_audit(self, day: date) -> str:
        """Verify what the chains gained since the last run; record their heads (anchors)."""
        path = self._state_dir / ANCHORS
        anchors: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
        checked = []
        for chain in audit.chains(self._cfg.archive.audit_directory):
            known = anchors.get(chain.name, {})
            since = max(((int(i), h) for i, h in known.items()), default=None)
            report = audit.verify_chain(chain, since=since)
            if not report.ok:
                raise ColdError(
                    f"audit chain {chain} broken at {report.first_broken}: {report.reason}"
                )
            if report.head_index is not None and report.head_digest is not None:
                known[str(report.head_index)] = report.head_digest
                anchors[chain.name] = known
            head = f"head {report.head_index}"
            if report.head_index is None:
                head = "no sealed segment yet"
            checked.append(f"{chain.name}: {report.records} records, {head}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(anchors, indent=1))
        os.replace(tmp, path)
        return ", ".join(checked) or "no audit chains"

    def _step_tables(self, day: date) -> str:
        for sql in self._cold.create_statements():
            self._db.execute(sql)
        days = self._cfg.retention.raw_days
        for table in (self._tables.raw, self._tables.events):
            if not self._db.table_exists(table.name):
                raise ColdError(f"QuestDB has no table {table.name} (is the prefix right?)")
            ttl = f"{days} DAYS" if days else "0h"
            self._db.execute(f"ALTER TABLE {table.name} SET TTL {ttl}")
        return f"TTL {days or 'none'} days"

    def _step_rollups(self, day: date) -> str:
        self._db.wait_wal_applied(self._tables.raw.name)
        return f"{rollup_day(self._db, self._tables, self._cold, day)} series"

    def _step_completeness(self, day: date) -> str:
        self._db.wait_wal_applied(self._tables.raw.name)
        report = completeness_day(self._db, self._tables, self._cfg.completeness, day)
        store_completeness(self._db, self._cold, day, report)
        return f"{len(report)} nodes"

    def _step_export(self, day: date) -> str:
        results = export_day(self._db, self._cfg.archive, self._tables, day, self._progress)
        self.exports.extend(results)
        rows = sum(r.rows for r in results)
        skipped = sum(1 for r in results if r.skipped)
        return f"{len(results)} partitions ({skipped} already archived), {rows} rows"

    def _step_recheck(self, day: date) -> str:
        redone = []
        for back in range(1, self._cfg.nightly.recheck_days + 1):
            earlier = day - timedelta(days=back)
            results = export_day(self._db, self._cfg.archive, self._tables, earlier, self._progress)
            if any(not r.skipped for r in results):
                self._step_rollups(earlier)
                self._step_completeness(earlier)
                redone.append(earlier.isoformat())
        return f"re-exported {redone}" if redone else "no changes"

    def _step_retention(self, day: date) -> str:
        days = self._cfg.retention.raw_days
        if not days:
            return "no TTL"
        fs, root = open_archive(self._cfg.archive)
        oldest_kept = self._today - timedelta(days=days)
        missing = []
        for back in range(self._cfg.retention.unarchived_margin_days):
            d = oldest_kept + timedelta(days=back)
            for table in (self._tables.raw, self._tables.events):
                base = "telemetry_raw" if table is self._tables.raw else "telemetry_events"
                for site in site_counts(self._db, table, d):
                    if read_manifest(fs, root, base, site, d) is None:
                        missing.append(f"{base}/{site}/{d.isoformat()}")
        if missing:
            raise ColdError(
                f"not archived but dropped by TTL within "
                f"{self._cfg.retention.unarchived_margin_days} days: {', '.join(missing[:20])}"
            )
        return "every day near the TTL is archived"


def write_metrics(path: Path, day: date, seconds: float, now: datetime | None = None) -> None:
    """The success of a run as Prometheus gauges, for node-exporter's textfile collector
    (written to a temporary file and renamed: the collector never reads half a file)."""
    registry = CollectorRegistry()
    finished = (now or datetime.now(UTC)).timestamp()
    Gauge(
        "derrick_cold_last_success_timestamp_seconds",
        "When the last successful nightly run finished (Unix time).",
        registry=registry,
    ).set(finished)
    Gauge(
        "derrick_cold_last_success_day_timestamp_seconds",
        "The day (UTC midnight, Unix time) the last successful nightly run processed.",
        registry=registry,
    ).set(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    Gauge(
        "derrick_cold_last_success_duration_seconds",
        "How long the last successful nightly run took.",
        registry=registry,
    ).set(seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def freshness(state_dir: Path, max_age_h: float, now: datetime | None = None) -> tuple[bool, str]:
    """(fresh, message) from ``last-success``: the monitoring check for a late or failed job."""
    path = state_dir / "last-success"
    if not path.exists():
        return False, f"no successful nightly run recorded in {path}"
    marker = json.loads(path.read_text())
    finished = datetime.fromisoformat(marker["finished_at"])
    age_h = ((now or datetime.now(UTC)) - finished).total_seconds() / 3600
    if age_h > max_age_h:
        return False, f"last successful nightly run ({marker['day']}) finished {age_h:.1f} h ago"
    return True, f"last successful nightly run ({marker['day']}) finished {age_h:.1f} h ago"
