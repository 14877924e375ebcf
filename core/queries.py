"""Readers' SQL for the hot path, built from the table definitions in :mod:`core.tables`.

Every function returns one SQL string with psycopg named placeholders (``%(site)s``); values
are always bound by the driver, never formatted in. Timestamps come back from QuestDB's PGWire
as naive ``datetime`` values holding UTC (microseconds; ``::long`` gives nanoseconds).

Current values follow the QuestDB docs' pattern: a ``SAMPLE BY 1d`` view keeps each metric's
last value and its time per day (``telemetry_latest_1d``), and ``LATEST ON`` over that view
finds the newest day per metric. The ``since`` bound keeps the backward scan short: a metric
not seen since then is not "current".
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

from core.cold_tables import ColdTables
from core.tables import ROLLUP_COLUMNS, MaterializedView, TableSet


def current_values(tables: TableSet) -> str:
    """Latest value of every metric of one node.

    Parameters: ``site``, ``node``, ``since`` (a UTC datetime: ignore metrics not seen since).
    Columns: ``device, metric, value, value_ts``.
    """
    v = tables.latest
    return (
        f"SELECT device, metric, value, value_ts FROM {v.name} "
        f"WHERE site = %(site)s AND node = %(node)s AND {v.timestamp} >= %(since)s "
        f"LATEST ON {v.timestamp} PARTITION BY device, metric"
    )


def current_kpis(tables: TableSet) -> str:
    """Latest KPI values of one appliance, as stored from the KPI edge node's DDATA.

    KPIs live in the raw table under the KPI node's Sparkplug group (``site`` = that group,
    ``device`` = the appliance id), whichever ingest worker computed them.
    Parameters: ``group``, ``appliance``, ``since``. Columns: ``metric, value, value_ts``.
    """
    v = tables.latest
    return (
        f"SELECT metric, value, value_ts FROM {v.name} "
        f"WHERE site = %(group)s AND device = %(appliance)s AND {v.timestamp} >= %(since)s "
        f"LATEST ON {v.timestamp} PARTITION BY metric"
    )


def _rollup_timestamp(view: MaterializedView) -> str:
    missing = [c for c in ROLLUP_COLUMNS if c not in view.column_names]
    if missing:
        raise ValueError(f"{view.name} is not a rollup view (missing {missing})")
    return view.timestamp


def rollup(view: MaterializedView) -> str:
    """Buckets of one node from a rollup view (``tables.telemetry_1m`` / ``_1h`` / ``_1d``).

    Parameters: ``site``, ``node``, ``start`` (inclusive), ``end`` (exclusive), UTC datetimes
    compared with the bucket start. Columns: ``ts, device, metric`` and the aggregates
    ``avg, min, max, count, sum, first, last``; ordered by time, device, metric.
    """
    ts = _rollup_timestamp(view)
    cols = ", ".join((ts, "device", "metric", *ROLLUP_COLUMNS))
    return (
        f"SELECT {cols} FROM {view.name} "
        f"WHERE site = %(site)s AND node = %(node)s AND {ts} >= %(start)s AND {ts} < %(end)s "
        f"ORDER BY {ts}, device, metric"
    )


def catalogue_latest(tables: TableSet) -> str:
    """Every metric ever born, with what its newest birth said, for the registry sync.

    Parameters: none. Columns: ``site, node, device, metric, datatype, unit, hot,
    first_seen, last_seen``.
    """
    c = tables.catalogue
    return (
        f"SELECT site, node, device, metric, last(datatype) datatype, last(unit) unit, "
        f"last(hot) hot, min({c.timestamp}) first_seen, max({c.timestamp}) last_seen "
        f"FROM {c.name} ORDER BY site, node, device, metric"
    )


def current_values_of_site(tables: TableSet) -> str:
    """Latest value of every metric of every node of one site.

    Parameters: ``site``, ``since``. Columns: ``node, device, metric, value, value_ts``.
    """
    v = tables.latest
    return (
        f"SELECT node, device, metric, value, value_ts FROM {v.name} "
        f"WHERE site = %(site)s AND {v.timestamp} >= %(since)s "
        f"LATEST ON {v.timestamp} PARTITION BY node, device, metric"
    )


#: Bucket widths a series may ask for, and the rollup view each is computed from in zones
#: whose UTC offset is always a whole number of hours (see :func:`whole_hour_zone`).
SERIES_BUCKETS: dict[str, str] = {
    "1m": "1m", "5m": "1m", "15m": "1m", "30m": "1m",
    "1h": "1h", "6h": "1h", "12h": "1h", "1d": "1h", "1M": "1h",
}  # fmt: skip

_UTC = dt.UTC


@functools.lru_cache(maxsize=1024)
def whole_hour_zone(tz: str) -> bool:
    """Whether the IANA zone ``tz``'s UTC offset is a whole number of hours at every instant
    from 2000 (nothing older is stored) to 2050, sampled twice a day.

    Only then do its local hours, days and months start on whole UTC hours, so only then can
    buckets of an hour or more be summed from the hourly view; in the others (Asia/Kolkata
    +5:30, Asia/Kathmandu +5:45, America/St_Johns -3:30, Australia/Adelaide +9:30/+10:30...) an
    hourly row straddles two local buckets, and they are summed from the 1-minute view.
    """
    zone = zoneinfo.ZoneInfo(tz)
    t = dt.datetime(2000, 1, 1, tzinfo=_UTC)
    end = dt.datetime(2050, 1, 1, tzinfo=_UTC)
    step = dt.timedelta(hours=12)
    while t < end:
        offset = zone.utcoffset(t)
        if offset is None or offset.total_seconds() % 3600:
            return False
        t += step
    return True


def bucket_view(tables: TableSet, bucket: str, tz: str = "UTC") -> MaterializedView:
    """The rollup view buckets of ``bucket`` on the calendar of ``tz`` are computed from
    (exactly: sums, counts, mins, maxes)."""
    try:
        source = SERIES_BUCKETS[bucket]
    except KeyError:
        raise ValueError(f"bucket {bucket!r} is not one of {', '.join(SERIES_BUCKETS)}") from None
    if source == "1m" or not whole_hour_zone(tz):
        return tables.telemetry_1m
    return tables.telemetry_1h


def whole_hour(t: dt.datetime) -> bool:
    """``t`` (aware) is on a whole UTC hour."""
    u = t.astimezone(_UTC)
    return (u.minute, u.second, u.microsecond) == (0, 0, 0)


#: Bucket widths whose buckets are the rows of their view as stored: a minute starts at the same
#: instant in every zone (every UTC offset in use since 1972 is a whole number of minutes, and
#: nothing before 2000 is stored), so re-sampling the 1-minute view by 1 minute would only copy
#: it. Reading the rows directly is several times cheaper for the dashboards' default view.
AS_STORED_BUCKETS: frozenset[str] = frozenset({"1m"})


def series(tables: TableSet, bucket: str, tz: str) -> str:
    """One metric of one node in buckets of ``bucket`` aligned to the calendar of a zone.

    ``bucket`` must be one of :data:`SERIES_BUCKETS` (it is part of the SQL, so it is checked
    here against that closed set). Parameters: ``site``, ``node``, ``metric``, ``start``
    (inclusive), ``end`` (exclusive), ``tz`` (bound; not used by the buckets of
    :data:`AS_STORED_BUCKETS`, aligned alike in every zone). ``tz``, an IANA zone name, is
    given here too: it picks the view (:func:`bucket_view`). Columns: ``ts`` (bucket start,
    UTC), ``device, avg, min, max, count, sum``.
    """
    view = bucket_view(tables, bucket, tz)
    ts = view.timestamp
    where = (
        f"WHERE site = %(site)s AND node = %(node)s AND metric = %(metric)s "
        f"AND {ts} >= %(start)s AND {ts} < %(end)s"
    )
    if bucket in AS_STORED_BUCKETS and view.sample_by == bucket:
        return (
            f"SELECT {ts}, device, sum / count avg, min, max, count, sum FROM {view.name} "
            f"{where} ORDER BY {ts}, device"
        )
    return (
        f"SELECT {ts}, device, sum(sum) / sum(count) avg, min(min) min, max(max) max, "
        f"sum(count) count, sum(sum) sum FROM {view.name} {where} "
        f"SAMPLE BY {bucket} ALIGN TO CALENDAR TIME ZONE %(tz)s ORDER BY {ts}, device"
    )


def window_view(tables: TableSet, start: dt.datetime, end: dt.datetime | None) -> MaterializedView:
    """The rollup view that sums ``[start, end)`` exactly: the hourly one when both ends are
    whole UTC hours (``end`` None: the window runs to the present, nothing stored after it),
    else the 1-minute one (local midnights of a +5:30 zone are at :30 UTC)."""
    hourly = whole_hour(start) and (end is None or whole_hour(end))
    return tables.telemetry_1h if hourly else tables.telemetry_1m


def window_totals(tables: TableSet, view: MaterializedView) -> str:
    """avg/min/max/count/sum of every metric of one node over one window, from ``view`` (a
    rollup view; :func:`window_view` picks the one that is exact for a window).

    Parameters: ``site``, ``node``, ``start``, ``end``.
    Columns: ``device, metric, avg, min, max, count, sum``.
    """
    ts = _rollup_timestamp(view)
    return (
        f"SELECT device, metric, sum(sum) / sum(count) avg, min(min) min, max(max) max, "
        f"sum(count) count, sum(sum) sum FROM {view.name} "
        f"WHERE site = %(site)s AND node = %(node)s AND {ts} >= %(start)s AND {ts} < %(end)s "
        f"GROUP BY device, metric ORDER BY device, metric"
    )


def kpi_window_totals(tables: TableSet, view: MaterializedView) -> str:
    """avg/min/max/count of one appliance's KPIs over one window, from ``view`` (as
    :func:`window_totals`).

    Parameters: ``group`` (the KPI node's Sparkplug group), ``appliance``, ``start``, ``end``.
    Columns: ``metric, avg, min, max, count``.
    """
    ts = _rollup_timestamp(view)
    return (
        f"SELECT metric, sum(sum) / sum(count) avg, min(min) min, max(max) max, "
        f"sum(count) count FROM {view.name} "
        f"WHERE site = %(group)s AND device = %(appliance)s "
        f"AND {ts} >= %(start)s AND {ts} < %(end)s GROUP BY metric ORDER BY metric"
    )


#: Most rows one catch-up query returns (an alert evaluator's replay after a restart).
CATCHUP_LIMIT = 500_000


def live_samples_of_site(tables: TableSet) -> str:
    """Live (not historical) samples of one Sparkplug group in ``(start, end]``, oldest first:
    what an alert evaluator replays after a restart. Parameters: ``site``, ``start``, ``end``.
    Columns: ``node, device, metric, value, ts``."""
    raw = tables.raw
    return (
        f"SELECT node, device, metric, value, {raw.timestamp} FROM {raw.name} "
        f"WHERE site = %(site)s AND {raw.timestamp} > %(start)s AND {raw.timestamp} <= %(end)s "
        f"AND NOT historical AND value IS NOT NULL ORDER BY {raw.timestamp} LIMIT {CATCHUP_LIMIT}"
    )


def last_seen_of_site(tables: TableSet) -> str:
    """When each node of one site last had a sample stored (any metric, live or replayed),
    among the days from ``since``: where a restarted alert evaluator's no-data clocks start.
    Parameters: ``site``, ``since``. Columns: ``node, last_ts``."""
    v = tables.latest
    return (
        f"SELECT node, max(value_ts) last_ts FROM {v.name} "
        f"WHERE site = %(site)s AND {v.timestamp} >= %(since)s GROUP BY node"
    )


def daily_of_site(tables: TableSet) -> str:
    """Daily (UTC) aggregates of every hot series of one site in ``[start, end)``.
    Parameters: ``site``, ``start``, ``end``. Columns: ``ts, node, device, metric, avg, min,
    max, count``."""
    v = tables.telemetry_1d
    return (
        f"SELECT {v.timestamp}, node, device, metric, avg, min, max, count FROM {v.name} "
        f"WHERE site = %(site)s AND {v.timestamp} >= %(start)s AND {v.timestamp} < %(end)s"
    )


def site_daily(tables: TableSet) -> str:
    """Daily (UTC) aggregates of every hot series of one site in ``[start, end)``, for the
    monthly report. Parameters: ``site``, ``start``, ``end``. Columns: ``ts, node, device,
    metric, count, avg, min, max``; ordered by node, device, metric, time."""
    v = tables.telemetry_1d
    ts = v.timestamp
    return (
        f"SELECT {ts}, node, device, metric, count, avg, min, max FROM {v.name} "
        f"WHERE site = %(site)s AND {ts} >= %(start)s AND {ts} < %(end)s "
        f"ORDER BY node, device, metric, {ts}"
    )


def site_hours_with_data(tables: TableSet) -> str:
    """Per UTC day, how many hours of each hot series of one site hold at least one sample
    (hourly buckets of ``telemetry_1h``). Parameters: ``site``, ``start``, ``end``.
    Columns: ``ts, node, device, metric, hours``."""
    v = tables.telemetry_1h
    ts = v.timestamp
    return (
        f"SELECT {ts}, node, device, metric, count() hours FROM {v.name} "
        f"WHERE site = %(site)s AND {ts} >= %(start)s AND {ts} < %(end)s "
        f"SAMPLE BY 1d ORDER BY node, device, metric, {ts}"
    )


def completeness_of_site(tables: ColdTables) -> str:
    """One UTC day of the nightly per-node completeness report of one site. Parameters:
    ``site``, ``day`` (the day's start, UTC). Columns: ``node, expected, received, ratio,
    alarm_minutes, gap_list, gap_minutes, longest_gap_minutes, late``; ordered by node."""
    t = tables.completeness
    return (
        "SELECT node, expected, received, ratio, alarm_minutes, gap_list, gap_minutes, "
        f"longest_gap_minutes, late FROM {t.name} "
        f"WHERE site = %(site)s AND {t.timestamp} = %(day)s ORDER BY node"
    )
