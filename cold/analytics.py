"""Ad-hoc SQL over the Parquet archive with DuckDB (embedded), under QuestDB's table names.

``connect`` returns a DuckDB connection with views ``telemetry_raw`` and ``telemetry_events``
over every archived partition (the same columns as in QuestDB), so a query written for QuestDB
data older than its TTL runs here with the same names. A local archive is read with DuckDB's
own ``read_parquet`` (parallel, with row-group pruning); an S3 archive through a pyarrow
dataset (no DuckDB extension to download). ``load_registry`` copies the registry's sites and
appliances (PostgreSQL) in as tables ``sites`` and ``appliances`` for joins.
"""

from __future__ import annotations

from typing import Any

import duckdb
import psycopg
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from cold.config import ArchiveSettings
from cold.export import open_archive
from cold.questdb import ColdError

TABLES = ("telemetry_raw", "telemetry_events")


def connect(settings: ArchiveSettings) -> duckdb.DuckDBPyConnection:
    fs, root = open_archive(settings)
    con = duckdb.connect()
    for table in TABLES:
        selector = pafs.FileSelector(f"{root}/{table}", recursive=True, allow_not_found=True)
        files = [i.path for i in fs.get_file_info(selector) if i.path.endswith(".parquet")]
        if not files:
            continue
        if isinstance(fs, pafs.LocalFileSystem):
            pattern = f"{root}/{table}/*/*/*.parquet".replace("'", "''")
            source = f"read_parquet('{pattern}', union_by_name = true)"
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM {source}")
        else:
            dataset = pads.dataset(sorted(files), filesystem=fs, format="parquet")
            con.register(f"{table}_arrow", dataset)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM {table}_arrow")
    return con


def load_registry(con: duckdb.DuckDBPyConnection, registry_dsn: str) -> None:
    """Tables ``sites(id, tenant_id, name, timezone)`` and ``appliances(id, site_id, state)``."""
    try:
        with psycopg.connect(registry_dsn) as pg:
            sites = pg.execute("SELECT id, tenant_id, name, timezone FROM sites").fetchall()
            appliances = pg.execute("SELECT id, site_id, state FROM appliances").fetchall()
    except psycopg.Error as exc:
        raise ColdError(f"cannot read the registry: {exc}") from exc
    con.execute(
        "CREATE TABLE sites (id VARCHAR, tenant_id VARCHAR, name VARCHAR, timezone VARCHAR)"
    )
    con.execute("CREATE TABLE appliances (id VARCHAR, site_id VARCHAR, state VARCHAR)")
    if sites:
        con.executemany("INSERT INTO sites VALUES (?, ?, ?, ?)", sites)
    if appliances:
        con.executemany("INSERT INTO appliances VALUES (?, ?, ?)", appliances)


def query(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    try:
        cur = con.execute(sql)
    except duckdb.Error as exc:
        raise ColdError(f"DuckDB: {exc}") from exc
    names = [d[0] for d in cur.description or []]
    return names, cur.fetchall()
