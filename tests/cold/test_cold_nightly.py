"""The nightly job on a synthetic day in real QuestDB: rollups of every metric, the per-node
completeness report, Parquet verified against QuestDB, TTL; run twice, killed and resumed,
always the same result; DuckDB answers from the archive with QuestDB's table names."""

from __future__ import annotations

import datetime as dt
import json
import math
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from api import migrate
from cold.config import load_config
from cold.export import compare_stats, open_archive, parquet_stats, partition_dir, questdb_stats
from cold.nightly import STEPS, NightlyJob
from cold.questdb import ColdError
from cold.questdb import QuestDB as ColdQuestDB
from harness import Postgres, QuestDB
from harness.s3proxy import S3Proxy

from .world import ALARM, GAP, NODES, RATES, World, cold_cli, cold_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "cold_month_by_tenant.sql"


@pytest.fixture(scope="module")
def world(_questdb_server: QuestDB) -> World:
    if not _questdb_server.running:
        _questdb_server.restart()
    return World(_questdb_server, f"c{uuid.uuid4().hex[:8]}_").build()


@pytest.fixture(scope="module")
def first_run(world: World, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The nightly job run once, in-process, into archive ``a``."""
    tmp = tmp_path_factory.mktemp("nightly")
    cfg = load_config(world.config(tmp, tmp / "a"))
    db = ColdQuestDB(world.questdb.pg_dsn, world.questdb.http_url)
    try:
        state = NightlyJob(cfg, db).run(world.day)
    finally:
        db.close()
    return tmp, state


def manifests(archive: Path) -> dict[str, dict]:
    return {
        str(p.parent.relative_to(archive)): json.loads(p.read_text())
        for p in sorted(archive.rglob("_manifest.json"))
    }


def q(world: World, query: str) -> list[list]:
    return world.questdb.exec_sql(query)["dataset"]


def test_rollups_cover_every_metric(world: World, first_run: tuple[Path, dict]) -> None:
    daily = f"{world.prefix}telemetry_daily"
    rows = q(world, f"SELECT site, node, device, metric, count, sum, min, max FROM {daily}")
    got = {(r[0], r[1], r[2] or "", r[3]): r[4:] for r in rows}
    assert set(got) == set(world.values)  # hot, not hot, and the node's status metric
    for key, values in world.values.items():
        count, total, lo, hi = got[key]
        assert count == len(values)
        assert math.isclose(total, sum(values), rel_tol=1e-12)
        assert (lo, hi) == (min(values), max(values))


def test_completeness_report(world: World, first_run: tuple[Path, dict]) -> None:
    table = f"{world.prefix}completeness_daily"
    rows = q(
        world,
        f"SELECT node, expected, received, alarm_minutes, gaps, gap_minutes, "
        f"longest_gap_minutes, gap_list, late FROM {table}",
    )
    report = {r[0]: r[1:] for r in rows}
    assert set(report) == {n for _, n in NODES}
    normal, alarm = RATES
    per_min = 6  # three metrics every 30 s
    a001 = report["s101-a001"]
    assert a001[:3] == [normal * (1440 - 30) + alarm * 30, per_min * 1440, ALARM[1] - ALARM[0]]
    assert a001[3] == 0 and a001[7] == 10  # ten samples travelled as historical
    a002 = report["s101-a002"]
    gap = GAP[1] - GAP[0]
    assert a002[:6] == [normal * 1440, per_min * (1440 - gap), 0, 1, gap, gap]
    day = world.day.isoformat()
    assert json.loads(a002[6]) == [[f"{day}T10:00Z", f"{day}T10:30Z"]]
    assert report["s102-a001"][7] == 5  # five arrived two minutes late


def test_parquet_partitions_are_verified_and_manifested(
    world: World, first_run: tuple[Path, dict]
) -> None:
    tmp, state = first_run
    archive = tmp / "a"
    found = manifests(archive)
    day = world.day.isoformat()
    assert set(found) == {
        f"telemetry_raw/site=s101/day={day}",
        f"telemetry_raw/site=s102/day={day}",
        f"telemetry_events/site=s101/day={day}",
        # the mode in force before the day: exported by the recheck of the day before
        f"telemetry_events/site=s101/day={(world.day - timedelta(days=1)).isoformat()}",
    }
    for where, manifest in found.items():
        table = pq.read_table(archive / where / "part-0.parquet")
        assert table.num_rows == manifest["rows"]
        site = where.split("/")[1].removeprefix("site=")
        d = where.split("/")[2].removeprefix("day=")
        name = (
            world.tables.raw.name if where.startswith("telemetry_raw") else world.tables.events.name
        )
        n = q(world, f"SELECT count() FROM {name} WHERE site = '{site}' AND ts IN '{d}'")[0][0]
        assert manifest["rows"] == n
    raw = pq.read_table(archive / f"telemetry_raw/site=s102/day={day}/part-0.parquet")
    assert raw.schema.field("ts").type.unit == "ns"
    nanos = {t.value % 1000 for t in raw["ts"]}  # nanoseconds survive the round trip
    assert nanos == {0, 123}
    assert set(state["done"]) == set(STEPS)
    ttl = q(
        world,
        f"SELECT ttlValue, ttlUnit FROM tables() WHERE table_name = '{world.tables.raw.name}'",
    )
    assert ttl == [[30, "DAY"]]


def test_a_difference_between_questdb_and_parquet_is_named(
    world: World, first_run: tuple[Path, dict]
) -> None:
    tmp, _ = first_run
    cfg = load_config(tmp / "cold-a.toml")
    _fs, root = open_archive(cfg.archive)
    path = f"{partition_dir(root, 'telemetry_raw', 's101', world.day)}/part-0.parquet"
    table = pq.read_table(path)
    values = table["value"].to_pylist()
    values[7] += 0.5
    changed = table.set_column(table.schema.get_field_index("value"), "value", [values])
    db = ColdQuestDB(world.questdb.pg_dsn, world.questdb.http_url)
    try:
        theirs = questdb_stats(db, world.tables.raw, True, "s101", world.day)
    finally:
        db.close()
    compare_stats(theirs, parquet_stats(table, True, world.day), "as archived")
    with pytest.raises(ColdError, match="value sum"):
        compare_stats(theirs, parquet_stats(changed, True, world.day), "changed")
    with pytest.raises(ColdError, match="count"):
        compare_stats(theirs, parquet_stats(table.slice(1), True, world.day), "a row short")


def test_running_twice_gives_the_same_result(world: World, first_run: tuple[Path, dict]) -> None:
    tmp, _ = first_run
    before = manifests(tmp / "a")
    completeness = q(world, f"SELECT * FROM {world.prefix}completeness_daily ORDER BY node")
    result = cold_cli(
        world.questdb,
        "nightly",
        "--config",
        str(tmp / "cold-a.toml"),
        "--day",
        world.day.isoformat(),
        "--force",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = manifests(tmp / "a")
    assert {k: v["sha256"] for k, v in after.items()} == {k: v["sha256"] for k, v in before.items()}
    again = q(world, f"SELECT * FROM {world.prefix}completeness_daily ORDER BY node")
    assert [r[:12] for r in again] == [r[:12] for r in completeness]  # not 'computed'
    assert len(q(world, f"SELECT * FROM {world.prefix}telemetry_daily")) == len(world.values)


def test_killed_mid_export_then_rerun_gives_the_same_result(
    world: World, first_run: tuple[Path, dict]
) -> None:
    tmp, _ = first_run
    reference = manifests(tmp / "a")
    config = world.config(tmp, tmp / "b")
    cmd = [
        sys.executable,
        "-m",
        "cold",
        "nightly",
        "--config",
        str(config),
        "--day",
        world.day.isoformat(),
    ]
    # The killed job cannot remove its scratch directory: keep it in the test's own.
    scratch = tmp / "scratch"
    scratch.mkdir()
    env = {**cold_env(world.questdb), "TMPDIR": str(scratch)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp / "b").rglob("_manifest.json")):
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert len(manifests(tmp / "b")) < len(reference), "killed too late to prove anything"
    state = json.loads((tmp / "state-b" / "nightly" / f"{world.day.isoformat()}.json").read_text())
    assert "export" not in state["done"]
    result = cold_cli(
        world.questdb, "nightly", "--config", str(config), "--day", world.day.isoformat()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done earlier, skipped" in result.stderr  # the finished steps were not redone
    resumed = manifests(tmp / "b")
    assert {k: v["sha256"] for k, v in resumed.items()} == {
        k: v["sha256"] for k, v in reference.items()
    }
    assert (
        cold_cli(world.questdb, "freshness", "--config", str(config), "--max-age-h", "1").returncode
        == 0
    )


def test_success_is_exported_for_the_nightly_job_late_alert(
    world: World, first_run: tuple[Path, dict]
) -> None:
    tmp, _ = first_run  # (a later test reruns the job into the same state and textfile)
    text = (tmp / "metrics-a" / "cold.prom").read_text()
    samples = {
        s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
    }
    marker = json.loads((tmp / "state-a" / "last-success").read_text())
    finished = dt.datetime.fromisoformat(marker["finished_at"]).timestamp()
    assert abs(samples["derrick_cold_last_success_timestamp_seconds"] - finished) < 5
    day = dt.datetime.combine(world.day, dt.time(), dt.UTC).timestamp()
    assert samples["derrick_cold_last_success_day_timestamp_seconds"] == day
    state = json.loads((tmp / "state-a" / "nightly" / f"{world.day.isoformat()}.json").read_text())
    assert samples["derrick_cold_last_success_duration_seconds"] == state["seconds"]


def test_freshness_alerts_without_a_successful_run(world: World, tmp_path: Path) -> None:
    config = world.config(tmp_path, tmp_path / "never")
    result = cold_cli(world.questdb, "freshness", "--config", str(config), "--max-age-h", "30")
    assert result.returncode == 1
    assert "no successful nightly run" in result.stdout


@pytest.fixture
def registry_dsn(postgres: Postgres) -> Iterator[str]:
    name = f"reg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = postgres.dsn_for(name)
    migrate.apply(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES ('acme', 'Acme'), ('bore', 'Bore')")
        conn.execute("INSERT INTO sites (id, tenant_id) VALUES ('s101', 'acme'), ('s102', 'bore')")
        conn.execute(
            "INSERT INTO appliances (id, site_id) VALUES "
            "('s101-a001', 's101'), ('s101-a002', 's101'), ('s102-a001', 's102')"
        )
    yield dsn
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_duckdb_answers_from_the_archive_with_questdb_names_and_joins_the_registry(
    world: World, first_run: tuple[Path, dict], registry_dsn: str
) -> None:
    tmp, _ = first_run
    env = cold_env(world.questdb)
    env["DERRICK_REGISTRY_DSN"] = registry_dsn
    count = subprocess.run(
        [
            sys.executable,
            "-m",
            "cold",
            "query",
            "--config",
            str(tmp / "cold-a.toml"),
            "--json",
            "SELECT count(*) AS n FROM telemetry_raw",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(count.stdout) == {"n": sum(len(v) for v in world.values.values())}
    example = subprocess.run(
        [
            sys.executable,
            "-m",
            "cold",
            "query",
            "--config",
            str(tmp / "cold-a.toml"),
            "--json",
            "--registry-dsn-env",
            "DERRICK_REGISTRY_DSN",
            EXAMPLE.read_text(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [json.loads(line) for line in example.stdout.splitlines()]
    by_tenant = {(r["tenant_id"], r["metric"]): r for r in rows}
    wob = [v for (s, n, d, m), v in world.values.items() if m == "WOB" and s == "s101"]
    acme = by_tenant[("acme", "WOB")]
    assert acme["samples"] == sum(len(v) for v in wob)
    assert acme["appliances"] == 2
    assert by_tenant[("bore", "WOB")]["appliances"] == 1


def test_the_archive_in_an_s3_bucket_holds_the_same_files(
    world: World, first_run: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``parquet_uri = "s3://..."`` against a real S3-compatible server (S3Proxy, AWS
    Signature V4 over HTTP): the same partitions, manifests and rows as the local archive,
    verified against QuestDB before they count as archived; a second run skips them; DuckDB
    answers from the bucket."""
    tmp, _ = first_run
    local = manifests(tmp / "a")
    with S3Proxy(tmp / "s3proxy") as s3:
        s3.make_bucket("derrick-archive")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        path = world.config(tmp, tmp / "s3", s3=("s3://derrick-archive/cold", s3.endpoint))
        cfg = load_config(path)
        db = ColdQuestDB(world.questdb.pg_dsn, world.questdb.http_url)
        try:
            state = NightlyJob(cfg, db).run(world.day)
        finally:
            db.close()
        assert set(state["done"]) == set(STEPS)
        fs, root = open_archive(cfg.archive)
        assert root == "derrick-archive/cold"
        remote = {}
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
            if info.base_name == "_manifest.json":
                with fs.open_input_stream(info.path) as f:
                    remote[info.path.removeprefix(root + "/").rsplit("/", 1)[0]] = json.loads(
                        f.read()
                    )
        assert set(remote) == set(local)
        for where, manifest in local.items():  # the same file (sha256) and the same stats
            differ = {f for f in manifest if f not in ("exported_at", "series")
                      and remote[where][f] != manifest[f]}  # fmt: skip
            assert not differ, (where, {f: (remote[where][f], manifest[f]) for f in differ})
            ours, theirs = sorted(remote[where]["series"]), sorted(manifest["series"])
            assert [s[:-1] for s in ours] == [s[:-1] for s in theirs]  # all but the value sum
            for a, b in zip(ours, theirs, strict=True):  # QuestDB sums in parallel: order varies
                assert math.isclose(a[-1], b[-1], rel_tol=1e-12), (where, a, b)
        for where in local:
            with fs.open_input_file(f"{root}/{where}/part-0.parquet") as f:
                assert pq.read_table(f).equals(pq.read_table(tmp / "a" / where / "part-0.parquet"))
        # the objects are in the server's bucket directory, not anywhere local to the job
        assert any((s3.data_dir / "derrick-archive").rglob("part-0.parquet"))

        db = ColdQuestDB(world.questdb.pg_dsn, world.questdb.http_url)
        try:
            again = NightlyJob(cfg, db).run(world.day)
        finally:
            db.close()
        assert again["done"] == state["done"]

        env = {**cold_env(world.questdb), "AWS_ACCESS_KEY_ID": s3.access_key,
               "AWS_SECRET_ACCESS_KEY": s3.secret_key}  # fmt: skip
        count = subprocess.run(
            [sys.executable, "-m", "cold", "query", "--config", str(path), "--json",
             "SELECT count(*) AS n FROM telemetry_raw"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert count.returncode == 0, count.stderr
        assert json.loads(count.stdout) == {"n": sum(len(v) for v in world.values.values())}
        assert s3.secret_key not in count.stdout + count.stderr
