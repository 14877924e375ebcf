"""Writes rows to QuestDB through ILP over HTTP, with explicit buffers, flushed per table.

A :class:`RowSet` collects the rows of one flush: one ILP buffer per table plus the batch
numbers (per node) those rows carry. The host fills the current row set on the event loop,
then hands it to :meth:`QuestDBWriter.flush` on the writer's own thread. A buffer is cleared
only after QuestDB accepted it (``clear=False``, then ``clear()``): a failed flush keeps every
row, and the set is flushed again later. Batches are acknowledged only after every buffer of
their set is accepted. DEDUP makes the repeats harmless.

All ``Sender`` and ``Buffer`` calls that may block run on one thread; the sender and its
buffers are not thread-safe and never shared between threads at the same time.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from questdb import QuestDBError, Sender, TimestampMicros, TimestampNanos

from core.tables import TableSet
from ingest.pipeline import CatalogueRow, DeadLetter, EventRow, NumericRow

log = logging.getLogger(__name__)


class WriterError(Exception):
    """QuestDB did not accept a flush (down, slow, or rejected the rows)."""


class RowSet:
    """Rows for one flush, one ILP buffer per table, and the batches they carry."""

    def __init__(self, sender: Sender, tables: TableSet) -> None:
        self._t = tables
        self._raw_name = tables.raw.name  # TableSet builds its Table objects on each access
        self.raw: Any = sender.new_buffer()
        self.events: Any = sender.new_buffer()
        self.dead: Any = sender.new_buffer()
        self.catalogue: Any = sender.new_buffer()
        self.rows = 0
        #: Batches per (group, edge node, the node's batch numbering generation).
        self.batches: dict[tuple[str, str, int], list[int]] = defaultdict(list)

    def add_numeric(self, rows: list[NumericRow]) -> None:
        """The hot path: one ILP row per sample.

        ``Buffer.row`` serializes its arguments at once, so the two dicts are built once per
        call and updated in place, and the timestamp object is reused while it stays the same
        (a message's metrics usually share one): about a third less time per row than fresh
        dicts and objects.
        """
        table = self._raw_name
        row = self.raw.row
        symbols = {"site": "", "node": "", "device": "", "metric": ""}
        columns: dict[str, Any] = {
            "value": 0.0,
            "hot": False,
            "historical": False,
            "received": TimestampMicros(time.time_ns() // 1000),
        }
        last_ns = -1
        at = None
        for r in rows:
            symbols["site"] = r.site
            symbols["node"] = r.node
            symbols["device"] = r.device
            symbols["metric"] = r.metric
            columns["value"] = r.value
            columns["hot"] = r.hot
            columns["historical"] = r.historical
            ns = r.ts_ms * 1_000_000 + r.ns
            if ns != last_ns:
                at, last_ns = TimestampNanos(ns), ns
            row(table, symbols=symbols, columns=columns, at=at)
        self.rows += len(rows)

    def add_events(self, rows: list[EventRow]) -> None:
        table = self._t.events.name
        received = TimestampMicros(time.time_ns() // 1000)
        for r in rows:
            self.events.row(
                table,
                symbols={
                    "site": r.site,
                    "node": r.node,
                    "device": r.device,
                    "metric": r.metric,
                    "datatype": r.datatype,
                },
                columns={"value": r.value, "historical": r.historical, "received": received},
                at=TimestampNanos(r.ts_ms * 1_000_000 + r.ns),
            )
        self.rows += len(rows)

    def add_dead_letter(self, d: DeadLetter) -> None:
        self.dead.row(
            self._t.dead_letters.name,
            symbols={"reason": d.reason},
            columns={
                "topic": d.topic,
                "detail": d.detail,
                "payload_b64": d.payload_b64(),
                "payload_size": len(d.payload),
            },
            at=TimestampMicros(time.time_ns() // 1000),
        )
        self.rows += 1

    def add_catalogue(self, rows: list[CatalogueRow]) -> None:
        seen = TimestampMicros(time.time_ns() // 1000)
        table = self._t.catalogue.name
        for r in rows:
            symbols = {
                "site": r.site,
                "node": r.node,
                "device": r.device,
                "metric": r.metric,
                "datatype": r.datatype,
            }
            if r.unit is not None:
                symbols["unit"] = r.unit
            self.catalogue.row(table, symbols=symbols, columns={"hot": r.hot}, at=seen)
        self.rows += len(rows)

    def buffers(self) -> list[Any]:
        return [self.raw, self.events, self.catalogue, self.dead]


class QuestDBWriter:
    """One ILP/HTTP sender; call every method from the writer thread."""

    def __init__(self, ilp_conf: str, tables: TableSet) -> None:
        self._conf = ilp_conf
        self._tables = tables
        self._sender: Sender | None = None

    def __repr__(self) -> str:  # never show the conf string: it may hold a password
        return f"QuestDBWriter(tables={self._tables.prefix!r})"

    def open(self) -> None:
        conf = self._conf
        if "auto_flush=" not in conf:
            conf += "" if conf.endswith(";") else ";"
            conf += "auto_flush=off;"
        if "protocol_version=" not in conf:
            conf += "protocol_version=2;"
        try:
            sender = Sender.from_conf(conf)
            sender.establish()  # type: ignore[no-untyped-call]
        except QuestDBError as exc:
            raise WriterError(f"cannot open ILP sender: {exc}") from exc
        self._sender = sender

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def new_row_set(self) -> RowSet:
        if self._sender is None:
            raise WriterError("writer is not open")
        return RowSet(self._sender, self._tables)

    def flush(self, rows: RowSet) -> None:
        """Send every non-empty buffer; a buffer is cleared only once QuestDB accepted it."""
        if self._sender is None:
            raise WriterError("writer is not open")
        for buf in rows.buffers():
            if len(buf) == 0:
                continue
            try:
                self._sender.flush(buf, clear=False, transactional=True)
            except QuestDBError as exc:
                raise WriterError(f"QuestDB did not accept {rows.rows} rows: {exc}") from exc
            buf.clear()
