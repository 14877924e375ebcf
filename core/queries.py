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


def rollup(view: MaterializedView) -> str:
    """Buckets of one node from a rollup view (``tables.telemetry_1m`` / ``_1h`` / ``_1d``).

    Parameters: ``site``, ``node``, ``start`` (inclusive), ``end`` (exclusive), UTC datetimes
    compared with the bucket start. Columns: ``ts, device, metric`` and the aggregates
    ``avg, min, max, count, sum, first, last``; ordered by time, device, metric.
    """
    missing = [c for c in ROLLUP_COLUMNS if c not in view.column_names]
    if missing:
        raise ValueError(f"{view.name} is not a rollup view (missing {missing})")
    ts = view.timestamp
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
