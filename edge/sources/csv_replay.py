"""Replay of a drilling CSV through an edge node.

The file has a header of sensor columns and one row per time step (as the drilling-data
pipelines export them, e.g. ``time,Depth,WOB,RPM,...``). Each sensor of the device names
its ``column`` (default: its tag). Rows keep their own time when the file has a time column
(ISO 8601, or epoch seconds or milliseconds) and are paced by it: at ``speed`` 1.0 in real
time, at 10.0 ten times faster, at 0 as fast as the agent commits them (chunks of
``CHUNK_ROWS`` rows with a short pause between). Without a time column rows are
``row_interval_s`` apart from the moment the replay starts.

Readings are marked historical (``is_historical``) unless the device says otherwise: they
describe the past and must not look live to a SCADA host. Empty or non-numeric cells are
skipped and counted. The file is read on a worker thread, a chunk at a time.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from edge.config import CsvDevice
from edge.sources.base import Reading, ReadingSink

log = logging.getLogger(__name__)

CHUNK_ROWS = 500
_FAST_PAUSE_S = 0.05


class CsvReplayError(Exception):
    """The CSV cannot be replayed (missing file, missing column, unreadable time)."""


def parse_time(text: str) -> int:
    """Epoch milliseconds of a time cell: epoch seconds, epoch milliseconds or ISO 8601."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text)
        except ValueError as exc:
            raise CsvReplayError(f"time {text!r} is neither epoch nor ISO 8601") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    return int(number) if number > 1e11 else int(number * 1000)


class CsvRows:
    """The rows of a CSV as (timestamp ms or None, {tag: value}); counts skipped cells."""

    def __init__(self, device: CsvDevice) -> None:
        self._device = device
        self.skipped_cells = 0

    def __iter__(self) -> Iterator[tuple[int | None, dict[str, float]]]:
        dev = self._device
        try:
            handle = Path(dev.path).open(newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise CsvReplayError(f"cannot read {dev.path}: {exc.strerror}") from exc
        with handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            columns = {s.tag: s.column or s.tag for s in dev.sensors}
            missing = [c for c in columns.values() if c not in header]
            if missing:
                raise CsvReplayError(f"{dev.path}: no column {', '.join(missing)}")
            time_column = dev.time_column or None
            if time_column is not None and time_column not in header:
                raise CsvReplayError(
                    f"{dev.path}: no time column {time_column!r} (header: {', '.join(header)});"
                    ' set time_column to the right one, or time_column = "" to pace the rows'
                    " from now"
                )
            for row in reader:
                try:
                    ts = parse_time(row[time_column]) if time_column else None
                except CsvReplayError as exc:
                    raise CsvReplayError(f"{dev.path}, line {reader.line_num}: {exc}") from None
                values: dict[str, float] = {}
                for tag, column in columns.items():
                    try:
                        value = float(row[column])
                    except (TypeError, ValueError):
                        self.skipped_cells += 1
                        continue
                    if math.isfinite(value):
                        values[tag] = value
                    else:
                        self.skipped_cells += 1
                yield ts, values


class CsvReplaySource:
    """Replays one CSV file once; see the module docstring."""

    def __init__(self, device: CsvDevice) -> None:
        self._device = device
        self.rows_replayed = 0
        self.skipped_cells = 0

    def __repr__(self) -> str:
        return f"CsvReplaySource({str(self._device.path)!r})"

    async def run(self, sink: ReadingSink) -> None:
        dev = self._device
        rows = CsvRows(dev)
        iterator = iter(rows)
        start_wall = time.monotonic()
        start_ms = time.time_ns() // 1_000_000
        first_ts: int | None = None
        await sink.online(True)
        index = 0
        try:
            while True:
                chunk = await asyncio.to_thread(_take, iterator, CHUNK_ROWS)
                if not chunk:
                    break
                for row_ts, values in chunk:
                    ts = row_ts
                    if ts is None:
                        ts = start_ms + round(index * dev.row_interval_s * 1000)
                    if first_ts is None:
                        first_ts = ts
                    index += 1
                    if dev.speed > 0:
                        due = start_wall + (ts - first_ts) / 1000 / dev.speed
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    sink.deliver([Reading(tag, v, ts) for tag, v in values.items()])
                if dev.speed == 0:
                    await asyncio.sleep(_FAST_PAUSE_S)
        except CsvReplayError as exc:
            log.warning("CSV replay of %s stopped: %s", dev.path, exc)
        self.rows_replayed = index
        self.skipped_cells = rows.skipped_cells
        log.info(
            "CSV replay of %s done: %d rows, %d empty or non-numeric cells skipped",
            dev.path,
            index,
            rows.skipped_cells,
        )


def _take(
    iterator: Iterator[tuple[int | None, dict[str, float]]], n: int
) -> list[tuple[int | None, dict[str, float]]]:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) >= n:
            break
    return out
