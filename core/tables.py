"""QuestDB table definitions: one source for the DDL, the writers and the readers.

Every table the ingest writes is declared here once. A :class:`TableSet` names them all with
an optional prefix, so that tests (and staging stacks sharing one QuestDB) get their own
tables. Writers take column names from the :class:`Table` objects, readers build SQL from
them; nobody spells a table or column name twice.

Raw samples are keyed by their identity and source timestamp
(``DEDUP UPSERT KEYS(ts, site, node, device, metric)``): anything may be delivered twice,
storage is idempotent.

The hot path is a set of materialized views (:class:`MaterializedView`), refreshed by QuestDB
as rows arrive: ``telemetry_1m`` over the raw table's hot rows, ``telemetry_1h`` on
``telemetry_1m`` and ``telemetry_1d`` on ``telemetry_1h``, each holding avg, min, max, count,
sum, first and last per (site, node, device, metric) and bucket, so that every coarser level
rolls up exactly (sum of sums, sum of counts, min of mins, max of maxes, first of firsts,
last of lasts, avg = sum / count); and ``telemetry_latest_1d``, the last value and its time per
metric and day, which the current-values query (``core.queries``) reads with ``LATEST ON``.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

_NAME_RE: Final = re.compile(r"[a-z_][a-z0-9_]*")


class Column(msgspec.Struct, frozen=True):
    """One column: name and QuestDB type."""

    name: str
    type: str


class Table(msgspec.Struct, frozen=True):
    """A WAL table with a designated timestamp, time partitioning and optional dedup keys."""

    name: str
    columns: tuple[Column, ...]
    timestamp: str
    partition_by: str = "DAY"
    dedup_keys: tuple[str, ...] = ()
    ttl: str | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"table name {self.name!r} must match {_NAME_RE.pattern}")
        names = [c.name for c in self.columns]
        if self.timestamp not in names:
            raise ValueError(f"table {self.name}: designated timestamp {self.timestamp!r} missing")
        missing = [k for k in self.dedup_keys if k not in names]
        if missing:
            raise ValueError(f"table {self.name}: dedup keys {missing} are not columns")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def symbols(self) -> tuple[str, ...]:
        """Columns of type SYMBOL (ILP ``symbols=``)."""
        return tuple(c.name for c in self.columns if c.type.startswith("SYMBOL"))

    def create_sql(self) -> str:
        """``CREATE TABLE IF NOT EXISTS`` statement for this table."""
        cols = ",\n  ".join(f"{c.name} {c.type}" for c in self.columns)
        sql = (
            f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols}\n) "
            f"TIMESTAMP({self.timestamp}) PARTITION BY {self.partition_by}"
        )
        if self.ttl:
            sql += f" TTL {self.ttl}"
        sql += " WAL"
        if self.dedup_keys:
            sql += f" DEDUP UPSERT KEYS({', '.join(self.dedup_keys)})"
        return sql


def _raw(name: str) -> Table:
    return Table(
        name=name,
        columns=(
            Column("ts", "TIMESTAMP_NS"),
            Column("site", "SYMBOL"),
            Column("node", "SYMBOL"),
            Column("device", "SYMBOL"),
            Column("metric", "SYMBOL"),
            Column("value", "DOUBLE"),
            Column("hot", "BOOLEAN"),
            Column("historical", "BOOLEAN"),
            Column("received", "TIMESTAMP"),
        ),
        timestamp="ts",
        partition_by="HOUR",
        dedup_keys=("ts", "site", "node", "device", "metric"),
    )


def _events(name: str) -> Table:
    return Table(
        name=name,
        columns=(
            Column("ts", "TIMESTAMP_NS"),
            Column("site", "SYMBOL"),
            Column("node", "SYMBOL"),
            Column("device", "SYMBOL"),
            Column("metric", "SYMBOL"),
            Column("datatype", "SYMBOL"),
            Column("value", "VARCHAR"),
            Column("historical", "BOOLEAN"),
            Column("received", "TIMESTAMP"),
        ),
        timestamp="ts",
        partition_by="DAY",
        dedup_keys=("ts", "site", "node", "device", "metric"),
    )


def _dead_letters(name: str) -> Table:
    return Table(
        name=name,
        columns=(
            Column("received", "TIMESTAMP"),
            Column("reason", "SYMBOL"),
            Column("topic", "VARCHAR"),
            Column("detail", "VARCHAR"),
            Column("payload_b64", "VARCHAR"),
            Column("payload_size", "LONG"),
        ),
        timestamp="received",
        partition_by="DAY",
    )


def _catalogue(name: str) -> Table:
    return Table(
        name=name,
        columns=(
            Column("seen", "TIMESTAMP"),
            Column("site", "SYMBOL"),
            Column("node", "SYMBOL"),
            Column("device", "SYMBOL"),
            Column("metric", "SYMBOL"),
            Column("datatype", "SYMBOL"),
            Column("unit", "SYMBOL"),
            Column("hot", "BOOLEAN"),
        ),
        timestamp="seen",
        partition_by="MONTH",
    )


class Aggregate(msgspec.Struct, frozen=True):
    """One aggregate column of a materialized view: its name and the expression computing it."""

    name: str
    expression: str


class MaterializedView(msgspec.Struct, frozen=True):
    """A ``SAMPLE BY`` materialized view (``REFRESH IMMEDIATE``: incremental per base commit).

    ``keys`` are the grouping columns (a subset of the base's dedup keys, as QuestDB requires);
    the view's designated timestamp is the bucket start, named like the base's (``ts``) and of
    the same type (``TIMESTAMP_NS`` for the raw table and the views built on it).
    """

    name: str
    base: str
    timestamp: str
    keys: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    sample_by: str
    partition_by: str
    where: str | None = None
    #: Symbol keys with a bitmap index: a query filtered on one reads only its rows instead of
    #: scanning whole partitions (the fleet's 1-minute view holds every hot series' minute).
    indexed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.indexed:
            if name not in self.keys:
                raise ValueError(f"view {self.name}: indexed column {name!r} is not a key")
        for name in (self.name, self.base, self.timestamp, *self.keys):
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"view {self.name!r}: name {name!r} must match {_NAME_RE.pattern}")
        for agg in self.aggregates:
            if not _NAME_RE.fullmatch(agg.name):
                raise ValueError(f"view {self.name}: column {agg.name!r} is not a valid name")

    @property
    def column_names(self) -> tuple[str, ...]:
        return (self.timestamp, *self.keys, *(a.name for a in self.aggregates))

    def select_sql(self) -> str:
        """The view's query: one row per bucket and key."""
        cols = ", ".join(
            [self.timestamp, *self.keys, *(f"{a.expression} {a.name}" for a in self.aggregates)]
        )
        where = f" WHERE {self.where}" if self.where else ""
        return f"SELECT {cols} FROM {self.base}{where} SAMPLE BY {self.sample_by}"

    def create_sql(self) -> str:
        """``CREATE MATERIALIZED VIEW IF NOT EXISTS`` statement for this view."""
        indexes = "".join(f", INDEX ({c})" for c in self.indexed)
        return (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.name} AS (\n  {self.select_sql()}\n)"
            f"{indexes} PARTITION BY {self.partition_by}"
        )


_KEYS: Final = ("site", "node", "device", "metric")

#: Aggregate columns of every rollup view, in order.
ROLLUP_COLUMNS: Final = ("avg", "min", "max", "count", "sum", "first", "last")


def _rollup_from_raw(name: str, raw: Table, sample_by: str, partition_by: str) -> MaterializedView:
    return MaterializedView(
        name=name,
        base=raw.name,
        timestamp=raw.timestamp,
        keys=_KEYS,
        aggregates=(
            Aggregate("avg", "avg(value)"),
            Aggregate("min", "min(value)"),
            Aggregate("max", "max(value)"),
            Aggregate("count", "count()"),
            Aggregate("sum", "sum(value)"),
            Aggregate("first", "first(value)"),
            Aggregate("last", "last(value)"),
        ),
        sample_by=sample_by,
        partition_by=partition_by,
        where="hot",
        indexed=("node",),
    )


def _rollup_from_view(
    name: str, finer: MaterializedView, sample_by: str, partition_by: str
) -> MaterializedView:
    """A coarser rollup computed exactly from a finer one (never averages of averages)."""
    return MaterializedView(
        name=name,
        base=finer.name,
        timestamp=finer.timestamp,
        keys=_KEYS,
        aggregates=(
            Aggregate("avg", "sum(sum) / sum(count)"),
            Aggregate("min", "min(min)"),
            Aggregate("max", "max(max)"),
            Aggregate("count", "sum(count)"),
            Aggregate("sum", "sum(sum)"),
            Aggregate("first", "first(first)"),
            Aggregate("last", "last(last)"),
        ),
        sample_by=sample_by,
        partition_by=partition_by,
        indexed=("node",),
    )


def _latest(name: str, raw: Table) -> MaterializedView:
    return MaterializedView(
        name=name,
        base=raw.name,
        timestamp=raw.timestamp,
        keys=_KEYS,
        aggregates=(
            Aggregate("value", "last(value)"),
            Aggregate("value_ts", f"last({raw.timestamp})"),
        ),
        sample_by="1d",
        partition_by="MONTH",
    )


class TableSet(msgspec.Struct, frozen=True):
    """All of Derrick's QuestDB tables, optionally prefixed (``t123_telemetry_raw``)."""

    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and not _NAME_RE.fullmatch(self.prefix):
            raise ValueError(f"table prefix {self.prefix!r} must match {_NAME_RE.pattern}")

    @property
    def raw(self) -> Table:
        """Every numeric and boolean sample (booleans as 0/1): the store of record."""
        return _raw(f"{self.prefix}telemetry_raw")

    @property
    def events(self) -> Table:
        """String-valued samples and DataSets/Templates kept as JSON."""
        return _events(f"{self.prefix}telemetry_events")

    @property
    def dead_letters(self) -> Table:
        """Rejected input with the reason and the raw bytes."""
        return _dead_letters(f"{self.prefix}ingest_dead_letters")

    @property
    def catalogue(self) -> Table:
        """One row per metric per birth: datatype, unit, hot flag (first/last seen by query)."""
        return _catalogue(f"{self.prefix}metric_catalogue")

    @property
    def telemetry_1m(self) -> MaterializedView:
        """Hot metrics per minute: avg, min, max, count, sum, first, last."""
        return _rollup_from_raw(f"{self.prefix}telemetry_1m", self.raw, "1m", "DAY")

    @property
    def telemetry_1h(self) -> MaterializedView:
        """Hot metrics per hour, rolled up exactly from ``telemetry_1m``."""
        return _rollup_from_view(f"{self.prefix}telemetry_1h", self.telemetry_1m, "1h", "MONTH")

    @property
    def telemetry_1d(self) -> MaterializedView:
        """Hot metrics per UTC day, rolled up exactly from ``telemetry_1h``."""
        return _rollup_from_view(f"{self.prefix}telemetry_1d", self.telemetry_1h, "1d", "YEAR")

    @property
    def latest(self) -> MaterializedView:
        """Every numeric metric's last value (and its time) per UTC day: current values."""
        return _latest(f"{self.prefix}telemetry_latest_1d", self.raw)

    def all(self) -> tuple[Table, ...]:
        return (self.raw, self.events, self.dead_letters, self.catalogue)

    def views(self) -> tuple[MaterializedView, ...]:
        """The materialized views, each after the one it is built on."""
        return (self.telemetry_1m, self.telemetry_1h, self.telemetry_1d, self.latest)

    def create_statements(self) -> list[str]:
        """Tables, then views in dependency order; every statement is ``IF NOT EXISTS``."""
        return [t.create_sql() for t in self.all()] + [v.create_sql() for v in self.views()]
