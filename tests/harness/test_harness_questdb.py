"""A real QuestDB from the harness: SQL over HTTP, ILP over HTTP, PGWire, crash and restart."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from questdb import Sender, TimestampNanos

from harness import QuestDB
from harness.errors import QueryError
from harness.ports import is_listening
from harness.process import process_alive


def unique_table(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _create_wal_table(questdb: QuestDB, table: str) -> None:
    questdb.exec_sql(
        f"create table {table} (node symbol, metric symbol, value double, ts timestamp)"
        " timestamp(ts) partition by day wal dedup upsert keys(ts, node, metric)"
    )


def _wait_for_rows(questdb: QuestDB, table: str, expected: int) -> list[list[object]]:
    # WAL tables apply commits asynchronously; wait_wal_table() is QuestDB's barrier.
    questdb.exec_sql(f"select wait_wal_table('{table}')")
    result = questdb.exec_sql(f"select node, metric, value from {table} order by ts")
    rows: list[list[object]] = result["dataset"]
    assert len(rows) == expected, rows
    return rows


def test_sql_insert_and_select_on_a_wal_table(questdb: QuestDB) -> None:
    table = unique_table()
    _create_wal_table(questdb, table)
    questdb.exec_sql(
        f"insert into {table} values ('s017-a042', 'WOB', 12.5, '2026-01-01T00:00:00.000000Z')"
    )
    # the same key again: dedup upsert keeps one row with the last value
    questdb.exec_sql(
        f"insert into {table} values ('s017-a042', 'WOB', 13.0, '2026-01-01T00:00:00.000000Z')"
    )
    assert _wait_for_rows(questdb, table, 1) == [["s017-a042", "WOB", 13.0]]


def test_ilp_over_http_and_pgwire(questdb: QuestDB) -> None:
    table = unique_table()
    _create_wal_table(questdb, table)
    with Sender.from_conf(questdb.ilp_conf) as sender:
        for i in range(3):
            sender.row(
                table,
                symbols={"node": "s017-a042", "metric": "RPM"},
                columns={"value": float(i)},
                at=TimestampNanos(1_767_225_600_000_000_000 + i * 1_000_000_000),
            )
        sender.flush()
    _wait_for_rows(questdb, table, 3)
    with psycopg.connect(questdb.pg_dsn, autocommit=True) as conn:
        row = conn.execute(f"select count(*), sum(value) from {table}").fetchone()
    assert row == (3, 3.0)


def test_session_server_reserves_small_pages_for_its_many_tables(questdb: QuestDB) -> None:
    """A table with one row holds well under a megabyte on disk while its writer is open
    (at QuestDB's default 16 MiB append pages it held over 100 MiB: a session of hundreds of
    tables and views reached ~38 GB)."""
    table = unique_table()
    _create_wal_table(questdb, table)
    questdb.exec_sql(
        f"insert into {table} values ('s017-a042', 'WOB', 12.5, '2026-01-01T00:00:00.000000Z')"
    )
    _wait_for_rows(questdb, table, 1)
    (directory,) = (d for d in (questdb.root / "db").glob(f"{table}~*") if d.is_dir())
    allocated = sum(f.stat().st_blocks * 512 for f in directory.rglob("*") if f.is_file())
    assert allocated < 4 * 1024 * 1024, f"{directory}: {allocated:,} bytes allocated"


def test_bad_sql_raises_query_error(questdb: QuestDB) -> None:
    with pytest.raises(QueryError, match="no_such_table"):
        questdb.exec_sql("select * from no_such_table_at_all")


def test_connection_details(questdb: QuestDB) -> None:
    assert questdb.ilp_conf == f"http::addr=127.0.0.1:{questdb.http_port};"
    assert questdb.pg_dsn == f"postgresql://admin:quest@127.0.0.1:{questdb.pg_port}/qdb"
    assert (
        len({questdb.http_port, questdb.http_min_port, questdb.pg_port, questdb.ilp_tcp_port}) == 4
    )
    mode = questdb.exec_sql("select 1")  # server answers on the HTTP port it advertises
    assert mode["dataset"] == [[1]]


def test_sigkill_then_restart_on_same_ports_keeps_committed_rows(tmp_path: Path) -> None:
    with QuestDB(tmp_path / "qdb") as questdb:
        table = unique_table("crash")
        _create_wal_table(questdb, table)
        questdb.exec_sql(
            f"insert into {table} values ('s001-a001', 'WOB', 1.0, '2026-01-01T00:00:00Z')"
        )
        _wait_for_rows(questdb, table, 1)
        ports = (questdb.http_port, questdb.pg_port, questdb.ilp_tcp_port)
        pid = questdb.pid
        assert pid is not None

        questdb.kill()
        assert not process_alive(pid)
        assert not is_listening(questdb.http_port)

        questdb.restart()
        assert (questdb.http_port, questdb.pg_port, questdb.ilp_tcp_port) == ports
        assert _wait_for_rows(questdb, table, 1) == [["s001-a001", "WOB", 1.0]]

        pid = questdb.pid
        assert pid is not None
    assert not process_alive(pid)
