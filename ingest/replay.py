"""Rebuild QuestDB rows for a time range from the audit archive (disaster recovery).

Each chain (one per worker that wrote it) is read in order, every message goes through the
same :class:`~ingest.pipeline.MessageProcessor` the live host uses, with the clock set to the
message's receive time (so timestamp checks decide as they did then), and the numeric and
event rows whose source time falls in ``[start, end)`` are written with ILP like live rows,
``received`` being the archived receive time. Births are needed to resolve aliases, so every
segment is read; data messages of segments that ended before ``start − 1 day`` (the furthest
ahead a source timestamp may be) are skipped without decoding. DEDUP makes a replay over
rows that are still there harmless.

``python -m cold rebuild`` runs this as ``python -m ingest replay`` (the cold job never
imports ingest: message interpretation has one implementation, here).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from questdb import TimestampMicros, TimestampNanos

from core import audit
from core.tables import TableSet
from ingest.pipeline import MAX_FUTURE_MS, EventRow, MessageProcessor, NumericRow
from ingest.writer import QuestDBWriter, RowSet

log = logging.getLogger(__name__)

_BIRTHS_AND_DEATHS = ("/NBIRTH/", "/DBIRTH/", "/NDEATH/", "/DDEATH/")


class ReplayResult(msgspec.Struct):
    chains: int = 0
    messages: int = 0
    numeric_rows: int = 0
    event_rows: int = 0
    dead_letters: int = 0


class _Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


def _add_numeric(rows: RowSet, table: str, numeric: Iterable[NumericRow], received_us: int) -> int:
    n = 0
    received = TimestampMicros(received_us)
    for r in numeric:
        rows.raw.row(
            table,
            symbols={"site": r.site, "node": r.node, "device": r.device, "metric": r.metric},
            columns={
                "value": r.value,
                "hot": r.hot,
                "historical": r.historical,
                "received": received,
            },
            at=TimestampNanos(r.ts_ms * 1_000_000 + r.ns),
        )
        n += 1
    rows.rows += n
    return n


def _add_events(rows: RowSet, table: str, events: Iterable[EventRow], received_us: int) -> int:
    n = 0
    received = TimestampMicros(received_us)
    for r in events:
        rows.events.row(
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
        n += 1
    rows.rows += n
    return n


def replay(
    chain_dirs: list[Path],
    writer: QuestDBWriter,
    tables: TableSet,
    *,
    primary_host_id: str,
    start_ns: int,
    end_ns: int,
    flush_rows: int = 50_000,
) -> ReplayResult:
    """Write the rows of ``[start_ns, end_ns)`` found in the chains; the writer is open."""
    result = ReplayResult()
    raw_name, events_name = tables.raw.name, tables.events.name
    skip_before_ns = start_ns - MAX_FUTURE_MS * 1_000_000
    rows = writer.new_row_set()

    def in_range(ts_ms: int, ns: int) -> bool:
        t = ts_ms * 1_000_000 + ns
        return start_ns <= t < end_ns

    for chain in chain_dirs:
        result.chains += 1
        clock = _Clock()
        processor = MessageProcessor(
            primary_host_id=primary_host_id, clock=clock, max_payload_bytes=1 << 31
        )
        for info, records in audit.iter_records(chain):
            early = info.last_received_ns is not None and info.last_received_ns < skip_before_ns
            for rec in records:
                if early and not any(k in rec.topic for k in _BIRTHS_AND_DEATHS):
                    continue
                result.messages += 1
                clock.ms = rec.received_ns // 1_000_000
                outcome = processor.process(rec.topic, rec.payload)
                result.dead_letters += len(outcome.dead_letters)
                received_us = rec.received_ns // 1000
                numeric = [r for r in outcome.numeric if in_range(r.ts_ms, r.ns)]
                events = [r for r in outcome.events if in_range(r.ts_ms, r.ns)]
                if numeric:
                    result.numeric_rows += _add_numeric(rows, raw_name, numeric, received_us)
                if events:
                    result.event_rows += _add_events(rows, events_name, events, received_us)
                if rows.rows >= flush_rows:
                    writer.flush(rows)
                    rows = writer.new_row_set()
        log.info("replayed chain %s: %d messages so far", chain, result.messages)
    if rows.rows:
        writer.flush(rows)
    return result


def replay_archive(
    archive_root: Path,
    ilp_conf: str,
    tables: TableSet,
    *,
    primary_host_id: str,
    start_ns: int,
    end_ns: int,
) -> ReplayResult:
    """Every chain under ``archive_root`` (what ``[audit] directory`` names)."""
    chain_dirs = audit.chains(archive_root)
    writer = QuestDBWriter(ilp_conf, tables)
    writer.open()
    try:
        return replay(
            chain_dirs,
            writer,
            tables,
            primary_host_id=primary_host_id,
            start_ns=start_ns,
            end_ns=end_ns,
        )
    finally:
        writer.close()


def summary(result: ReplayResult) -> dict[str, Any]:
    return msgspec.to_builtins(result)  # type: ignore[no-any-return]
