"""Fixtures of the API tests: a migrated registry database per test; one known world
(registry + QuestDB data, :mod:`world`) per session, with the app built on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from api import migrate
from harness import Postgres, QuestDB
from harness.asgi import serve_in_thread

from . import world as w


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


@pytest.fixture(scope="session")
def world(_postgres_server: Postgres, _questdb_server: QuestDB) -> Iterator[w.World]:
    yield from w.build(_postgres_server, _questdb_server)


@pytest.fixture(scope="module")
def served(world: w.World, _questdb_server: QuestDB) -> Iterator[str]:
    """The app under uvicorn on a free port, in a thread (for out-of-process clients)."""
    with serve_in_thread(w.make_app(world, _questdb_server)) as url:
        yield url
