"""Hand-off of a legacy installation's unsent readings to the agent's durable queue.

The fleet migration exports every unsent reading of the old software into one hand-off file
(``docs/legacy-handoff.md``: JSON Lines, a header line, one line per reading, an end line)
and runs ``derrick-edge import-legacy --config agent.toml FILE``. The readings are queued as
historical batches with their original timestamps, to the nanosecond.

The import is all-or-nothing and idempotent:

- pass 1 reads the file once, validates every line against the agent's configuration and
  hashes its content (SHA-256 of the decompressed bytes); any problem rejects the whole
  file, and nothing is queued;
- pass 2 reads it again inside one queue transaction (``BEGIN IMMEDIATE``, one fsync on
  commit): readings go into historical batches of ``BATCH_SAMPLES`` per device, and the
  file's hash into the ``handoff`` table. A file whose hash is already there is not queued
  again. A commit that would exceed the queue's byte cap rolls everything back
  (:class:`~edge.queue.QueueFullError`): legacy readings never evict anything.

Memory is bounded: one line (at most ``MAX_LINE_BYTES``) and one open batch per device.

Exceptions::

    HandoffError            the file is not a valid hand-off for this agent (``problems``)
    edge.queue.QueueError   the queue cannot take it (cannot open, locked, disk, cap)
      QueueFullError        it would exceed the queue's byte cap
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import math
import sqlite3
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO, Final, Literal, cast

import msgspec
from msgspec import Meta

from core import tags
from core.sparkplug import DataType
from edge.config import AgentConfig, SensorConfig
from edge.queue import PendingSample, QueueError, StoreAndForwardQueue

log = logging.getLogger(__name__)

FORMAT: Final = "derrick-legacy-handoff"
FORMAT_VERSION: Final = 1
#: Samples per historical batch (one device each).
BATCH_SAMPLES: Final = 5000
#: Longest line accepted, newline included.
MAX_LINE_BYTES: Final = 4096
#: Timestamps before 2000-01-01 are rejected (as the ingest does).
MIN_TS_NS: Final = 946_684_800 * 10**9
#: Timestamps more than a day ahead of the clock are rejected (as the ingest does).
MAX_FUTURE_NS: Final = 86_400 * 10**9
#: Problems listed in an error (all are counted).
MAX_PROBLEMS: Final = 20

_PRECISION_NS: Final = {"s": 10**9, "ms": 10**6, "ns": 1}
_NO_SENSORS: Final[dict[str, SensorConfig]] = {}
_NO_TS_YET: Final = 2**63

_HANDOFF_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS handoff (
    sha256 TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    source_version TEXT NOT NULL,
    readings INTEGER NOT NULL,
    imported_ms INTEGER NOT NULL
)
"""


class HandoffError(ValueError):
    """The file is not a valid hand-off for this agent; ``problems`` name line and field."""

    def __init__(self, path: Path, problems: list[str], invalid_lines: int) -> None:
        self.path = path
        self.problems = problems
        self.invalid_lines = invalid_lines
        more = invalid_lines - len(problems)
        text = f"{path}: rejected, nothing queued: " + "; ".join(problems)
        if more > 0:
            text += f"; and {more} more"
        super().__init__(text)


class _Envelope(msgspec.Struct):
    """The part of a header every format version keeps (unknown fields allowed)."""

    format: str
    version: int


class HandoffHeader(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Line 1: what the file is, whose readings, from which legacy version, at what precision."""

    format: str
    version: int
    appliance: str
    source_version: Annotated[str, Meta(pattern=r"^v[0-9]+\.[0-9]+(\.[0-9]+)?$")]
    precision: Literal["s", "ms", "ns"]


class LegacyReading(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, gc=False
):
    """One unsent reading: device and tag of the new config, epoch ns, engineering value."""

    device: str
    tag: str
    ts_ns: int
    value: float
    unit: str | None = None


class HandoffEnd(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The last line: proves the file is complete."""

    end: Literal["derrick-legacy-handoff"]
    readings: Annotated[int, Meta(ge=0)]


_envelope = msgspec.json.Decoder(_Envelope)
_header = msgspec.json.Decoder(HandoffHeader)
_reading = msgspec.json.Decoder(LegacyReading)
_end = msgspec.json.Decoder(HandoffEnd)


class ImportResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an import did (``already_imported``: nothing, the file was queued before)."""

    sha256: str
    source_version: str
    precision: str
    readings: int
    batches: int
    by_device: dict[str, int]
    first_ts_ns: int | None
    last_ts_ns: int | None
    already_imported: bool = False
    imported_ms: int | None = None


@contextlib.contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    """The file's content, decompressed if it is gzip (detected by its magic bytes)."""
    with path.open("rb") as raw:
        if raw.peek(2)[:2] != b"\x1f\x8b":
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield cast(BinaryIO, unzipped)


class _Scan:
    """One pass over a hand-off file: yields valid readings, collects problems, hashes."""

    def __init__(self, path: Path, cfg: AgentConfig, *, now_ns: int) -> None:
        self.path = path
        self._appliance = cfg.node.appliance
        self._sensors: dict[str, dict[str, SensorConfig]] = {
            d.id: {s.tag: s for s in d.sensors} for d in cfg.devices
        }
        self._max_ts = now_ns + MAX_FUTURE_NS
        self._step = 1
        self.header: HandoffHeader | None = None
        self.problems: list[str] = []
        self.invalid_lines = 0
        self.readings = 0
        self.by_device: Counter[str] = Counter()
        self.first_ts_ns = _NO_TS_YET
        self.last_ts_ns = -1
        self._sha = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def _problem(self, lineno: int, text: str) -> None:
        self.invalid_lines += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"line {lineno}: {text}" if lineno else text)

    def __iter__(self) -> Iterator[LegacyReading]:
        try:
            with _open(self.path) as stream:
                yield from self._lines(stream)
        except OSError as exc:  # unreadable, bad gzip data
            self._problem(0, f"cannot read {self.path}: {exc}")
        except (EOFError, zlib.error) as exc:  # truncated or corrupt gzip stream
            self._problem(0, f"cannot read {self.path}: corrupt gzip data ({exc})")

    def _lines(self, stream: BinaryIO) -> Iterator[LegacyReading]:
        lineno = 0
        last: tuple[int, bytes] | None = None
        while True:
            line = stream.readline(MAX_LINE_BYTES + 1)
            if not line:
                break
            lineno += 1
            self._sha.update(line)
            if len(line) > MAX_LINE_BYTES:
                self._problem(lineno, f"longer than {MAX_LINE_BYTES} bytes; import stopped")
                return
            if lineno == 1:
                if not self._check_header(line):
                    return
                continue
            if last is not None:
                reading = self._check_reading(*last)
                if reading is not None:
                    yield reading
            last = (lineno, line)
        if lineno == 0:
            self._problem(1, "empty file: expected the header line")
        elif last is None:
            self._problem(lineno + 1, "missing end line (is the file truncated?)")
        else:
            self._check_end(*last)

    def _check_header(self, line: bytes) -> bool:
        try:
            envelope = _envelope.decode(line)
        except msgspec.DecodeError as exc:
            self._problem(1, f"not a {FORMAT} header: {_reason(exc)}")
            return False
        if envelope.format != FORMAT:
            self._problem(1, f"format {envelope.format!r} is not {FORMAT!r} - at `$.format`")
            return False
        if envelope.version != FORMAT_VERSION:
            self._problem(
                1,
                f"format version {envelope.version} is not supported (this agent reads "
                f"version {FORMAT_VERSION}) - at `$.version`",
            )
            return False
        try:
            header = _header.decode(line)
        except msgspec.DecodeError as exc:
            self._problem(1, _reason(exc))
            return False
        if header.appliance != self._appliance:
            self._problem(
                1,
                f"appliance {header.appliance!r} is not this agent's ({self._appliance!r}) "
                "- at `$.appliance`",
            )
            return False
        self.header = header
        self._step = _PRECISION_NS[header.precision]
        return True

    def _check_reading(self, lineno: int, line: bytes) -> LegacyReading | None:
        self.readings += 1
        try:
            r = _reading.decode(line)
        except msgspec.DecodeError as exc:
            self._problem(lineno, _reason(exc))
            return None
        sensor = self._sensors.get(r.device, _NO_SENSORS).get(r.tag)
        ts = r.ts_ns
        if (
            sensor is None
            or (r.unit is not None and r.unit != sensor.unit)
            or not MIN_TS_NS <= ts <= self._max_ts
            or ts % self._step
            or not math.isfinite(r.value)
        ):
            self._problem(lineno, self._diagnose(r))
            return None
        self.by_device[r.device] += 1
        self.first_ts_ns = min(self.first_ts_ns, ts)
        self.last_ts_ns = max(self.last_ts_ns, ts)
        return r

    def _diagnose(self, r: LegacyReading) -> str:
        """Why a decoded reading is invalid (the fast path only knows that it is)."""
        sensors = self._sensors.get(r.device)
        if sensors is None:
            configured = ", ".join(self._sensors)
            return f"device {r.device!r} is not configured ({configured}) - at `$.device`"
        sensor = sensors.get(r.tag)
        if sensor is None:
            return f"tag {r.tag!r} is not a sensor of device {r.device!r} - at `$.tag`"
        if r.unit is not None and r.unit != sensor.unit:
            return f"unit {r.unit!r} of {r.tag} is not {sensor.unit!r} - at `$.unit`"
        if not MIN_TS_NS <= r.ts_ns <= self._max_ts:
            return (
                f"timestamp {r.ts_ns} ns is before 2000-01-01 or more than a day ahead "
                "- at `$.ts_ns`"
            )
        if r.ts_ns % self._step:
            precision = self.header.precision if self.header else "?"
            return (
                f"timestamp {r.ts_ns} ns is finer than the header's precision {precision!r} "
                f"(a multiple of {self._step} ns) - at `$.ts_ns`"
            )
        return f"value {r.value!r} is not a finite number - at `$.value`"

    def _check_end(self, lineno: int, line: bytes) -> None:
        try:
            end = _end.decode(line)
        except msgspec.DecodeError as exc:
            self._problem(
                lineno,
                f"not the end line {{'end': {FORMAT!r}, 'readings': N}} "
                f"(is the file truncated?): {_reason(exc)}",
            )
            return
        if end.readings != self.readings:
            self._problem(
                lineno,
                f"end line says {end.readings} readings, the file has {self.readings} "
                "- at `$.readings`",
            )


def _reason(exc: msgspec.DecodeError) -> str:
    if isinstance(exc, msgspec.ValidationError):
        return str(exc)
    return f"malformed JSON: {exc}"


def validate_handoff(path: Path, cfg: AgentConfig, *, now_ns: int) -> _Scan:
    """Read the whole file once; the scan's ``problems`` are empty if it is valid."""
    scan = _Scan(path, cfg, now_ns=now_ns)
    for _ in scan:
        pass
    return scan


def _previous(db: sqlite3.Connection, sha256: str) -> tuple[int, int] | None:
    row = db.execute(
        "SELECT readings, imported_ms FROM handoff WHERE sha256 = ?", (sha256,)
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def import_handoff(
    path: Path,
    cfg: AgentConfig,
    queue: StoreAndForwardQueue,
    *,
    now_ns: int,
    batch_samples: int = BATCH_SAMPLES,
) -> ImportResult:
    """Queue every reading of a hand-off file as historical batches, atomically, once.

    ``queue`` must be open. Raises :class:`HandoffError` (nothing queued) or
    :class:`~edge.queue.QueueError` (nothing queued).
    """
    scan = validate_handoff(path, cfg, now_ns=now_ns)
    now_ms = now_ns // 1_000_000
    try:
        queue.db.execute(_HANDOFF_SCHEMA)
        previous = _previous(queue.db, scan.sha256)
    except sqlite3.Error as exc:
        raise QueueError(f"cannot read the hand-off record: {exc}") from exc
    if previous is not None:
        return _already(scan, previous)
    if scan.problems or scan.header is None:
        raise HandoffError(path, scan.problems, scan.invalid_lines)
    header = scan.header
    batches = 0
    try:
        with queue.transaction():
            previous = _previous(queue.db, scan.sha256)  # another import may have won the race
            if previous is not None:
                return _already(scan, previous)
            aliases: dict[tuple[str, str], tuple[int, bool]] = {}
            for device in cfg.devices:
                for sensor in device.sensors:
                    alias = queue.register_metric(device.id, sensor.tag, int(DataType.Double))
                    hot = sensor.hot if sensor.hot is not None else tags.TAGS[sensor.tag].hot
                    aliases[(device.id, sensor.tag)] = (alias, hot)
            open_batches: dict[str, list[PendingSample]] = {}
            again = _Scan(path, cfg, now_ns=now_ns)
            for r in again:
                alias, hot = aliases[(r.device, r.tag)]
                ts_ms, ns = divmod(r.ts_ns, 1_000_000)
                pending = open_batches.setdefault(r.device, [])
                pending.append(PendingSample(alias, ts_ms, r.value, hot, ns))
                if len(pending) >= batch_samples:
                    batches += _commit(queue, r.device, pending, now_ms)
                    open_batches[r.device] = []
            for device_id, pending in open_batches.items():
                if pending:
                    batches += _commit(queue, device_id, pending, now_ms)
            if again.problems or again.sha256 != scan.sha256:
                raise HandoffError(
                    path, ["the file changed while it was being imported"], again.invalid_lines
                )
            queue.db.execute(
                "INSERT INTO handoff (sha256, file, source_version, readings, imported_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (scan.sha256, str(path.resolve()), header.source_version, scan.readings, now_ms),
            )
    except sqlite3.Error as exc:
        raise QueueError(f"cannot queue the hand-off: {exc}") from exc
    log.info(
        "imported legacy hand-off %s (%s, precision %s): %d readings in %d historical batches",
        path,
        header.source_version,
        header.precision,
        scan.readings,
        batches,
    )
    return ImportResult(
        sha256=scan.sha256,
        source_version=header.source_version,
        precision=header.precision,
        readings=scan.readings,
        batches=batches,
        by_device=dict(scan.by_device),
        first_ts_ns=scan.first_ts_ns if scan.last_ts_ns >= 0 else None,
        last_ts_ns=scan.last_ts_ns if scan.last_ts_ns >= 0 else None,
        imported_ms=now_ms,
    )


def _commit(
    queue: StoreAndForwardQueue, device: str, pending: list[PendingSample], now_ms: int
) -> int:
    return len(queue.commit({device: pending}, now_ms=now_ms, historical=True, evict=False))


def _already(scan: _Scan, previous: tuple[int, int]) -> ImportResult:
    readings, imported_ms = previous
    return ImportResult(
        sha256=scan.sha256,
        source_version=scan.header.source_version if scan.header else "",
        precision=scan.header.precision if scan.header else "",
        readings=readings,
        batches=0,
        by_device={},
        first_ts_ns=None,
        last_ts_ns=None,
        already_imported=True,
        imported_ms=imported_ms,
    )
