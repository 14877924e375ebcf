"""Reading QuestDB for the data endpoints, and the calendar arithmetic around it.

SQL comes from :mod:`core.queries` (built from :mod:`core.tables`); every value is bound.
Time zones are explicit: windows (this week, the same month last year) are computed here
with :mod:`zoneinfo`, converted to UTC and bound; bucket alignment uses QuestDB's
``ALIGN TO CALENDAR TIME ZONE`` with the zone name bound. Weekly aggregates are rolled up
here from the zone's daily buckets (ISO weeks, Monday first), exactly: sums of sums, sums
of counts, mins of mins, maxes of maxes.

Buckets come from the hourly view for widths of an hour and more, so day, week and month
boundaries are exact in zones whose offset is a whole number of hours (the 1-minute view
serves shorter widths).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Literal, TypeVar

import msgspec
from psycopg.rows import RowFactory, args_row, tuple_row
from psycopg.types.datetime import TimestamptzBinaryLoader
from psycopg_pool import AsyncConnectionPool

from core import queries
from core.cold_tables import ColdTables
from core.tables import TableSet

Period = Literal["day", "week", "month"]
ComparePeriod = Literal["week", "month"]

_UTC = dt.UTC


#: Names the system's tz database lists that are no place QuestDB can align buckets in (its
#: ``TIME ZONE`` refuses them: "invalid timezone"), with what to use instead.
#: ``tests/api/test_api_timezones.py`` runs every other listed name through QuestDB.
NOT_QUESTDB_ZONES: dict[str, str] = {
    "Factory": "tzdata's placeholder, not a place; use the site's zone or 'UTC'",
    "localtime": "the host's own setting, not a zone name; use the site's zone or 'UTC'",
    "ROC": "an old alias QuestDB does not know; use 'Asia/Taipei'",
}


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() - NOT_QUESTDB_ZONES.keys())


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone ``name``; ValueError with a clear message for anything else."""
    if name in NOT_QUESTDB_ZONES:
        raise ValueError(f"tz {name!r} is not usable as a time zone: {NOT_QUESTDB_ZONES[name]}")
    if name not in _zones():
        raise ValueError(f"tz {name[:64]!r} is not an IANA time zone name (e.g. 'America/Chicago')")
    return zoneinfo.ZoneInfo(name)


def zone_names() -> frozenset[str]:
    """Every name :func:`zone` accepts."""
    return _zones()


def utc(value: dt.datetime) -> dt.datetime:
    """QuestDB hands back naive UTC; make it aware."""
    return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)


def aware(value: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """A client's datetime: naive ones are read in ``tz``."""
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


class Bucket(msgspec.Struct, frozen=True, gc=False):
    """One bucket of a series. ``gc=False``: no field can hold a container, and a series
    response makes up to thousands of them that the collector need not track."""

    ts: dt.datetime
    device: str
    avg: float
    min: float
    max: float
    count: int
    sum: float


R = TypeVar("R")
_BUCKET_ROWS: RowFactory[Bucket] = args_row(Bucket)


class Totals(msgspec.Struct, frozen=True):
    device: str
    metric: str
    avg: float
    min: float
    max: float
    count: int
    sum: float


def week_start(day: dt.datetime) -> dt.date:
    d = day.date()
    return d - dt.timedelta(days=d.weekday())


def weekly(days: Sequence[Bucket], tz: zoneinfo.ZoneInfo) -> list[Bucket]:
    """Roll daily buckets (in ``tz``) up into ISO weeks starting Monday 00:00 in ``tz``."""
    groups: dict[tuple[dt.date, str], list[Bucket]] = {}
    for b in days:
        groups.setdefault((week_start(b.ts.astimezone(tz)), b.device), []).append(b)
    out = []
    for (monday, device), items in sorted(groups.items()):
        total = sum(b.sum for b in items)
        count = sum(b.count for b in items)
        start = dt.datetime.combine(monday, dt.time(), tz).astimezone(_UTC)
        out.append(
            Bucket(
                start,
                device,
                total / count if count else 0.0,
                min(b.min for b in items),
                max(b.max for b in items),
                count,
                total,
            )
        )
    return out


def period_windows(
    period: ComparePeriod, at: dt.datetime, tz: zoneinfo.ZoneInfo
) -> tuple[tuple[dt.datetime, dt.datetime], tuple[dt.datetime, dt.datetime]]:
    """(current, previous) windows as UTC [start, end): the week containing ``at`` and the week
    before; or the month containing ``at`` and the same month a year earlier. The current
    window ends at ``at``; the previous one covers the whole period."""
    local = at.astimezone(tz)
    if period == "week":
        start = dt.datetime.combine(week_start(local), dt.time(), tz)
        prev_start = dt.datetime.combine(start.date() - dt.timedelta(days=7), dt.time(), tz)
        prev_end = start
    else:
        start = dt.datetime(local.year, local.month, 1, tzinfo=tz)
        prev_start = dt.datetime(local.year - 1, local.month, 1, tzinfo=tz)
        nxt = (local.month % 12) + 1
        prev_end = dt.datetime(local.year - 1 + (local.month == 12), nxt, 1, tzinfo=tz)
    return (start.astimezone(_UTC), at.astimezone(_UTC)), (
        prev_start.astimezone(_UTC),
        prev_end.astimezone(_UTC),
    )


def pct_change(current: float, previous: float) -> float | None:
    if previous == 0:
        return None
    return (current - previous) / abs(previous) * 100.0


class Reader:
    """The data endpoints' queries on a psycopg async pool to QuestDB's PGWire."""

    def __init__(self, pool: AsyncConnectionPool[Any], tables: TableSet, kpi_group: str) -> None:
        self._pool = pool
        self.tables = tables
        self.kpi_group = kpi_group

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """The QuestDB pool, for route modules that run their own queries (reports)."""
        return self._pool

    async def _rows(self, sql: str, params: Mapping[str, object]) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` as tuples (:meth:`_made`)."""
        return await self._made(sql, params, tuple_row)

    async def _made(self, sql: str, params: Mapping[str, object], rows: RowFactory[R]) -> list[R]:
        """Rows in PGWire's binary format, each made by ``rows``: QuestDB writes doubles and
        timestamps as bytes instead of formatting them as text, and psycopg reads them
        without parsing (for a 24-hour series of 1,436 buckets: QuestDB 1.2 ms of CPU instead
        of 5.4, psycopg 0.5 ms instead of 1.6; docs/benchmarks.md, API)."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(binary=True, row_factory=rows)
            # QuestDB's timestamps are UTC instants: read them as aware datetimes (in the
            # session zone QuestDB reports, GMT) at once, cheaper than making naive ones
            # aware afterwards (0.7 ms for 1,436 rows)
            cur.adapters.register_loader("timestamp", TimestamptzBinaryLoader)
            await cur.execute(sql.encode(), params)
            made: list[R] = await cur.fetchall()
            return made

    async def completeness(self, site: str, day: dt.datetime) -> list[tuple[Any, ...]]:
        """The nightly job's completeness rows of ``site`` for the UTC day starting at
        ``day`` (``core.queries.completeness_of_site``)."""
        sql = queries.completeness_of_site(ColdTables(self.tables.prefix))
        return await self._rows(sql, {"site": site, "day": day})

    async def daily_of_site(
        self, site: str, start: dt.datetime, end: dt.datetime
    ) -> list[tuple[Any, ...]]:
        return await self._rows(
            queries.daily_of_site(self.tables),
            {"site": site, "start": start, "end": end},
        )

    async def site_current(self, site: str, since: dt.datetime) -> list[tuple[Any, ...]]:
        sql = queries.current_values_of_site(self.tables)
        return await self._rows(sql, {"site": site, "since": since})

    async def node_current(self, site: str, node: str, since: dt.datetime) -> list[tuple[Any, ...]]:
        sql = queries.current_values(self.tables)
        return await self._rows(sql, {"site": site, "node": node, "since": since})

    async def series(
        self,
        site: str,
        node: str,
        *,
        metric: str,
        bucket: str,
        start: dt.datetime,
        end: dt.datetime,
        tz: str,
    ) -> list[Bucket]:
        params = {
            "site": site,
            "node": node,
            "metric": metric,
            "start": start,
            "end": end,
            "tz": tz,
        }
        # each row straight into a Bucket (ts already aware, count a long): no tuple per row
        # for the collector to track (docs/benchmarks.md, API: garbage collection)
        return await self._made(queries.series(self.tables, bucket, tz), params, _BUCKET_ROWS)

    async def totals(
        self, site: str, node: str, start: dt.datetime, end: dt.datetime, *, to_now: bool = False
    ) -> list[Totals]:
        """Totals per metric of ``[start, end)``; ``to_now``: ``end`` is the present."""
        view = queries.window_view(self.tables, start, None if to_now else end)
        params = {"site": site, "node": node, "start": start, "end": end}
        rows = await self._rows(queries.window_totals(self.tables, view), params)
        return [Totals(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6]) for r in rows]

    async def kpis_current(self, appliance: str, since: dt.datetime) -> list[tuple[Any, ...]]:
        sql = queries.current_kpis(self.tables)
        return await self._rows(
            sql, {"group": self.kpi_group, "appliance": appliance, "since": since}
        )

    async def kpi_totals(
        self, appliance: str, start: dt.datetime, end: dt.datetime
    ) -> list[tuple[Any, ...]]:
        """KPI totals from ``start`` to the present ``end``."""
        view = queries.window_view(self.tables, start, None)
        params = {"group": self.kpi_group, "appliance": appliance, "start": start, "end": end}
        return await self._rows(queries.kpi_window_totals(self.tables, view), params)
