"""QuestDB table definitions: one source for the DDL, the writers and the readers.

Every table the ingest writes is declared here once. A :class:`TableSet` names them all with
an optional prefix, so that tests (and staging stacks sharing one QuestDB) get their own
tables. Writers take column names from the :class:`Table` objects, readers build SQL from
them; nobody spells a table or column name twice.

Raw samples are keyed by their identity and source timestamp
(``DEDUP UPSERT KEYS(ts, site, node, device, metric)``): anything may be delivered twice,
storage is idempotent.
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

    def all(self) -> tuple[Table, ...]:
        return (self.raw, self.events, self.dead_letters, self.catalogue)

    def create_statements(self) -> list[str]:
        return [t.create_sql() for t in self.all()]
