"""Plain SQL migrations, applied in order and recorded in ``schema_migrations``.

Files are ``api/migrations/NNNN_name.sql``. Each runs in its own transaction together with
its ``schema_migrations`` row, under an advisory lock so that two processes never migrate at
once. Applying is idempotent: applied versions are skipped; an applied file whose checksum
changed is an error (migrations are never edited once released).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Final

import msgspec
import psycopg

from api.errors import MigrationError

log = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
_FILE_RE: Final = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_LOCK_KEY: Final = 0x0DE77C1C  # advisory lock id for migrations

_BOOKKEEPING: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, ordered by version; gaps or duplicates are errors."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..n without gaps, got {versions}")
    return found


def apply(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    migrations = load(directory)
    applied_now: list[str] = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                conn.execute(_BOOKKEEPING)
                rows = conn.execute("SELECT version, sha256 FROM schema_migrations").fetchall()
                done = {int(v): str(h) for v, h in rows}
                for m in migrations:
                    if m.version in done:
                        if done[m.version] != m.sha256:
                            raise MigrationError(
                                f"migration {m.name} was changed after it was applied"
                            )
                        continue
                    with conn.transaction():
                        conn.execute(m.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, sha256) "
                            "VALUES (%s, %s, %s)",
                            (m.version, m.name, m.sha256),
                        )
                    log.info("applied migration %s", m.name)
                    applied_now.append(m.name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.Error as exc:
        raise MigrationError(f"migration failed: {exc}") from exc
    return applied_now
