"""QuestDB access for the cold job: SQL over PGWire (psycopg), Parquet export over HTTP.

Errors: :class:`ColdError` (the cold job's one exception family; ``cold.__main__`` turns it
into a message and exit code 1).
"""

from __future__ import annotations

import base64
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg


class ColdError(Exception):
    """Something the cold job could not do (names what and where)."""


def day_bounds(day: date) -> tuple[str, str]:
    """ISO bounds ``[start, end)`` of a UTC day, as QuestDB timestamp literals."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    return start.strftime("%Y-%m-%dT%H:%M:%S.000000Z"), end.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def day_start_ns(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000_000


class QuestDB:
    """One PGWire connection (autocommit) and the HTTP base URL."""

    def __init__(self, pg_dsn: str, http_url: str) -> None:
        self._dsn = pg_dsn
        parts = urllib.parse.urlsplit(http_url)
        self._auth: str | None = None
        if parts.username:
            user = urllib.parse.unquote(parts.username)
            token = f"{user}:{urllib.parse.unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(token.encode()).decode()
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        self._http = urllib.parse.urlunsplit(parts).rstrip("/")
        self._conn: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:  # the DSN and URL may hold credentials
        return "QuestDB(<from environment>)"

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._dsn, autocommit=True)
            except psycopg.Error as exc:
                raise ColdError(f"cannot connect to QuestDB over PGWire: {exc}") from exc
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._connection().cursor() as cur:
                cur.execute(sql.encode() if not params else sql, params or None)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise ColdError(f"QuestDB: {exc} (in: {sql[:300]})") from exc

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            with self._connection().cursor() as cur:
                cur.executemany(sql, rows)
        except psycopg.Error as exc:
            raise ColdError(f"QuestDB: {exc} (in: {sql[:300]})") from exc

    def execute(self, sql: str) -> None:
        self.query(sql)

    def table_exists(self, name: str) -> bool:
        return bool(self.query("SELECT table_name FROM tables() WHERE table_name = %s", (name,)))

    def wait_wal_applied(self, table: str, timeout_s: float = 120.0) -> None:
        """Until every committed WAL transaction of ``table`` is applied (visible)."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.query(
                "SELECT writerTxn, sequencerTxn, suspended FROM wal_tables() WHERE name = %s",
                (table,),
            )
            if not rows or rows[0][0] >= rows[0][1]:
                return
            if rows[0][2]:
                raise ColdError(f"QuestDB table {table} is suspended (WAL apply failed)")
            if time.monotonic() > deadline:
                raise ColdError(f"QuestDB table {table}: WAL not applied within {timeout_s} s")
            time.sleep(0.2)

    def export_parquet(self, sql: str, dest: Path, timeout_s: float = 3600.0) -> None:
        """Stream ``GET /exp?fmt=parquet`` of ``sql`` into ``dest``."""
        url = f"{self._http}/exp?" + urllib.parse.urlencode({"query": sql, "fmt": "parquet"})
        if not url.startswith(("http://", "https://")):
            raise ColdError("QuestDB HTTP URL must be http:// or https://")
        req = urllib.request.Request(url)  # noqa: S310 - scheme checked above
        if self._auth:
            req.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp, open(dest, "wb") as f:  # noqa: S310
                shutil.copyfileobj(resp, f, 1 << 20)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise ColdError(f"QuestDB export failed: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ColdError(f"QuestDB export failed: {exc}") from exc
