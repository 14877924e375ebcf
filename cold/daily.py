"""The day's rollups of every metric and the per-node completeness report, in QuestDB.

Both are written with ``INSERT`` into tables keyed by identity and day (``DEDUP UPSERT
KEYS``), so a day computed twice ends the same.

Completeness of a node for a UTC day:

- *expected*: the configured rate (values per minute, ``[completeness]``) integrated over the
  day, the alarm rate while the node's ``Derrick/Sampling Mode`` said ``alarm`` (from
  ``telemetry_events``: the last value before the day, then each change), from the node's
  first birth if that was during the day;
- *received*: the day's sensor samples (device ≠ ``''``; the node's own status metrics are
  not sensor readings);
- *gaps*: runs of at least ``gap_minutes`` whole minutes without a sample;
- *late*: samples that travelled as historical (buffered at the edge) or reached ingest more
  than ``late_after_s`` after their source time.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec

from cold.config import CompletenessSettings
from cold.questdb import QuestDB, day_bounds
from core.cold_tables import ColdTables
from core.tables import TableSet

log = logging.getLogger(__name__)

MINUTES_PER_DAY = 1440


def rollup_day(db: QuestDB, tables: TableSet, cold: ColdTables, day: date) -> int:
    """Daily avg/min/max/count/sum/first/last of every numeric metric; returns the rows."""
    start, end = day_bounds(day)
    raw, daily = tables.raw, cold.daily
    db.execute(
        f"INSERT INTO {daily.name} SELECT cast(ts AS TIMESTAMP) ts, site, node, device, metric, "
        "avg(value) avg, min(value) min, max(value) max, count() count, sum(value) sum, "
        f"first(value) first, last(value) last FROM {raw.name} "
        f"WHERE ts >= '{start}' AND ts < '{end}' SAMPLE BY 1d"
    )
    db.wait_wal_applied(daily.name)
    rows = db.query(f"SELECT count() FROM {daily.name} WHERE ts = '{start}'")
    return int(rows[0][0])


class NodeCompleteness(msgspec.Struct, frozen=True):
    site: str
    node: str
    expected: int
    received: int
    alarm_minutes: int
    gaps: list[tuple[str, str]]
    gap_minutes: int
    longest_gap_minutes: int
    late: int

    @property
    def ratio(self) -> float:
        return self.received / self.expected if self.expected else 1.0


def _minute(ts: datetime, start: datetime) -> float:
    return (ts - start).total_seconds() / 60.0


def _as_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def find_gaps(minutes_with_data: set[int], first: int, threshold: int) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of at least ``threshold`` minutes in ``[first, 1440)`` without data."""
    gaps: list[tuple[int, int]] = []
    run_start: int | None = None
    for m in range(first, MINUTES_PER_DAY + 1):
        empty = m < MINUTES_PER_DAY and m not in minutes_with_data
        if empty and run_start is None:
            run_start = m
        elif not empty and run_start is not None:
            if m - run_start >= threshold:
                gaps.append((run_start, m))
            run_start = None
    return gaps


def completeness_day(
    db: QuestDB, tables: TableSet, settings: CompletenessSettings, day: date
) -> list[NodeCompleteness]:
    start_s, end_s = day_bounds(day)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    raw, events, catalogue = tables.raw.name, tables.events.name, tables.catalogue.name
    excluded = set(settings.exclude_sites)

    first_seen: dict[tuple[str, str], datetime] = {}
    for site, node, seen in db.query(
        f"SELECT site, node, min(seen) FROM {catalogue} WHERE seen < '{end_s}' GROUP BY site, node"
    ):
        first_seen[(site, node)] = _as_utc(seen)
    minutes: dict[tuple[str, str], set[int]] = defaultdict(set)
    received: dict[tuple[str, str], int] = defaultdict(int)
    for ts, site, node, n in db.query(
        f"SELECT ts, site, node, count() FROM {raw} WHERE ts >= '{start_s}' AND ts < '{end_s}' "
        "AND device IS NOT NULL AND device != '' SAMPLE BY 1m"
    ):
        key = (site, node)
        minutes[key].add(int(_minute(_as_utc(ts), start)))
        received[key] += int(n)
    late: dict[tuple[str, str], int] = {}
    for site, node, n in db.query(
        f"SELECT site, node, count() FROM {raw} WHERE ts >= '{start_s}' AND ts < '{end_s}' "
        "AND device IS NOT NULL AND device != '' "
        f"AND (historical OR received > dateadd('s', {int(settings.late_after_s)}, ts)) "
        "GROUP BY site, node"
    ):
        late[(site, node)] = int(n)
    # Sampling mode: the value in force when the day starts, then every change in the day.
    modes: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
    metric = settings.mode_metric
    for site, node, value in db.query(
        f"SELECT site, node, value FROM {events} WHERE metric = %s AND ts < '{start_s}' "
        "LATEST ON ts PARTITION BY site, node",
        (metric,),
    ):
        modes[(site, node)].append((0.0, str(value)))
    for ts, site, node, value in db.query(
        f"SELECT ts, site, node, value FROM {events} WHERE metric = %s "
        f"AND ts >= '{start_s}' AND ts < '{end_s}' ORDER BY ts",
        (metric,),
    ):
        modes[(site, node)].append((_minute(_as_utc(ts), start), str(value)))

    report: list[NodeCompleteness] = []
    for key in sorted(set(first_seen) | set(received)):
        site, node = key
        if site in excluded:
            continue
        born = first_seen.get(key, start)
        begin = max(0.0, min(float(MINUTES_PER_DAY), _minute(born, start)))
        rates = settings.rates(site, node)
        changes = modes.get(key, [])
        alarm = 0.0
        expected = 0.0
        mode_at_begin = "normal"
        later: list[tuple[float, str]] = []
        for at, mode in sorted(changes):
            if at <= begin:
                mode_at_begin = mode
            else:
                later.append((at, mode))
        timeline = [(begin, mode_at_begin), *later]
        for i, (at, mode) in enumerate(timeline):
            until = timeline[i + 1][0] if i + 1 < len(timeline) else float(MINUTES_PER_DAY)
            span = max(0.0, until - at)
            if mode == "alarm":
                alarm += span
                expected += span * rates.alarm_per_min
            else:
                expected += span * rates.normal_per_min
        gaps = find_gaps(minutes.get(key, set()), int(begin), settings.gap_minutes)
        report.append(
            NodeCompleteness(
                site=site,
                node=node,
                expected=round(expected),
                received=received.get(key, 0),
                alarm_minutes=round(alarm),
                gaps=[(_iso(start, a), _iso(start, b)) for a, b in gaps],
                gap_minutes=sum(b - a for a, b in gaps),
                longest_gap_minutes=max((b - a for a, b in gaps), default=0),
                late=late.get(key, 0),
            )
        )
    return report


def _iso(start: datetime, minute: int) -> str:
    return (start + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%MZ")


def store_completeness(
    db: QuestDB, cold: ColdTables, day: date, report: list[NodeCompleteness]
) -> None:
    table = cold.completeness
    day_ts = datetime(day.year, day.month, day.day, tzinfo=UTC)
    now = datetime.now(UTC)
    cols = ", ".join(table.column_names)
    marks = ", ".join(["%s"] * len(table.column_names))
    rows: list[tuple[Any, ...]] = [
        (
            day_ts,
            r.site,
            r.node,
            r.expected,
            r.received,
            r.ratio,
            r.alarm_minutes,
            len(r.gaps),
            r.gap_minutes,
            r.longest_gap_minutes,
            json.dumps(r.gaps[:100]),
            r.late,
            now,
        )
        for r in report
    ]
    if rows:
        db.executemany(f"INSERT INTO {table.name} ({cols}) VALUES ({marks})", rows)
        db.wait_wal_applied(table.name)
