"""QuestDB tables the nightly cold job writes (``cold``) and the API reads (``api``).

- ``telemetry_daily``: one row per (site, node, device, metric) and UTC day, for *every*
  numeric metric (the hot views only roll up hot ones): avg, min, max, count, sum, first, last.
- ``completeness_daily``: one row per (site, node) and UTC day: samples expected from the
  node's configured rates and alarm periods, received, gaps longer than the threshold, late
  arrivals.

Both are keyed by their identity and day (``DEDUP UPSERT KEYS``): the nightly job rewrites a
day as often as it runs and the result is the same.
"""

from __future__ import annotations

import msgspec

from core.tables import _NAME_RE, Column, Table


def _daily(name: str) -> Table:
    return Table(
        name=name,
        columns=(
            Column("ts", "TIMESTAMP"),
            Column("site", "SYMBOL"),
            Column("node", "SYMBOL"),
            Column("device", "SYMBOL"),
            Column("metric", "SYMBOL"),
            Column("avg", "DOUBLE"),
            Column("min", "DOUBLE"),
            Column("max", "DOUBLE"),
            Column("count", "LONG"),
            Column("sum", "DOUBLE"),
            Column("first", "DOUBLE"),
            Column("last", "DOUBLE"),
        ),
        timestamp="ts",
        partition_by="YEAR",
        dedup_keys=("ts", "site", "node", "device", "metric"),
    )


def _completeness(name: str) -> Table:
    return Table(
        name=name,
        columns=(
            Column("day", "TIMESTAMP"),
            Column("site", "SYMBOL"),
            Column("node", "SYMBOL"),
            Column("expected", "LONG"),
            Column("received", "LONG"),
            Column("ratio", "DOUBLE"),
            Column("alarm_minutes", "LONG"),
            Column("gaps", "LONG"),
            Column("gap_minutes", "LONG"),
            Column("longest_gap_minutes", "LONG"),
            #: JSON list of [start, end) ISO pairs of the gaps (at most 100).
            Column("gap_list", "VARCHAR"),
            Column("late", "LONG"),
            Column("computed", "TIMESTAMP"),
        ),
        timestamp="day",
        partition_by="YEAR",
        dedup_keys=("day", "site", "node"),
    )


class ColdTables(msgspec.Struct, frozen=True):
    """The cold job's tables, with the same optional prefix as :class:`core.tables.TableSet`."""

    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and not _NAME_RE.fullmatch(self.prefix):
            raise ValueError(f"table prefix {self.prefix!r} must match {_NAME_RE.pattern}")

    @property
    def daily(self) -> Table:
        return _daily(f"{self.prefix}telemetry_daily")

    @property
    def completeness(self) -> Table:
        return _completeness(f"{self.prefix}completeness_daily")

    def all(self) -> tuple[Table, ...]:
        return (self.daily, self.completeness)

    def create_statements(self) -> list[str]:
        return [t.create_sql() for t in self.all()]
