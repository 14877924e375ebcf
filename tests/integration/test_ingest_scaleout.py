"""Scale-out: two ingest workers split the fleet by site (static partition, as on
Mosquitto); killing one loses nothing: its nodes are picked up when it is back (rebirth,
replay of unacknowledged batches) and QuestDB deduplicates."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from harness import Mosquitto, QuestDB
from harness.derrick import EdgeSpec, SimulatedDevice, edge_process, ingest_process
from harness.observer import SparkplugObserver
from harness.process import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def acked(edge_dir: Path) -> int:
    db = sqlite3.connect(f"file:{edge_dir / 'queue.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone()
    finally:
        db.close()
    return 0 if row is None else int(row[0])


def queued(edge_dir: Path, site: str) -> set[tuple[int, str, str, str, str, float]]:
    """The samples still in an edge's durable queue, as the observer's rows."""
    db = sqlite3.connect(f"file:{edge_dir / 'queue.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT s.ts_ms, m.device, m.name, s.value "
            "FROM sample s JOIN metric m ON m.id = s.metric"
        ).fetchall()
    finally:
        db.close()
    return {(int(t), site, edge_dir.name, str(d), str(n), float(v)) for t, d, n, v in rows}


def born(edge: ManagedProcess) -> int:
    """How many sessions the agent has had (its births, from its own log)."""
    return edge.log_path.read_text().count("born: bdSeq")


def wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_by_site_and_one_killed(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    workers = {
        site: ingest_process(
            tmp_path / f"ingest-{site}",
            mqtt_port=mosquitto.port,
            ilp_conf=questdb.ilp_conf,
            pg_dsn=questdb.pg_dsn,
            table_prefix=prefix,
            worker=f"w-{site}",
            groups=[site],
            # the edges here re-send after 3 s (ack_timeout_ms): acks must come sooner
            extra="flush_interval_ms = 100\nack_interval_ms = 1000",
        )
        for site in ("s010", "s011")
    }
    edges = [
        edge_process(
            EdgeSpec(
                site=site,
                appliance=f"{site}-a00{n}",
                devices=[SimulatedDevice("daq", ("WOB", "RPM", "ROP", "SPP"), seed=n)],
                normal_per_min=480,
                ack_timeout_ms=3000,
            ),
            tmp_path / f"{site}-a00{n}",
            [mosquitto.port],
        )
        for site in ("s010", "s011")
        for n in (1, 2)
    ]
    with SparkplugObserver("127.0.0.1", mosquitto.port) as observer:
        for w in workers.values():
            w.start()
        for e in edges:
            e.start()
        try:
            wait(lambda: all(born(e) >= 1 for e in edges), 90, "four births")
            time.sleep(3)
            sessions = [born(e) for e in edges[:2]]
            workers["s010"].kill()
            time.sleep(6)
            workers["s010"].start()
            # the restarted worker asks the s010 nodes it hears from to rebirth (count births
            # after the kill: the STATE of two workers starting can already cause one)
            wait(
                lambda: all(born(e) > n for e, n in zip(edges[:2], sessions, strict=True)),
                120,
                "s010 nodes reborn",
            )
            time.sleep(2)
            targets = dict(observer.max_batch)
            wait(
                lambda: all(acked(tmp_path / node) >= top for (_, node), top in targets.items()),
                120,
                f"batches up to {targets} acknowledged",
            )
            for e in edges:
                e.stop()
            # Published rows the edges had no acknowledgement for when they stopped (batches
            # replayed after the targets were read) are still in their queues: they are sent
            # on the next start. Every other row must be in QuestDB.
            still_queued = set().union(*(queued(tmp_path / n, s) for (s, n) in targets))
            published = {r for r in observer.snapshot() if r[1] in ("s010", "s011")}
            must_store = published - still_queued
            deadline = time.monotonic() + 60
            rows: list[tuple[int, str, str, str, str, float]] = []
            while time.monotonic() < deadline:
                res = questdb.exec_sql(
                    f"SELECT ts::long, site, node, device, metric, value FROM {prefix}telemetry_raw"
                )
                rows = [(t // 1_000_000, s, n, d, m, v) for t, s, n, d, m, v in res["dataset"]]
                if must_store <= set(rows):
                    break
                time.sleep(0.5)
        finally:
            for e in edges:
                e.stop()
            for w in workers.values():
                w.stop()
    missing = must_store - set(rows)
    batches = sorted({observer.row_batch.get(r) for r in missing}, key=str)
    assert not missing, (
        f"{len(missing)} of {len(must_store)} missing (neither stored nor queued), in batches "
        f"{batches}: {sorted(missing)[:3]}; see {tmp_path}"
    )
    assert len(must_store) > len(published) / 2, "most of what was published must be stored"
    keys = [r[:5] for r in rows]
    assert len(keys) == len(set(keys)), "stored twice"
    assert {n for (_, n) in targets} == {"s010-a001", "s010-a002", "s011-a001", "s011-a002"}
    # each worker stored only its own sites: its log names only its nodes
    for site, w in workers.items():
        other = "s011" if site == "s010" else "s010"
        log = w.log_path.read_text()
        assert f"NBIRTH {site}/" in log and f"NBIRTH {other}/" not in log
