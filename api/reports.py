"""Monthly compliance reports of a site: the numbers (gathered here) and their CSV form.

A report covers one calendar month in UTC (the days of ``telemetry_1d``); for the running
month, only the complete UTC days before ``now``. It holds, per hot series (appliance,
device, metric) and per day: the daily aggregates from ``telemetry_1d`` (count, avg, min,
max) and a completeness figure: the hours of the day with at least one sample (hourly
buckets of ``telemetry_1h``) out of 24. The series are those the registry lists as hot for
the site's appliances (seen before the month's end, not retired before its start) plus any
found in the data, so a series that sent nothing shows as a row of zeros rather than not at
all. Alerts are those of the site open at some point during the month, with the
acknowledgement and resolution they had reached by the month's end.

Everything is sorted and formatted without locale or clock: the same inputs give the same
bytes (:func:`daily_csv`, :func:`alerts_csv`) and the same numbers in the PDF
(:mod:`api.report_pdf`, which formats with :func:`display`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

import msgspec
from psycopg import AsyncConnection

from core import queries
from core.tables import TableSet

_UTC = dt.UTC
_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
HOURS_PER_DAY = 24


class ReportError(ValueError):
    """A report was asked for a month it cannot cover (malformed, in the future)."""


class DailyRow(msgspec.Struct, frozen=True):
    day: dt.date
    appliance: str
    device: str
    metric: str
    unit: str
    count: int
    avg: float | None
    min: float | None
    max: float | None
    hours_with_data: int

    @property
    def coverage_pct(self) -> float:
        return 100.0 * self.hours_with_data / HOURS_PER_DAY


class AlertRow(msgspec.Struct, frozen=True):
    id: int
    rule: str
    severity: str
    appliance: str
    metric: str
    reason: str
    value: float | None
    opened_at: dt.datetime
    acknowledged_at: dt.datetime | None
    acknowledged_by: str
    acknowledge_note: str
    resolved_at: dt.datetime | None
    resolved_by: str
    resolve_note: str

    @property
    def state_at_month_end(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "acknowledged" if self.acknowledged_at is not None else "open"


class MonthlyReport(msgspec.Struct, frozen=True):
    site: str
    site_name: str
    timezone: str
    month: str
    start: dt.datetime
    end: dt.datetime  # exclusive; the month's end, or today's midnight for the running month
    days: tuple[dt.date, ...]
    daily: tuple[DailyRow, ...]
    alerts: tuple[AlertRow, ...]

    def series(self) -> list[tuple[str, str, str, str]]:
        """(appliance, device, metric, unit) of every series, in report order."""
        seen: dict[tuple[str, str, str, str], None] = {}
        for r in self.daily:
            seen.setdefault((r.appliance, r.device, r.metric, r.unit), None)
        return list(seen)


def month_window(month: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of ``YYYY-MM``; for the running month the end is today's midnight.
    ReportError for a malformed month or one that has not started."""
    m = _MONTH_RE.match(month)
    if m is None:
        raise ReportError(f"month {month[:20]!r} must be YYYY-MM")
    year, mon = int(m.group(1)), int(m.group(2))
    if not 1970 <= year <= 2199:
        raise ReportError("month must lie between 1970 and 2199")
    start = dt.datetime(year, mon, 1, tzinfo=_UTC)
    end = dt.datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=_UTC)
    if start > now:
        raise ReportError(f"month {month} has not started")
    today = dt.datetime.combine(now.astimezone(_UTC).date(), dt.time(), _UTC)
    return start, min(end, today)


_EXPECTED = """
SELECT m.appliance_id, m.device_id, m.name, coalesce(m.unit, '') FROM metrics m
JOIN appliances a ON a.id = m.appliance_id
WHERE a.site_id = %(site)s AND m.hot
  AND (a.first_seen IS NULL OR a.first_seen < %(end)s)
  AND (a.retired_at IS NULL OR a.retired_at >= %(start)s)
"""

_ALERTS = """
SELECT a.id, r.name, a.severity, a.appliance_id, coalesce(a.metric, ''), a.reason, a.value,
       a.opened_at, a.acknowledged_at, coalesce(a.acknowledged_by, ''),
       coalesce(a.acknowledge_note, ''), a.resolved_at, coalesce(a.resolved_by, ''),
       coalesce(a.resolve_note, '')
FROM alerts a JOIN alert_rules r ON r.id = a.rule_id
WHERE a.site_id = %(site)s AND a.tenant_id = %(tenant)s
  AND a.opened_at < %(end)s AND (a.resolved_at IS NULL OR a.resolved_at >= %(start)s)
ORDER BY a.opened_at, a.id
"""


def _day(value: dt.datetime) -> dt.date:
    return (value if value.tzinfo is None else value.astimezone(_UTC)).date()


def _before(value: dt.datetime | None, end: dt.datetime) -> dt.datetime | None:
    """A lifecycle step counts only if it happened before the report's end."""
    return value.astimezone(_UTC) if value is not None and value < end else None


async def gather(
    site: tuple[Any, ...],
    month: str,
    *,
    registry: AsyncConnection[Any],
    questdb: AsyncConnection[Any],
    tables: TableSet,
    now: dt.datetime,
) -> MonthlyReport:
    """The report of ``site`` (a registry row: id, name, timezone, tenant) for ``month``."""
    site_id, site_name, timezone, tenant = (str(v) for v in site[:4])
    start, end = month_window(month, now)
    params = {"site": site_id, "tenant": tenant, "start": start, "end": end}
    expected = await (await registry.execute(_EXPECTED, params)).fetchall()
    alert_rows = await (await registry.execute(_ALERTS, params)).fetchall()
    qparams = {"site": site_id, "start": start, "end": end}
    daily = await (await questdb.execute(queries.site_daily(tables).encode(), qparams)).fetchall()
    hours = await (
        await questdb.execute(queries.site_hours_with_data(tables).encode(), qparams)
    ).fetchall()

    units = {(str(a), str(d), str(m)): str(u) for a, d, m, u in expected}
    aggregates = {(_day(t), str(n), str(d), str(m)): (int(c), a, lo, hi)
                  for t, n, d, m, c, a, lo, hi in daily}  # fmt: skip
    covered = {(_day(t), str(n), str(d), str(m)): int(h) for t, n, d, m, h in hours}
    for _, node, device, metric in (*aggregates, *covered):
        units.setdefault((node, device, metric), "")
    days = tuple((start + dt.timedelta(days=i)).date() for i in range((end - start).days))
    rows = []
    for (node, device, metric), unit in sorted(units.items()):
        for day in days:
            count, avg, lo, hi = aggregates.get((day, node, device, metric), (0, None, None, None))
            rows.append(
                DailyRow(
                    day,
                    node,
                    device,
                    metric,
                    unit,
                    count,
                    avg,
                    lo,
                    hi,
                    covered.get((day, node, device, metric), 0),
                )
            )
    alerts = tuple(
        AlertRow(
            int(r[0]),
            str(r[1]),
            str(r[2]),
            str(r[3]),
            str(r[4]),
            str(r[5]),
            r[6],
            r[7].astimezone(_UTC),
            _before(r[8], end),
            str(r[9]) if _before(r[8], end) else "",
            str(r[10]) if _before(r[8], end) else "",
            _before(r[11], end),
            str(r[12]) if _before(r[11], end) else "",
            str(r[13]) if _before(r[11], end) else "",
        )
        for r in alert_rows
    )
    return MonthlyReport(site_id, site_name, timezone, month, start, end, days, tuple(rows), alerts)


# -- formatting -------------------------------------------------------------------------------


def display(value: float | None, digits: int = 3) -> str:
    """How the PDF shows a number (fixed decimals, no locale); '' for none."""
    return "" if value is None else f"{value:.{digits}f}"


def _exact(value: float | None) -> str:
    """How the CSV writes a float: the shortest text that reads back as the same double."""
    return "" if value is None else repr(float(value))


def _iso(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


DAILY_COLUMNS = ("day", "appliance", "device", "metric", "unit", "count", "avg", "min", "max",
                 "hours_with_data", "hours_in_day", "coverage_pct")  # fmt: skip
ALERT_COLUMNS = ("id", "rule", "severity", "appliance", "metric", "reason", "value",
                 "opened_at", "acknowledged_at", "acknowledged_by", "acknowledge_note",
                 "resolved_at", "resolved_by", "resolve_note", "state_at_month_end")  # fmt: skip


def _csv(header: tuple[str, ...], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def daily_csv(report: MonthlyReport) -> bytes:
    """One row per series and day: aggregates (exact doubles) and completeness."""
    return _csv(
        DAILY_COLUMNS,
        [
            [
                r.day.isoformat(),
                r.appliance,
                r.device,
                r.metric,
                r.unit,
                str(r.count),
                _exact(r.avg),
                _exact(r.min),
                _exact(r.max),
                str(r.hours_with_data),
                str(HOURS_PER_DAY),
                display(r.coverage_pct, 1),
            ]
            for r in report.daily
        ],
    )


def alerts_csv(report: MonthlyReport) -> bytes:
    """One row per alert open during the month, with its state at the month's end."""
    return _csv(
        ALERT_COLUMNS,
        [
            [
                str(a.id),
                a.rule,
                a.severity,
                a.appliance,
                a.metric,
                a.reason,
                _exact(a.value),
                _iso(a.opened_at),
                _iso(a.acknowledged_at),
                a.acknowledged_by,
                a.acknowledge_note,
                _iso(a.resolved_at),
                a.resolved_by,
                a.resolve_note,
                a.state_at_month_end,
            ]
            for a in report.alerts
        ],
    )


CSV_TABLES = {"daily": daily_csv, "alerts": alerts_csv}
