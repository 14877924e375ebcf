"""A real PostgreSQL cluster from the harness: connect, restart keeps data, secrets stay hidden."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import psycopg

from harness import Postgres
from harness.ports import is_listening
from harness.postgres import sweep_orphaned_cluster_dirs
from harness.process import process_alive, process_start_time


def test_connect_and_query(postgres: Postgres) -> None:
    with psycopg.connect(postgres.dsn) as conn:
        row = conn.execute("select current_database(), current_user, current_setting('fsync')")
        assert row.fetchone() == ("derrick", "derrick", "on")


def test_listens_on_loopback_only(postgres: Postgres) -> None:
    with psycopg.connect(postgres.dsn) as conn:
        row = conn.execute("select current_setting('listen_addresses')").fetchone()
    assert row == ("127.0.0.1",)
    assert is_listening(postgres.port)


def test_password_stays_out_of_repr_and_command_line(postgres: Postgres) -> None:
    password = postgres.dsn.split("password=")[1].split()[0]
    assert password not in repr(postgres)
    assert password not in " ".join(postgres.process.argv)
    assert not (postgres.cluster_dir / "initdb.pw").exists()
    assert password not in postgres.log_path.read_text(errors="replace")


def test_runs_unprivileged(postgres: Postgres) -> None:
    pid = postgres.pid
    assert pid is not None
    uid = os.stat(f"/proc/{pid}").st_uid
    if os.geteuid() == 0:
        assert uid != 0
    else:
        assert uid == os.geteuid()


def test_restart_on_same_port_keeps_data(tmp_path: Path) -> None:
    with Postgres(tmp_path / "pg", fsync=False) as pg:
        table = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg.dsn) as conn:
            conn.execute(f"create table {table} (id int primary key, name text)")
            conn.execute(f"insert into {table} values (1, 's017-a042')")
        port, old_pid = pg.port, pg.pid
        assert old_pid is not None

        pg.kill()
        assert not process_alive(old_pid)
        pg.restart()
        assert pg.port == port
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute(f"select name from {table}").fetchall() == [("s017-a042",)]

        pid = pg.pid
        assert pid is not None
        cluster_dir = pg.cluster_dir
    assert not process_alive(pid)
    assert not pg.running
    if cluster_dir.parent != tmp_path / "pg":  # created outside base_dir: removed on close
        assert not cluster_dir.exists()


def test_cluster_directories_of_dead_runs_are_swept(tmp_path: Path) -> None:
    """A run killed before closing its clusters leaves their outside directories behind; the
    next cluster made outside removes those whose owner is gone, and only those."""
    exited = subprocess.Popen(["true"])
    exited.wait()
    orphan, live, foreign = (tmp_path / f"derrick-pg-{n}" for n in ("orphan", "live", "foreign"))
    for directory in (orphan, live, foreign):
        (directory / "data").mkdir(parents=True)
    (orphan / "derrick-owner").write_text(f"{exited.pid} 12345")
    own_start = process_start_time(os.getpid())
    (live / "derrick-owner").write_text(f"{os.getpid()} {own_start}")
    reused = tmp_path / "derrick-pg-reused"  # our pid, another start time: a reused pid
    (reused / "data").mkdir(parents=True)
    (reused / "derrick-owner").write_text(f"{os.getpid()} 1")
    assert sorted(sweep_orphaned_cluster_dirs(tmp_path)) == sorted([orphan, reused])
    assert not orphan.exists() and not reused.exists()
    assert live.exists() and foreign.exists()


def test_a_cluster_outside_its_base_directory_is_marked_and_kept(postgres: Postgres) -> None:
    mark = postgres.cluster_dir / "derrick-owner"
    if postgres.cluster_dir.is_relative_to(postgres.base_dir):  # not root: nothing outside
        assert not mark.exists()
        return
    assert mark.read_text().split()[0] == str(os.getpid())
    assert postgres.cluster_dir not in sweep_orphaned_cluster_dirs()
    assert (postgres.data_dir / "PG_VERSION").exists()
