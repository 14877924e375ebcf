"""Workers sharing a table prefix create the tables at the same moment (systemd starts
``derrick-ingest@1..N`` together): every one of them must come up. Without the retry in
``create_tables`` QuestDB refused a racing ``CREATE MATERIALIZED VIEW IF NOT EXISTS`` within
these rounds ("base table is not referenced", "query references multiple tables"; the
second one crashed both workers of ``test_two_workers_by_site_and_one_killed`` in CI)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.tables import TableSet
from harness import QuestDB
from ingest.host import create_tables

pytestmark = [pytest.mark.integration]


def test_workers_creating_the_tables_at_once_all_succeed(questdb: QuestDB) -> None:
    for _ in range(15):  # fresh prefixes: each round races on tables that do not exist yet
        tables = TableSet(f"t{uuid.uuid4().hex[:8]}_")
        with ThreadPoolExecutor(8) as pool:
            done = [pool.submit(create_tables, questdb.pg_dsn, tables) for _ in range(8)]
            for future in done:
                future.result()
        names = {r[0] for r in questdb.exec_sql("SELECT table_name FROM tables()")["dataset"]}
        views = {
            r[0] for r in questdb.exec_sql("SELECT view_name FROM materialized_views()")["dataset"]
        }
        assert {t.name for t in tables.all()} <= names
        assert {v.name for v in tables.views()} <= views
