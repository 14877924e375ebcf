"""The day's raw data to Parquet, one file per (table, site, day), verified before it counts.

Layout under the archive URI (a local directory, or ``s3://bucket/prefix``)::

    <table>/site=<site>/day=<YYYY-MM-DD>/part-0.parquet
    <table>/site=<site>/day=<YYYY-MM-DD>/_manifest.json

Per site and day, hour by hour: QuestDB exports the rows itself (``GET /exp?fmt=parquet``);
pyarrow sorts each hour by series and time (long runs of one series compress well) and
appends it as a row group of the day's file (ZSTD, dictionary-encoded symbols). The file is
then read back *from the archive* and checked series by series against QuestDB: count,
first and last timestamp, sum of timestamps, value sum (raw, Kahan sum in QuestDB, relative
1e-9), hot and historical counts. Only then is ``_manifest.json`` written, with the row count,
the file's SHA-256 and the per-series statistics: a partition is *archived* when its manifest
exists. Re-running rewrites the same bytes (the output is deterministic) and a manifest whose
row count still equals QuestDB's is skipped, which makes the job resumable.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cold.config import ArchiveSettings
from cold.questdb import ColdError, QuestDB, day_bounds, day_start_ns
from core.tables import Table, TableSet

log = logging.getLogger(__name__)

SERIES = ("node", "device", "metric")
MANIFEST = "_manifest.json"
PART = "part-0.parquet"
REL_TOL = 1e-9


class SeriesStats(msgspec.Struct, frozen=True, array_like=True):
    node: str
    device: str
    metric: str
    count: int
    min_ts: int
    max_ts: int
    #: Sum over the rows of (ts − day start) in whole microseconds: an exact timestamp check.
    ts_offset_us: int
    hot: int
    historical: int
    #: Sum of the values (telemetry_raw) or of the value lengths (telemetry_events).
    value_sum: float


class Manifest(msgspec.Struct, frozen=True):
    table: str
    site: str
    day: str
    rows: int
    sha256: str
    bytes: int
    exported_at: str
    series: list[SeriesStats]


class ExportResult(msgspec.Struct, frozen=True):
    table: str
    site: str
    day: str
    rows: int
    bytes: int
    skipped: bool


def open_archive(settings: ArchiveSettings) -> tuple[pafs.FileSystem, str]:
    """The archive's filesystem and root path (local directory or S3-compatible bucket)."""
    uri = settings.parquet_uri
    if uri.startswith("s3://"):
        fs = pafs.S3FileSystem(
            endpoint_override=settings.s3_endpoint, region=settings.s3_region or "us-east-1"
        )
        return fs, uri.removeprefix("s3://").rstrip("/")
    root = Path(uri).absolute()
    root.mkdir(parents=True, exist_ok=True)
    return pafs.LocalFileSystem(), str(root)


def partition_dir(root: str, table: str, site: str, day: date) -> str:
    return f"{root}/{table}/site={site}/day={day.isoformat()}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def questdb_stats(
    db: QuestDB, table: Table, is_raw: bool, site: str, day: date
) -> dict[tuple[str, str, str], SeriesStats]:
    start, end = day_bounds(day)
    value = "ksum(value)" if is_raw else "sum(length(value))"
    hot = "sum(CASE WHEN hot THEN 1 ELSE 0 END)" if is_raw else "0"
    rows = db.query(
        f"SELECT node, device, metric, count(), min(ts), max(ts), "
        f"sum((ts - '{start}'::timestamp_ns) / 1000), {hot}, "
        f"sum(CASE WHEN historical THEN 1 ELSE 0 END), {value} "
        f"FROM {table.name} WHERE site = {_quote(site)} AND ts >= '{start}' AND ts < '{end}' "
        "GROUP BY node, device, metric"
    )
    out: dict[tuple[str, str, str], SeriesStats] = {}
    for node, device, metric, n, lo, hi, off, h, hist, v in rows:
        key = (node or "", device or "", metric or "")
        out[key] = SeriesStats(
            *key, int(n), _ns(lo), _ns(hi), int(off), int(h), int(hist), float(v or 0.0)
        )
    return out


def _ns(ts: Any) -> int:
    """A PGWire timestamp (psycopg datetime, µs precision) as ns; compared at µs."""
    if isinstance(ts, datetime):
        t: datetime = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
        return (int(t.timestamp()) * 1_000_000 + t.microsecond) * 1000
    return int(ts)


def parquet_stats(
    table: pa.Table, is_raw: bool, day: date
) -> dict[tuple[str, str, str], SeriesStats]:
    if table.num_rows == 0:
        return {}
    ts = pc.cast(table["ts"], pa.int64())
    off = pc.divide(pc.subtract(ts, day_start_ns(day)), 1000)
    value = table["value"] if is_raw else pc.utf8_length(table["value"])
    hot = pc.cast(table["hot"], pa.int64()) if is_raw else pa.repeat(0, table.num_rows)
    work = pa.table(
        {
            "node": pc.cast(table["node"], pa.string()),
            "device": pc.cast(table["device"], pa.string()),
            "metric": pc.cast(table["metric"], pa.string()),
            "ts": ts,
            "off": off,
            "hot": hot,
            "historical": pc.cast(table["historical"], pa.int64()),
            "value": pc.cast(value, pa.float64()),
        }
    )
    agg = work.group_by(list(SERIES)).aggregate(
        [
            ("ts", "count"),
            ("ts", "min"),
            ("ts", "max"),
            ("off", "sum"),
            ("hot", "sum"),
            ("historical", "sum"),
            ("value", "sum"),
        ]
    )
    out: dict[tuple[str, str, str], SeriesStats] = {}
    for r in agg.to_pylist():
        key = (r["node"] or "", r["device"] or "", r["metric"] or "")
        out[key] = SeriesStats(
            *key,
            int(r["ts_count"]),
            int(r["ts_min"]) // 1000 * 1000,  # PGWire gives µs: compare at µs
            int(r["ts_max"]) // 1000 * 1000,
            int(r["off_sum"]),
            int(r["hot_sum"]),
            int(r["historical_sum"]),
            float(r["value_sum"] if r["value_sum"] is not None else 0.0),
        )
    return out


def compare_stats(
    expected: dict[tuple[str, str, str], SeriesStats],
    actual: dict[tuple[str, str, str], SeriesStats],
    where: str,
) -> None:
    """Raise :class:`ColdError` naming the first series that differs."""
    for key in sorted(set(expected) | set(actual)):
        e, a = expected.get(key), actual.get(key)
        if e is None or a is None:
            side = "QuestDB" if e is None else "the Parquet file"
            raise ColdError(f"{where}: series {'/'.join(key)} missing from {side}")
        exact = ("count", "min_ts", "max_ts", "ts_offset_us", "hot", "historical")
        for field in exact:
            if getattr(e, field) != getattr(a, field):
                raise ColdError(
                    f"{where}: series {'/'.join(key)}: {field} QuestDB {getattr(e, field)} "
                    f"!= Parquet {getattr(a, field)}"
                )
        ev, av = e.value_sum, a.value_sum
        same_nan = math.isnan(ev) and math.isnan(av)
        if not same_nan and not math.isclose(ev, av, rel_tol=REL_TOL, abs_tol=1e-9):
            raise ColdError(f"{where}: series {'/'.join(key)}: value sum {ev} != {av}")


def _sort_hour(t: pa.Table) -> pa.Table:
    t = t.sort_by(
        [
            ("node", "ascending"),
            ("device", "ascending"),
            ("metric", "ascending"),
            ("ts", "ascending"),
        ]
    )
    return t.cast(_target_schema(t.schema))


def _target_schema(schema: pa.Schema) -> pa.Schema:
    fields = []
    for f in schema:
        if f.name in ("site", "node", "device", "metric", "datatype"):
            fields.append(pa.field(f.name, pa.dictionary(pa.int32(), pa.string())))
        else:
            fields.append(pa.field(f.name, f.type))  # nullable: every hour's file the same
    return pa.schema(fields)


def export_partition(  # noqa: PLR0917
    db: QuestDB,
    fs: pafs.FileSystem,
    root: str,
    settings: ArchiveSettings,
    table: Table,
    is_raw: bool,
    site: str,
    day: date,
    questdb_rows: int,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    where = f"{table.name} site={site} day={day.isoformat()}"
    pdir = partition_dir(root, _base_name(table.name), site, day)
    manifest_path = f"{pdir}/{MANIFEST}"
    existing = _read_manifest(fs, manifest_path)
    if existing is not None and existing.rows == questdb_rows:
        return ExportResult(table.name, site, day.isoformat(), existing.rows, existing.bytes, True)
    fs.create_dir(pdir, recursive=True)
    start_ns = day_start_ns(day)
    cols = ", ".join(table.column_names)
    with tempfile.TemporaryDirectory(prefix="derrick-cold-") as tmp:
        out_path = Path(tmp) / PART
        writer: pq.ParquetWriter | None = None
        try:
            for hour in range(24):
                lo = _iso_ns(start_ns + hour * 3_600_000_000_000)
                hi = _iso_ns(start_ns + (hour + 1) * 3_600_000_000_000)
                chunk = Path(tmp) / f"h{hour:02d}.parquet"
                db.export_parquet(
                    f"SELECT {cols} FROM {table.name} WHERE site = {_quote(site)} "
                    f"AND ts >= '{lo}' AND ts < '{hi}'",
                    chunk,
                )
                part = pq.read_table(chunk)
                chunk.unlink()
                if part.num_rows == 0:
                    continue
                part = _sort_hour(part)
                if writer is None:
                    writer = pq.ParquetWriter(
                        out_path,
                        part.schema,
                        compression=settings.compression,
                        compression_level=settings.compression_level,
                        write_statistics=True,
                    )
                writer.write_table(part, row_group_size=1 << 20)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ColdError(f"{where}: QuestDB counts {questdb_rows} rows but exported none")
        with open(out_path, "rb") as src, fs.open_output_stream(f"{pdir}/{PART}") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    # Verify what the archive holds, read back from it, against QuestDB.
    with fs.open_input_stream(f"{pdir}/{PART}") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    archived = pq.read_table(io.BytesIO(data))
    if archived.num_rows != questdb_rows:
        raise ColdError(f"{where}: Parquet holds {archived.num_rows} rows, QuestDB {questdb_rows}")
    ours = parquet_stats(archived, is_raw, day)
    theirs = questdb_stats(db, table, is_raw, site, day)
    compare_stats(theirs, ours, where)
    manifest = Manifest(
        table=_base_name(table.name),
        site=site,
        day=day.isoformat(),
        rows=archived.num_rows,
        sha256=digest,
        bytes=len(data),
        exported_at=datetime.now(UTC).isoformat(),
        series=[ours[k] for k in sorted(ours)],
    )
    with fs.open_output_stream(manifest_path) as f:
        f.write(msgspec.json.encode(manifest))
    if progress is not None:
        progress(f"{where}: {archived.num_rows} rows, {len(data)} bytes, verified")
    return ExportResult(table.name, site, day.isoformat(), archived.num_rows, len(data), False)


def _iso_ns(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _base_name(name: str) -> str:
    """Archive directories use the unprefixed table name (the name DuckDB views get)."""
    for base in ("telemetry_raw", "telemetry_events"):
        if name.endswith(base):
            return base
    return name


def _read_manifest(fs: pafs.FileSystem, path: str) -> Manifest | None:
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return msgspec.json.decode(f.read(), type=Manifest)


def read_manifest(
    fs: pafs.FileSystem, root: str, table: str, site: str, day: date
) -> Manifest | None:
    return _read_manifest(fs, f"{partition_dir(root, table, site, day)}/{MANIFEST}")


def site_counts(db: QuestDB, table: Table, day: date) -> dict[str, int]:
    start, end = day_bounds(day)
    rows = db.query(
        f"SELECT site, count() FROM {table.name} "
        f"WHERE ts >= '{start}' AND ts < '{end}' GROUP BY site"
    )
    return {str(site): int(n) for site, n in rows if site is not None}


def export_day(
    db: QuestDB,
    settings: ArchiveSettings,
    tables: TableSet,
    day: date,
    progress: Callable[[str], None] | None = None,
) -> list[ExportResult]:
    fs, root = open_archive(settings)
    results: list[ExportResult] = []
    for table, is_raw in ((tables.raw, True), (tables.events, False)):
        db.wait_wal_applied(table.name)
        for site, n in sorted(site_counts(db, table, day).items()):
            results.append(
                export_partition(db, fs, root, settings, table, is_raw, site, day, n, progress)
            )
    return results


def json_summary(results: list[ExportResult]) -> str:
    return json.dumps([msgspec.to_builtins(r) for r in results])
