"""Fixtures of the API tests: a migrated registry database per test, test tenants."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from api import migrate
from harness import Postgres


@pytest.fixture
def registry_dsn(postgres: Postgres) -> Iterator[str]:
    """A fresh, migrated registry database of the session's PostgreSQL."""
    name = f"reg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = postgres.dsn_for(name)
    migrate.apply(dsn)
    yield dsn
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def reg_conn(registry_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(registry_dsn, autocommit=True) as conn:
        yield conn
