"""Fault tests: the end-to-end guarantee on real Mosquitto, ingest and QuestDB.

Each test runs real edge agents and a real ingest worker as processes, injects a fault, and
then proves that

- every row an independent subscriber saw published is stored in QuestDB (nothing missing),
- no (ts, site, node, device, metric) is stored twice (nothing doubled),
- every batch each agent published was acknowledged (so every committed reading is stored).
"""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import SMALL_TABLES, Mosquitto, QuestDB
from harness.derrick import ALL_TAGS, EdgeSpec, SimulatedDevice, edge_process, ingest_process
from harness.observer import Row, SparkplugObserver
from harness.ports import allocate_port
from harness.process import ManagedProcess
from harness.proxy import ProxyProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE = "s002"
ALARM_PER_MIN = 3000  # 500 values per 10 s


class Rig:
    """One ingest worker, some edge agents, an observer; what the assertions need."""

    def __init__(self, tmp: Path, broker: Mosquitto, questdb: QuestDB) -> None:
        self.tmp, self.broker, self.questdb = tmp, broker, questdb
        self.prefix = f"t{uuid.uuid4().hex[:8]}_"
        self.table = f"{self.prefix}telemetry_raw"
        self.ingest = ingest_process(
            tmp / "ingest",
            mqtt_port=broker.port,
            ilp_conf=questdb.ilp_conf,
            pg_dsn=questdb.pg_dsn,
            table_prefix=self.prefix,
            # the edges here re-send after 3 s (ack_timeout_ms): acks must come sooner
            extra="flush_interval_ms = 100\nack_interval_ms = 1000",
        )
        self.edges: dict[str, ManagedProcess] = {}
        self.observer = SparkplugObserver("127.0.0.1", broker.port)

    def add_edge(
        self, n: int, *, per_min: int = ALARM_PER_MIN, port: int | None = None, **spec: object
    ) -> ManagedProcess:
        appliance = f"{SITE}-a{n:03d}"
        edge = edge_process(
            EdgeSpec(
                site=SITE,
                appliance=appliance,
                devices=[SimulatedDevice("daq", seed=n)],
                normal_per_min=per_min,
                alarm_per_min=per_min,
                ack_timeout_ms=3000,
                link_bytes_per_s=200_000,
                **spec,  # type: ignore[arg-type]
            ),
            self.tmp / appliance,
            [port or self.broker.port],
        )
        self.edges[appliance] = edge
        return edge

    def start(self) -> None:
        self.observer.__enter__()
        self.ingest.start()
        for edge in self.edges.values():
            edge.start()
        self.wait(lambda: self.observer.counts["DBIRTH"] >= len(self.edges), 90, "births")

    def stop(self) -> None:
        for edge in self.edges.values():
            edge.stop()
        self.ingest.stop()
        self.observer.__exit__()

    @staticmethod
    def wait(cond: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():  # type: ignore[operator]
                return
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def births(self) -> dict[str, int]:
        """NBIRTHs seen so far, per agent."""
        return {a: self.observer.node_births[(SITE, a)] for a in self.edges}

    def wait_reborn(self, births_before: dict[str, int], timeout: float = 90) -> None:
        """Every agent was born again after a fault (a new session: replay starts). Counted
        per agent: one agent born twice must not stand in for another not born yet."""
        self.wait(
            lambda: all(n > births_before.get(a, 0) for a, n in self.births().items()),
            timeout,
            f"an NBIRTH from each of {sorted(self.edges)}",
        )

    def acked(self, appliance: str) -> int:
        db = sqlite3.connect(f"file:{self.tmp / appliance / 'queue.db'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone()
        finally:
            db.close()
        return 0 if row is None else int(row[0])

    def committed(self, appliance: str) -> int:
        """The newest batch number the agent's queue has ever committed."""
        db = sqlite3.connect(f"file:{self.tmp / appliance / 'queue.db'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batch'").fetchone()
        finally:
            db.close()
        return 0 if row is None else int(row[0])

    def wait_all_acked(self, timeout: float) -> None:
        """Every batch each agent committed or published until now has been acknowledged
        (cumulatively: the agent's acknowledged batch number reaches both the newest batch
        its queue holds and the highest one seen on the wire). Taken from the queue too, so
        that a backlog not yet re-sent when this is called is waited for."""
        time.sleep(1.5)
        targets: dict[str, int] = {}
        for appliance in self.edges:
            top = self.observer.max_batch.get((SITE, appliance))
            assert top is not None, f"{appliance} published no batch"
            targets[appliance] = max(top, self.committed(appliance))
        self.wait(
            lambda: all(self.acked(a) >= top for a, top in targets.items()),
            timeout,
            f"batches up to {targets} to be acknowledged",
        )

    def stored(self) -> list[Row]:
        result = self.questdb.exec_sql(
            f"SELECT ts::long, site, node, device, metric, value FROM {self.table}"
        )
        return [(t // 1_000_000, s, n, d, m, v) for t, s, n, d, m, v in result["dataset"]]

    def assert_sampled_through(self, start_ms: int, end_ms: int) -> None:
        """Each agent's readings of ``[start, end]`` (a fault) are stored: 16 sensors at
        3000/min = 50/s, 90 % of it at least, a second trimmed at each end. Counted in
        QuestDB: the observer may itself have missed part of them."""
        stored = set(self.stored())
        for node in self.edges:
            during = rows_between(stored, node, start_ms + 1000, end_ms - 1000)
            assert during >= 0.9 * 50 * ((end_ms - start_ms - 2000) / 1000), (node, during)

    def assert_nothing_lost_nothing_doubled(self) -> set[Row]:
        published = {r for r in self.observer.snapshot() if r[1] == SITE}
        assert not self.observer.errors, self.observer.errors[:5]
        rows: list[Row] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = self.stored()
            if published <= set(rows):
                break
            time.sleep(0.5)
        missing = published - set(rows)
        assert not missing, f"{len(missing)} of {len(published)} missing: {sorted(missing)[:3]}"
        assert len(rows) == len(set(rows)), "rows stored twice"
        keys = [r[:5] for r in rows]
        assert len(keys) == len(set(keys)), "a (ts, site, node, device, metric) stored twice"
        return published


@pytest.fixture
def rig(tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB) -> Iterator[Rig]:
    r = Rig(tmp_path, mosquitto, questdb)
    try:
        yield r
    finally:
        r.stop()


def rows_between(rows: set[Row], node: str, start_ms: int, end_ms: int) -> int:
    return sum(1 for r in rows if r[2] == node and start_ms <= r[0] < end_ms)


def test_broker_down_for_60_s_at_alarm_rate(rig: Rig, mosquitto: Mosquitto) -> None:
    rig.add_edge(1)
    rig.add_edge(2)
    rig.start()
    time.sleep(4)
    births = rig.births()
    down_at = time.time_ns() // 1_000_000
    mosquitto.stop()
    time.sleep(60)
    mosquitto.restart()
    up_at = time.time_ns() // 1_000_000
    rig.wait_reborn(births)
    time.sleep(3)
    rig.wait_all_acked(120)
    rig.assert_nothing_lost_nothing_doubled()
    rig.assert_sampled_through(down_at, up_at)  # the outage's readings buffered and stored


def test_agent_killed_five_times_at_random_moments(rig: Rig) -> None:
    edge = rig.add_edge(3)
    rig.start()
    rng = random.Random(20261130)
    for _ in range(5):
        time.sleep(rng.uniform(1.0, 4.0))
        edge.kill()  # at a random moment: maybe mid-commit, maybe before it was even born
        edge.start()
    births = rig.births()
    rig.wait_reborn(births)
    time.sleep(3)
    rig.wait_all_acked(90)
    rig.assert_nothing_lost_nothing_doubled()


def test_reinstalled_appliance_numbering_from_1_is_acknowledged_at_once(rig: Rig) -> None:
    """An appliance reinstalled (queue gone) numbers its batches from 1 again while the
    Primary Host's frontier for it stands at N: its NBIRTH (a new queue id, acked 0)
    restarts the frontier, so its new batches are acknowledged at once, not only once they
    overtake N (which took as long as the appliance had run: years of re-sending)."""
    edge = rig.add_edge(6)
    rig.start()
    time.sleep(15)
    rig.wait_all_acked(60)
    old_top = rig.committed("s002-a006")
    assert old_top >= 12, old_top
    edge.stop()
    for suffix in ("", "-wal", "-shm"):
        (rig.tmp / "s002-a006" / f"queue.db{suffix}").unlink(missing_ok=True)
    births = rig.births()
    edge.start()
    rig.wait_reborn(births)
    rig.wait(lambda: rig.acked("s002-a006") >= 3, 30, "the new numbering's first acks")
    assert rig.committed("s002-a006") < old_top, "acked only after overtaking the old numbering"
    rig.wait(
        lambda: rig.acked("s002-a006") >= rig.committed("s002-a006") - 1, 30, "the acks to keep up"
    )
    rig.assert_nothing_lost_nothing_doubled()


def test_ingest_killed_mid_stream_and_restarted(rig: Rig) -> None:
    rig.add_edge(4)
    rig.add_edge(5)
    rig.start()
    time.sleep(4)
    births = rig.births()
    rig.ingest.kill()
    time.sleep(5)
    rig.ingest.start()
    rig.wait_reborn(births)
    time.sleep(3)
    rig.wait_all_acked(90)
    rig.assert_nothing_lost_nothing_doubled()


def test_primary_host_offline_and_back(rig: Rig) -> None:
    rig.add_edge(6)
    rig.start()
    time.sleep(3)
    births = rig.births()
    rig.ingest.stop()  # graceful: STATE offline
    offline_at = time.time_ns() // 1_000_000
    rig.wait(lambda: rig.observer.death_times.get((SITE, f"{SITE}-a006")), 15, "NDEATH")
    time.sleep(8)
    back_at = time.time_ns() // 1_000_000
    rig.ingest.start()
    rig.wait_reborn(births)
    time.sleep(3)
    rig.wait_all_acked(90)
    rig.assert_nothing_lost_nothing_doubled()
    stored = set(rig.stored())
    # nothing was published while the host was offline (after the NDEATH) ...
    death = rig.observer.death_times[(SITE, f"{SITE}-a006")][0]
    sent = [t for t in rig.observer.data_times[(SITE, f"{SITE}-a006")] if death < t < back_at]
    assert not sent, f"{len(sent)} data messages while the Primary Host was offline"
    # ... and what was sampled meanwhile arrived afterwards
    assert rows_between(stored, f"{SITE}-a006", offline_at + 1000, back_at - 1000) > 200


def test_throttled_link_backlog_drains_while_live_data_flows(rig: Rig, tmp_path: Path) -> None:
    """A one-hour alarm backlog (180,000 readings) drains through a 200 kB/s link while live
    readings keep arriving within 2 s of their sample time."""
    with ProxyProcess(tmp_path / "proxy", rig.broker.port, bytes_per_s=200_000) as proxy:
        edge = rig.add_edge(7, port=proxy.port, publish_interval_ms=500)
        appliance = f"{SITE}-a007"
        _prefill_backlog(rig, appliance, samples=180_000)
        start = time.time_ns() // 1_000_000
        rig.start()
        assert edge.running
        rig.wait_all_acked(300)
        drained_s = (time.time_ns() // 1_000_000 - start) / 1000
        published = rig.assert_nothing_lost_nothing_doubled()
    backlog = sum(1 for r in published if r[2] == appliance and r[0] < start)
    assert backlog == 180_000
    delays = sorted(recv - ts for recv, ts in rig.observer.live_delays if recv > start + 5000)
    assert delays, "no live data during the drain"
    p99 = delays[int(len(delays) * 0.99) - 1]
    p50, p90 = delays[len(delays) // 2], delays[int(len(delays) * 0.9)]
    transport = sorted(r - t for r, t in rig.observer.live_transport if r > start + 5000)
    print(
        f"transport (published -> received) p50 {transport[len(transport) // 2]} "
        f"p99 {transport[int(len(transport) * 0.99) - 1]} max {transport[-1]} ms"
    )
    print(
        f"drained 180,000 readings in {drained_s:.1f} s; live delay p50 {p50} p90 {p90} "
        f"p99 {p99} max {delays[-1]} ms over {len(delays)} readings"
    )
    assert p99 <= 2000, f"live data p99 delay {p99} ms while draining"


def _prefill_backlog(rig: Rig, appliance: str, *, samples: int) -> None:
    """Write a one-hour alarm backlog as a legacy hand-off file and import it."""
    edge_dir = rig.tmp / appliance
    edge_dir.mkdir(parents=True, exist_ok=True)
    handoff = edge_dir / "handoff.jsonl"
    t0 = (time.time_ns() // 1_000_000 - 3_700_000) * 1_000_000
    with handoff.open("w") as f:
        f.write(
            json.dumps(
                {
                    "format": "derrick-legacy-handoff",
                    "version": 1,
                    "appliance": appliance,
                    "source_version": "v4.2",
                    "precision": "ms",
                }
            )
            + "\n"
        )
        for i in range(samples):
            tag = ALL_TAGS[i % 16]
            ts = t0 + (i // 16) * 320_000_000  # each sensor every 0.32 s
            f.write(
                json.dumps({"device": "daq", "tag": tag, "ts_ns": ts, "value": round(i * 0.001, 3)})
                + "\n"
            )
        f.write(json.dumps({"end": "derrick-legacy-handoff", "readings": samples}) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "import-legacy",
            "--config",
            str(edge_dir / "agent.toml"),
            str(handoff),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _rig_on_own_questdb(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB, metrics_port: int | None = None
) -> Rig:
    """A rig on a QuestDB of the test's own (to be killed or frozen): the worker gives up a
    request after 2 s, flushes every 100 ms, holds at most 1,000 rows, and acknowledges at
    once (the tests read "nothing acknowledged" seconds after the fault)."""
    rig = Rig(tmp_path, mosquitto, questdb)
    metrics = f"\n\n[metrics]\nport = {metrics_port}" if metrics_port else ""
    rig.ingest = ingest_process(
        tmp_path / "ingest",
        mqtt_port=mosquitto.port,
        ilp_conf=questdb.ilp_conf + "retry_timeout=500;request_timeout=2000;",
        pg_dsn=questdb.pg_dsn,
        table_prefix=rig.prefix,
        extra="flush_interval_ms = 100\nmax_pending_rows = 1000\nack_interval_ms = 1000" + metrics,
    )
    return rig


def test_questdb_down_stops_acknowledgements_and_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """QuestDB killed for 30 s: the worker stops acknowledging, keeps at most
    ``max_pending_rows`` in memory (shedding the rest, unacknowledged), and once QuestDB is
    back every reading the edges published is stored."""
    with QuestDB(tmp_path / "questdb", settings=SMALL_TABLES) as questdb:
        rig = _rig_on_own_questdb(tmp_path, mosquitto, questdb)
        try:
            rig.add_edge(8)
            rig.add_edge(9)
            rig.start()
            time.sleep(3)
            acked_before = {a: rig.acked(a) for a in rig.edges}
            questdb.kill()
            time.sleep(5)
            stalled = {a: rig.acked(a) for a in rig.edges}
            time.sleep(25)
            # nothing was acknowledged while QuestDB was down
            assert {a: rig.acked(a) for a in rig.edges} == stalled
            assert all(stalled[a] >= acked_before[a] for a in rig.edges)
            log = (tmp_path / "ingest" / "ingest.log").read_text()
            assert "not acknowledging, retrying with backoff" in log
            assert rig.ingest.running
            questdb.restart()
            rig.wait_all_acked(180)
            rig.assert_nothing_lost_nothing_doubled()
        finally:
            rig.stop()


def test_a_node_over_its_quota_is_slowed_down_not_lost(rig: Rig, tmp_path: Path) -> None:
    """Per-node quota on live data (issue 9, limits): a runaway appliance (50 values/s
    against a quota of 30/s) has its excess live batches held back, unacknowledged; it sends
    them again as historical data, paced by its link share, and they are stored then. Its
    neighbour is untouched, the live rows stored for the runaway stay within the quota, and
    every reading it published is stored exactly once, while it keeps running. No operator
    action."""
    rig.ingest = ingest_process(
        tmp_path / "ingest",
        mqtt_port=rig.broker.port,
        ilp_conf=rig.questdb.ilp_conf,
        pg_dsn=rig.questdb.pg_dsn,
        table_prefix=rig.prefix,
        extra=(
            "flush_interval_ms = 100\nack_interval_ms = 1000\n"
            "node_quota_metrics_per_s = 30\nnode_quota_burst = 200"
        ),
    )
    runaway = rig.add_edge(1, per_min=3000)
    rig.add_edge(2, per_min=600)
    started = time.monotonic()
    rig.start()
    time.sleep(12)
    assert runaway.running
    rig.wait_all_acked(180)
    rig.assert_nothing_lost_nothing_doubled()
    log = (tmp_path / "ingest" / "ingest.log").read_text()
    assert f"node {SITE}/{SITE}-a001 is over its quota of 30 metrics/s" in log
    assert f"{SITE}/{SITE}-a002 is over" not in log
    live_window_s = time.monotonic() - started  # the runaway ran all along: an upper bound
    live, historical = (
        rig.questdb.exec_sql(
            f"SELECT count() FROM {rig.table} WHERE node = '{SITE}-a001' AND historical = {h}"
        )["dataset"][0][0]
        for h in ("false", "true")
    )
    assert historical > 0  # the held-back batches came back as historical data
    assert live <= 30 * live_window_s + 200, (live, live_window_s)  # rate × time + burst


def test_stalled_worker_under_alarm_load_loses_nothing(rig: Rig) -> None:
    """Brown-out (issue 9, limits): the ingest worker freezes (SIGSTOP, as a long GC pause or
    a starved VM would) for 15 s under two nodes at the alarm rate. Nobody intervenes: the
    nodes' batches go unacknowledged and are re-sent with back-off, the worker works off
    what the broker buffered for it when it runs again, and every reading is stored exactly
    once. (Mosquitto 2.0 buffers QoS 0 messages for a connected but stalled subscriber
    without limit, so it drops nothing here; EMQX drops beyond ``max_mqueue_len``, which is
    the broker-killed case the other tests cover: unacknowledged batches are re-sent.)"""
    rig.add_edge(21)
    rig.add_edge(22)
    rig.start()
    time.sleep(3)
    rig.ingest.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3)  # acknowledgements already on their way are applied
        stalled = {a: rig.acked(a) for a in rig.edges}
        time.sleep(12)
        assert {a: rig.acked(a) for a in rig.edges} == stalled  # really stalled
    finally:
        rig.ingest.send_signal(signal.SIGCONT)
    rig.wait_all_acked(180)
    rig.assert_nothing_lost_nothing_doubled()
    assert all(rig.acked(a) > stalled[a] for a in rig.edges)


def test_wedged_broker_under_alarm_load_loses_nothing(rig: Rig, mosquitto: Mosquitto) -> None:
    """Brown-out (issue 9, limits), broker saturated: the broker stops serving for 20 s
    (SIGSTOP: connections stay open, nothing is read or answered, as a broker pinned at 100 %
    CPU or swapping would) under two nodes at the alarm rate. The agents keep sampling and
    queueing while their publishes go nowhere, nobody intervenes, and when the broker serves
    again every reading of the stall is stored exactly once and acknowledged."""
    rig.add_edge(31)
    rig.add_edge(32)
    rig.start()
    time.sleep(3)
    wedged_at = time.time_ns() // 1_000_000
    mosquitto.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(20)
    finally:
        mosquitto.process.send_signal(signal.SIGCONT)
    freed_at = time.time_ns() // 1_000_000
    rig.wait_all_acked(180)
    rig.assert_nothing_lost_nothing_doubled()
    rig.assert_sampled_through(wedged_at, freed_at)  # the agents sampled through the stall
    for edge in rig.edges.values():
        assert edge.running  # recovered without a restart


def test_frozen_questdb_stops_acknowledgements_and_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Brown-out (issue 9, limits), QuestDB slow: it stops answering for 20 s (SIGSTOP: its
    HTTP port accepts connections, requests hang until the client's timeout), which is how
    a QuestDB stalled in a long GC or starved of I/O looks to the worker, unlike a refused
    connection. The worker acknowledges nothing meanwhile, keeps at most ``max_pending_rows``
    in memory, and once QuestDB answers again every reading is stored exactly once with no
    operator action."""
    metrics_port = allocate_port()
    with QuestDB(tmp_path / "questdb", settings=SMALL_TABLES) as questdb:
        rig = _rig_on_own_questdb(tmp_path, mosquitto, questdb, metrics_port)

        def scrape() -> dict[str, float]:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            return {
                name: float(value)
                for name, value in re.findall(r"^(derrick_ingest_\w+) (\S+)$", text, re.M)
            }

        try:
            rig.add_edge(41)
            rig.add_edge(42)
            rig.start()
            time.sleep(3)
            questdb.process.send_signal(signal.SIGSTOP)
            try:
                time.sleep(5)
                stalled = {a: rig.acked(a) for a in rig.edges}
                pending: list[float] = []
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    pending.append(scrape()["derrick_ingest_pending_rows"])
                    time.sleep(0.5)
                assert {a: rig.acked(a) for a in rig.edges} == stalled  # nothing acknowledged
                # memory bounded: the rows held reach the bound and stay within one message
                # of it (an agent's message holds max_metrics_per_message = 500 at most), the
                # rest is shed, unacknowledged
                assert 1000 <= max(pending) < 1000 + 500, pending
                assert scrape()["derrick_ingest_shed_messages_total"] > 0
            finally:
                questdb.process.send_signal(signal.SIGCONT)
            log = (tmp_path / "ingest" / "ingest.log").read_text()
            assert "not acknowledging, retrying with backoff" in log
            assert rig.ingest.running
            rig.wait_all_acked(180)
            rig.assert_nothing_lost_nothing_doubled()
            assert all(rig.acked(a) > stalled[a] for a in rig.edges)
        finally:
            rig.stop()
