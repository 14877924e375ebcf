"""Ingest benchmark: limits, end to end per worker, latency and a naive baseline, one run.

Everything runs on this machine in one go, against a real Mosquitto and a real QuestDB
(``harness``, free ports, a temporary directory), with the ingest worker as a real process
(``python -m ingest run``, started through ``harness.derrick.ingest_process``):

The worker and this process load the hot modules compiled with mypyc when the build is
current (``ingest/compiled.py``; the table says which).

* limits: our decode alone (``decode_payload``, and the worker's whole pure half,
  ``MessageProcessor.process``), rows into ILP buffers alone, QuestDB accepting pre-built rows
  alone (flush returned, and all rows visible), the broker delivering to one ``mosquitto_sub``;
* end to end per worker, from the first PUBLISH to the last row visible in QuestDB (WAL
  tables with DEDUP, ``cairo.commit.mode=sync``): the live shape (every appliance once a
  second, 3-10 metrics a message, every 40th in alarm with 50) in messages/s and the replay
  shape (500 historical metrics a message) in metrics/s; with ``--workers N`` also N workers
  sharing the sites by static partition;
* latency at a paced 50,000 metrics/s: sample timestamp = send time; the bench polls
  ``count()`` every 50 ms and charges each row the time from its send to the first poll
  that saw it (an upper bound, at most one poll period above the truth);
* the naive baseline: one JSON document per sample and one ``INSERT`` per row over PGWire.

Usage: ``python bench/ingest_bench.py [--quick] [--json] [--workers N]`` from the repository
root. ``--quick`` runs small loads in well under a minute (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import compiled  # noqa: E402

# Before anything imports the hot modules (ingest_load imports the codec): the limits
# measured in this process (decode, process, ILP rows) run the code the worker runs,
# compiled when its build is current.
CODE = compiled.activate()

import _common as common  # noqa: E402
from ingest_load import (  # noqa: E402
    DATATYPES,
    NODES_PER_SITE,
    Load,
    live_shape,
    naive_samples,
    publish_packet,
    replay_shape,
    site_of,
    write_frames,
)

from core.sparkplug import decode_payload  # noqa: E402
from core.tables import TableSet  # noqa: E402
from harness import Mosquitto, QuestDB, locate  # noqa: E402
from harness.derrick import ingest_process  # noqa: E402
from harness.ports import allocate_port  # noqa: E402
from harness.process import ManagedProcess  # noqa: E402
from ingest.host import create_tables  # noqa: E402
from ingest.pipeline import MessageProcessor  # noqa: E402
from ingest.writer import QuestDBWriter, RowSet  # noqa: E402

LOAD = str(ROOT / "bench" / "ingest_load.py")
Result = dict[str, Any]


class Bench:
    def __init__(self, base: Path, mosquitto: Mosquitto, questdb: QuestDB, quick: bool) -> None:
        self.base = base
        self.mq = mosquitto
        self.qdb = questdb
        self.quick = quick
        self.metrics_ports: dict[str, int] = {}  # worker process name -> metrics port

    # -- helpers --------------------------------------------------------------------------

    def prefix(self, what: str) -> str:
        return f"b{uuid.uuid4().hex[:6]}_{what}_"

    def count(self, table: str) -> int:
        try:
            return int(self.qdb.exec_sql(f"SELECT count() FROM {table}")["dataset"][0][0])
        except Exception:
            return -1

    def wait_count(self, table: str, expected: int, *, stall_s: float = 30.0) -> tuple[int, int]:
        """Poll until ``table`` holds ``expected`` rows; (rows, epoch ns of the poll that saw
        them). Gives up when the count has not moved for ``stall_s``."""
        last, moved = -1, time.monotonic()
        while True:
            n = self.count(table)
            now = time.time_ns()
            if n >= expected:
                return n, now
            if n != last:
                last, moved = n, time.monotonic()
            elif time.monotonic() - moved > stall_s:
                return n, now
            time.sleep(0.05)

    def load_process(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, LOAD, name, "--port", str(self.mq.port), *args],
            capture_output=True,
            text=True,
            check=True,
        )

    def blast(self, frames: Path) -> dict[str, int]:
        out = self.load_process("blast", "--frames", str(frames))
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    def shed(self, procs: Sequence[ManagedProcess]) -> int:
        """Data messages the workers did not take because QuestDB lagged (their memory bound,
        ``max_pending_rows``): not acknowledged, so an edge would send them again; this load
        generator does not, so a run with any is incomplete."""
        total = 0
        for p in procs:
            url = f"http://127.0.0.1:{self.metrics_ports[p.name]}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                for line in response.read().decode().splitlines():
                    if line.startswith("derrick_ingest_shed_messages_total "):
                        total += int(float(line.split()[1]))
        return total

    def workers(self, prefix: str, groups: Sequence[Sequence[str]]) -> list[ManagedProcess]:
        procs = []
        for i, g in enumerate(groups):
            port = allocate_port()
            p = ingest_process(
                self.base / f"{prefix}w{i}",
                mqtt_port=self.mq.port,
                ilp_conf=self.qdb.ilp_conf,
                pg_dsn=self.qdb.pg_dsn,
                table_prefix=prefix,
                worker=f"w{i}",
                groups=g,
                extra=f"\n[metrics]\nport = {port}",
            )
            self.metrics_ports[p.name] = port
            p.start()
            procs.append(p)
        tables = TableSet(prefix)
        deadline = time.monotonic() + 60
        while self.count(tables.raw.name) < 0 or self.count(tables.catalogue.name) < 0:
            if time.monotonic() > deadline or not all(p.running for p in procs):
                raise RuntimeError(f"ingest did not start: {procs[0].log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(1.0)  # subscriptions follow the table creation
        return procs

    # -- limits ---------------------------------------------------------------------------

    def limit_decode(self, load: Load) -> tuple[Result, Result]:
        data = [(t, p) for t, p in load.data]
        metrics = load.metrics
        start = time.process_time_ns()
        for _, payload in data:
            decode_payload(payload, DATATYPES)
        decode_s = (time.process_time_ns() - start) / 1e9
        processor = MessageProcessor(
            primary_host_id="derrick", clock=lambda: time.time_ns() // 1_000_000,
            max_payload_bytes=1 << 24,
        )  # fmt: skip
        for topic, payload in load.births:
            processor.process(topic, payload)
        start = time.process_time_ns()
        for topic, payload in data:
            processor.process(topic, payload)
        process_s = (time.process_time_ns() - start) / 1e9
        return (
            rate(f"decode_payload alone ({load.name})", len(data), metrics, decode_s),
            rate(f"MessageProcessor.process alone ({load.name})", len(data), metrics, process_s),
        )

    def limit_questdb(self, load: Load) -> tuple[Result, Result]:
        """Rows built first (not timed except as their own line), then flushed and counted."""
        prefix = self.prefix("qdb")
        tables = TableSet(prefix)
        create_tables(self.qdb.pg_dsn, tables)
        writer = QuestDBWriter(self.qdb.ilp_conf, tables)
        writer.open()
        processor = MessageProcessor(
            primary_host_id="derrick", clock=lambda: time.time_ns() // 1_000_000,
            max_payload_bytes=1 << 24,
        )  # fmt: skip
        for topic, payload in load.births:
            processor.process(topic, payload)
        outcomes = [processor.process(t, p).numeric for t, p in load.data]
        sets: list[RowSet] = []
        current = writer.new_row_set()
        start = time.process_time_ns()
        for rows in outcomes:
            current.add_numeric(rows)
            if current.rows >= 50_000:
                sets.append(current)
                current = writer.new_row_set()
        build_s = (time.process_time_ns() - start) / 1e9
        sets.append(current)
        t0 = time.time_ns()
        for rs in sets:
            writer.flush(rs)
        accepted_ns = time.time_ns()
        writer.close()
        rows, seen_ns = self.wait_count(tables.raw.name, load.metrics)
        msgs = len(load.data)
        build = rate("rows into ILP buffers alone (RowSet)", msgs, load.metrics, build_s)
        accept = rate(
            "QuestDB accepting pre-built rows alone (flush returned)",
            msgs, load.metrics, (accepted_ns - t0) / 1e9,
        )  # fmt: skip
        accept["visible_per_s"] = rows / ((seen_ns - t0) / 1e9)
        accept["rows_visible"] = rows
        return build, accept

    def limit_broker(self, load: Load) -> Result:
        frames = self.base / "broker.frames"
        write_frames(frames, load.data)
        sub = subprocess.Popen(
            [str(mosquitto_sub()), "-p", str(self.mq.port), "-t", "spBv1.0/#", "-q", "0",
             "-C", str(len(load.data)), "-W", "120"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        sent = self.blast(frames)
        sub.wait(150)
        end = time.time_ns()
        result = rate(
            "broker -> one mosquitto_sub alone",
            len(load.data), load.metrics, (end - sent["start_ns"]) / 1e9,
        )  # fmt: skip
        result["complete"] = sub.returncode == 0
        return result

    def receive_path(self, load: Load, client: str) -> Result:
        """One Python subscriber (the worker's connection, aiomqtt, or paho's own loop)
        receiving alone."""
        frames = self.base / "broker.frames"
        write_frames(frames, load.data)
        sub = subprocess.Popen(
            [sys.executable, LOAD, "subscriber", "--port", str(self.mq.port), "--client", client,
             "--expected", str(len(load.data))],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert sub.stdout is not None
        sub.stdout.readline()  # "subscribed"
        sent = self.blast(frames)
        try:
            report = json.loads(sub.stdout.read().strip().splitlines()[-1])
        finally:
            sub.wait(150)
        result = rate(
            f"{client} subscriber receiving alone (no decode)",
            len(load.data), load.metrics, (report["end_ns"] - sent["start_ns"]) / 1e9,
        )  # fmt: skip
        result["cpu_us_per_msg"] = report["cpu_s"] / len(load.data) * 1e6
        result["complete"] = report["n"] == len(load.data)
        return result

    # -- end to end -----------------------------------------------------------------------

    def end_to_end(self, load: Load, n_workers: int = 1) -> Result:
        prefix = self.prefix(load.name)
        tables = TableSet(prefix)
        sites = load.sites()
        groups = [sites[i::n_workers] for i in range(n_workers)] if n_workers > 1 else [["+"]]
        procs = self.workers(prefix, groups)
        try:
            births = self.base / f"{prefix}births.frames"
            write_frames(births, load.births)
            self.blast(births)
            self.wait_count(tables.catalogue.name, load.catalogue, stall_s=20)
            cpu0 = [cpu_s(p.pid) for p in procs]
            frames = self.base / f"{prefix}data.frames"
            write_frames(frames, load.data)
            sent = self.blast(frames)
            rows, seen_ns = self.wait_count(tables.raw.name, load.metrics)
            cpu = sum(cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
            rss = max(peak_rss_mib(p.pid) for p in procs)
            alive = all(p.running for p in procs)
            shed = self.shed(procs)
        finally:
            for p in procs:
                p.stop()
        what = f"end to end, {load.name} shape, {n_workers} worker{'s' if n_workers > 1 else ''}"
        result = rate(what, len(load.data), load.metrics, (seen_ns - sent["start_ns"]) / 1e9)
        result.update(
            rows_stored=rows,
            complete=rows == load.metrics and alive,
            publish_s=(sent["end_ns"] - sent["start_ns"]) / 1e9,
            worker_cpu_us_per_msg=cpu / len(load.data) * 1e6,
            worker_peak_rss_mib=rss,
            workers=n_workers,
            shed_messages=shed,
        )
        return result

    def latency(self, nodes: int, rate_per_s: float, seconds: float, n_workers: int = 1) -> Result:
        """Sample to queryable at ``rate_per_s`` offered, with ``n_workers`` sharing the sites
        (a static partition, as ``end_to_end``)."""
        prefix = self.prefix("lat")
        tables = TableSet(prefix)
        sites = [site_of(n) for n in range(0, nodes, NODES_PER_SITE)]
        groups = [sites[i::n_workers] for i in range(n_workers)] if n_workers > 1 else [["+"]]
        procs = self.workers(prefix, groups)
        out = self.base / f"{prefix}paced.json"
        try:
            pacer = subprocess.Popen(
                [sys.executable, LOAD, "paced", "--port", str(self.mq.port), "--nodes",
                 str(nodes), "--rate", str(rate_per_s), "--seconds", str(seconds),
                 "--out", str(out)],
            )  # fmt: skip
            polls: list[tuple[int, int]] = []
            while pacer.poll() is None:
                n = self.count(tables.raw.name)
                polls.append((time.time_ns(), n))
                time.sleep(0.05)
            sent = json.loads(out.read_text())
            n, seen = self.wait_count(tables.raw.name, sent["metrics"], stall_s=10)
            polls.append((seen, n))
            received = self.qdb.exec_sql(
                f"SELECT approx_percentile(received::long - ts::long / 1000, 0.5, 3),"
                f" approx_percentile(received::long - ts::long / 1000, 0.99, 3)"
                f" FROM {tables.raw.name}"
            )["dataset"][0]
            rss = max(peak_rss_mib(p.pid) for p in procs)
            shed = self.shed(procs)
        finally:
            for p in procs:
                p.stop()
        lat = row_latencies(sent["log"], polls)
        workers = f", {n_workers} workers" if n_workers > 1 else ""
        return {
            "what": f"latency, sample -> visible in QuestDB at {rate_per_s:,.0f} metrics/s"
            + workers,
            "workers": n_workers,
            "metrics": sent["metrics"],
            "rows_stored": n,
            "complete": n == sent["metrics"],
            "shed_messages": shed,
            "per_s": rate_per_s,
            "p50_ms": percentile(lat, 0.5),
            "p99_ms": percentile(lat, 0.99),
            "max_ms": max((ms for ms, _ in lat), default=float("nan")),
            "to_worker_p50_ms": None if received[0] is None else received[0] / 1000,
            "to_worker_p99_ms": None if received[1] is None else received[1] / 1000,
            "worker_peak_rss_mib": rss,
            "generator_late_start_ms": sent["late_start_ms"],
            "generator_max_lag_ms": sent["max_lag_ms"],
        }

    def naive(self, load: Load, samples: int) -> Result:
        prefix = self.prefix("naive")
        tables = TableSet(prefix)
        create_tables(self.qdb.pg_dsn, tables)
        docs = naive_samples(load, samples)
        frames = self.base / "naive.frames"
        frames.write_bytes(
            b"".join(publish_packet(f"naive/{i % 100}", d) for i, d in enumerate(docs))
        )
        consumer = subprocess.Popen(
            [sys.executable, LOAD, "naive-consumer", "--port", str(self.mq.port), "--pg-dsn",
             self.qdb.pg_dsn, "--table", tables.raw.name, "--expected", str(len(docs))],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert consumer.stdout is not None
        consumer.stdout.readline()  # "subscribed"
        sent = self.blast(frames)
        report = json.loads(consumer.stdout.read().strip().splitlines()[-1])
        consumer.wait(60)
        rows, seen_ns = self.wait_count(tables.raw.name, len(docs), stall_s=10)
        result = rate(
            "naive baseline: JSON per sample, INSERT per row (PGWire)",
            len(docs), len(docs), (seen_ns - sent["start_ns"]) / 1e9,
        )  # fmt: skip
        result["rows_stored"] = rows
        result["complete"] = rows == len(docs)
        result["consumer_end_per_s"] = len(docs) / ((report["end_ns"] - sent["start_ns"]) / 1e9)
        return result


# -- measurements -----------------------------------------------------------------------------


def rate(what: str, messages: int, metrics: int, seconds: float) -> Result:
    return {
        "what": what,
        "messages": messages,
        "metrics": metrics,
        "seconds": seconds,
        "messages_per_s": messages / seconds,
        "metrics_per_s": metrics / seconds,
    }


def cpu_s(pid: int | None) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int | None) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def row_latencies(log: list[list[int]], polls: list[tuple[int, int]]) -> list[tuple[float, int]]:
    """(latency ms, rows) for every span of rows that a poll first saw: the time from each
    row's sample time (the earliest of its batch, ``paced``) to that poll."""
    out: list[tuple[float, int]] = []
    seen = 0
    i = 0
    for poll_ns, count in polls:
        if count <= seen:
            continue
        while seen < count and i < len(log):
            send_ns, cumulative = log[i]
            upto = min(cumulative, count)
            if upto > seen:
                out.append(((poll_ns - send_ns) / 1e6, upto - seen))
                seen = upto
            if cumulative <= count:
                i += 1
            else:
                break
    return out


def percentile(weighted: list[tuple[float, int]], q: float) -> float:
    if not weighted:
        return float("nan")
    items = sorted(weighted)
    total = sum(w for _, w in items)
    acc = 0
    for value, w in items:
        acc += w
        if acc >= q * total:
            return value
    return items[-1][0]


def mosquitto_sub() -> Path:
    return locate.mosquitto_binary().parent.parent / "bin" / "mosquitto_sub"


def machine(questdb: QuestDB) -> dict[str, Any]:
    try:
        build = questdb.exec_sql("SELECT build()")["dataset"][0][0]
    except Exception as exc:
        build = f"unknown ({exc})"
    mosq = subprocess.run(
        [str(locate.mosquitto_binary()), "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return common.machine(questdb=build, mosquitto=mosq[0] if mosq else "unknown")


def with_fractions(report: Result) -> None:
    """Each end-to-end figure as a fraction of the slowest limit for its shape."""
    for shape, e2e_keys in (("live", ("live", "live_workers")), ("replay", ("replay",))):
        limits = report["limits"][shape]
        # the worker's own stages (process, ilp_rows, its MQTT client) are not limits of the
        # system around it
        outside = [limits[k] for k in ("decode", "questdb", "broker")]
        slowest = min(outside, key=lambda r: r["metrics_per_s"])
        report["limits"][shape + "_slowest"] = slowest["what"]
        for key in e2e_keys:
            if key in report["end_to_end"]:
                r = report["end_to_end"][key]
                r["fraction_of_slowest_limit"] = r["metrics_per_s"] / slowest["metrics_per_s"]


def run(args: argparse.Namespace) -> Result:
    quick = args.quick
    now = time.time_ns() // 1_000_000
    t0 = now - 6 * 3_600_000  # a few hours back: inside the timestamp window, off "now"
    # 60 s of 2,000 appliances (120,000 messages): a throughput window of several seconds, so
    # that the last flush interval and QuestDB's WAL apply (~0.4 s) do not dominate it (with
    # 15 s they were a quarter of a 1.6 s window)
    live_nodes, live_s = (200, 3) if quick else (2000, 60)
    live = live_shape(live_nodes, live_s, t0)
    replay = replay_shape(5, 20, t0) if quick else replay_shape(40, 1000, t0)
    report: Result = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": quick}
    report["load_average_start"] = os.getloadavg()
    report["code"] = CODE.describe()
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        base = Path(tmp)
        with Mosquitto(base / "mosquitto") as mq, QuestDB(base / "questdb") as qdb:
            bench = Bench(base, mq, qdb, quick)
            report["machine"] = machine(qdb)
            report["shapes"] = {
                load.name: {
                    "nodes": len(load.births) // 2,
                    "messages": len(load.data),
                    "metrics": load.metrics,
                    "metrics_per_message": load.metrics / len(load.data),
                    "bytes_per_message": sum(len(p) for _, p in load.data) / len(load.data),
                }
                for load in (live, replay)
            }
            limits: dict[str, dict[str, Result]] = {}
            for load in (live, replay):
                step(f"limits, {load.name}")
                decode, process = bench.limit_decode(load)
                build, accept = bench.limit_questdb(load)
                broker = bench.limit_broker(load)
                limits[load.name] = {
                    "decode": decode, "process": process, "ilp_rows": build,
                    "questdb": accept, "broker": broker,
                }  # fmt: skip
                if load.name == "live":
                    for client in ("worker", "aiomqtt", "paho"):
                        limits["live"][client] = bench.receive_path(load, client)
            report["limits"] = limits
            e2e: dict[str, Result] = {}
            step("end to end, live")
            e2e["live"] = bench.end_to_end(live)
            step("end to end, replay")
            e2e["replay"] = bench.end_to_end(replay)
            if args.workers > 1:
                step(f"end to end, live, {args.workers} workers")
                e2e["live_workers"] = bench.end_to_end(live, args.workers)
            report["end_to_end"] = e2e
            step("latency")
            report["latency"] = (
                bench.latency(live_nodes, 5000, 3, args.latency_workers)
                if quick
                else bench.latency(
                    live_nodes, args.latency_rate, args.latency_seconds, args.latency_workers
                )
            )
            step("naive baseline")
            report["naive"] = bench.naive(live, 200 if quick else 5000)
    report["naive"]["ratio_live_metrics_per_s"] = (
        e2e["live"]["metrics_per_s"] / report["naive"]["metrics_per_s"]
    )
    with_fractions(report)
    report["load_average_end"] = os.getloadavg()
    report["bench_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


step = common.step


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "–" if value is None or value != value else format(value, spec)


def incomplete(row: Result, sent: int) -> None:
    """A line under a run that did not store everything it was sent, saying why if known."""
    if row.get("complete", True):
        return
    stored = row.get("rows_stored")
    shed = row.get("shed_messages")
    why = (
        f"{shed:,} messages shed by the workers' memory bound while QuestDB lagged (an edge "
        "re-sends them; this generator does not), so the rate above includes the wait for them"
        if shed
        else "no message shed: lost between the generator and the worker"
    )
    missing = "?" if stored is None else f"{sent - stored:,}"
    print(f"  INCOMPLETE: {missing} of {sent:,} metrics not stored; {why}")


def print_table(r: Result) -> None:
    m = r["machine"]
    print(f"{m['cpu']}, {m['cores']} cores; Python {m['python']}; QuestDB {m['questdb']}; "
          f"{m['mosquitto']}")  # fmt: skip
    print(f"load average start {r['load_average_start']}, end {r['load_average_end']}")
    print(f"worker and in-process limits: {r['code']}")
    for name, s in r["shapes"].items():
        print(f"{name} shape: {s['nodes']} nodes, {s['messages']:,} messages, "
              f"{s['metrics']:,} metrics ({s['metrics_per_message']:.1f}/msg, "
              f"{s['bytes_per_message']:.0f} B/msg)")  # fmt: skip
    head = f"{'what':<62} {'how many':>10} {'msg/s':>9} {'metrics/s':>10} {'p50':>7} {'p99':>7} {'RSS':>5} {'frac':>5}"  # noqa: E501
    print(head)
    rows: list[Result] = []
    for shape in ("live", "replay"):
        rows += list(r["limits"][shape].values())
    rows += list(r["end_to_end"].values())
    for row in rows:
        print(
            f"{row['what'][:62]:<62} {row['messages']:>10,} {fmt(row['messages_per_s']):>9}"
            f" {fmt(row['metrics_per_s']):>10} {'':>7} {'':>7}"
            f" {fmt(row.get('worker_peak_rss_mib')):>5}"
            f" {fmt(row.get('fraction_of_slowest_limit'), '.2f'):>5}"
        )
        incomplete(row, row["metrics"])
    lat = r["latency"]
    print(
        f"{lat['what'][:62]:<62} {lat['metrics']:>10,} {'':>9} {fmt(lat['per_s']):>10}"
        f" {fmt(lat['p50_ms'])}ms {fmt(lat['p99_ms'])}ms {fmt(lat['worker_peak_rss_mib']):>5}"
    )
    print(f"  of which publish -> worker buffered: p50 {fmt(lat['to_worker_p50_ms'])} ms, "
          f"p99 {fmt(lat['to_worker_p99_ms'])} ms")  # fmt: skip
    incomplete(lat, lat["metrics"])
    nv = r["naive"]
    print(
        f"{nv['what'][:62]:<62} {nv['metrics']:>10,} {fmt(nv['messages_per_s']):>9}"
        f" {fmt(nv['metrics_per_s']):>10}   (end to end live is "
        f"{nv['ratio_live_metrics_per_s']:.0f}x)"
    )
    print(f"slowest limit: live {r['limits']['live_slowest']}; "
          f"replay {r['limits']['replay_slowest']}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small loads, < 60 s in all")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--workers", type=int, default=2, help="N for the N-worker run (1: skip)")
    parser.add_argument("--latency-rate", type=float, default=50_000.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--latency-workers", type=int,
        help="workers sharing the sites during the latency run (default: --workers)",
    )  # fmt: skip
    parser.add_argument("--save", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args()
    if args.latency_workers is None:
        args.latency_workers = max(1, args.workers)
    if args.quick:
        args.workers = 1
    report = run(args)
    if args.save:
        args.save.write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
