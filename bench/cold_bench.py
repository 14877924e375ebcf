"""Cold path benchmark: audit archive cost per message, nightly job time, Parquet bytes/value.

1. *Archive overhead*: the ingest bench's live shape (``bench/ingest_load.py``), per message,
   one core, process CPU: the worker's pure half plus its ILP rows (``MessageProcessor.process``
   + ``RowSet.add_numeric``) against ``AuditArchive.append`` alone, and the group commit
   (write + SHA-256 + fsync) of one flush cycle's messages (100 ms of the live load at the
   20,000 msg/s target = 2,000 messages) in wall time, amortized per message.
2. *Nightly job*: a synthetic day of N appliances at 2.43 values/s each (21 M rows a day for
   100 appliances), written to a real QuestDB, then ``NightlyJob.run`` (rollups, completeness,
   Parquet export and verification, TTL) timed per step; extrapolated linearly to 100
   appliances (the steps scan and export per site, hour and series: linear in rows).
3. *Parquet bytes per value*: the archived file sizes over the rows.

Usage: ``python bench/cold_bench.py [--quick] [--json] [--appliances N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_load import live_shape  # noqa: E402
from questdb import Sender, TimestampMicros, TimestampNanos  # noqa: E402

from cold.config import parse_config  # noqa: E402
from cold.nightly import NightlyJob  # noqa: E402
from cold.questdb import QuestDB as ColdQuestDB  # noqa: E402
from core.tables import TableSet  # noqa: E402
from harness import QuestDB  # noqa: E402
from ingest.audit import AuditArchive  # noqa: E402
from ingest.pipeline import MessageProcessor  # noqa: E402
from ingest.writer import QuestDBWriter  # noqa: E402

VALUES_PER_S = 21_000_000 / 86_400 / 100  # per appliance: 21 M rows a day for 100
METRICS = 12


def archive_overhead(base: Path, qdb: QuestDB, nodes: int, seconds: int) -> dict[str, Any]:
    load = live_shape(nodes, seconds, int(time.time() * 1000) - seconds * 1000)
    processor = MessageProcessor(
        primary_host_id="derrick",
        clock=lambda: time.time_ns() // 1_000_000,
        max_payload_bytes=1 << 24,
    )
    for topic, payload in load.births:
        processor.process(topic, payload)

    # rows are built into ILP buffers as the worker builds them (never sent)
    writer = QuestDBWriter(qdb.ilp_conf, TableSet("b_"))
    writer.open()
    row_set = writer.new_row_set()
    t0 = time.process_time_ns()
    for topic, payload in load.data:
        out = processor.process(topic, payload)
        row_set.add_numeric(out.numeric)
    ingest_ns = (time.process_time_ns() - t0) / len(load.data)
    writer.close()

    async def archive_run() -> tuple[float, float, list[float], int]:
        archive = AuditArchive(base / "chain")
        await archive.open()
        cycle = 2000  # messages per 100 ms flush cycle at 20,000 msg/s
        append_ns = 0
        commit_cpu_ns = 0
        commits: list[float] = []
        for i in range(0, len(load.data), cycle):
            part = load.data[i : i + cycle]
            t = time.process_time_ns()
            for topic, payload in part:
                archive.append(topic, payload)
            append_ns += time.process_time_ns() - t
            w, c = time.perf_counter(), time.process_time_ns()  # all threads' CPU
            await archive.commit()
            commit_cpu_ns += time.process_time_ns() - c
            commits.append((time.perf_counter() - w) / len(part))
        await archive.close()
        size = sum(p.stat().st_size for p in (base / "chain").glob("*.seg"))
        n = len(load.data)
        return append_ns / n, commit_cpu_ns / n, commits, size

    append_ns, commit_cpu_ns, commits, size = asyncio.run(archive_run())
    commit_ns = statistics.median(commits) * 1e9
    return {
        "messages": len(load.data),
        "metrics_per_message": load.metrics / len(load.data),
        "ingest_cpu_us_per_msg": ingest_ns / 1000,
        "append_cpu_us_per_msg": append_ns / 1000,
        "commit_cpu_us_per_msg": commit_cpu_ns / 1000,
        "commit_wall_us_per_msg_p50": commit_ns / 1000,
        "commit_wall_us_per_msg_p99": sorted(commits)[int(0.99 * (len(commits) - 1))] * 1e6,
        "overhead_cpu_fraction": (append_ns + commit_cpu_ns) / ingest_ns,
        "archive_bytes_per_msg": size / len(load.data),
    }


def write_day(qdb: QuestDB, tables: TableSet, day: datetime, appliances: int) -> int:
    for sql in tables.create_statements():
        qdb.exec_sql(sql)
    rng = random.Random(7)
    step_ns = int(1e9 * METRICS / VALUES_PER_S)  # each metric this often
    n = 0
    start_ns = int(day.timestamp()) * 1_000_000_000
    with Sender.from_conf(qdb.ilp_conf + "protocol_version=2;auto_flush_rows=50000;") as sender:
        for a in range(appliances):
            site, node = f"s{900 + a // 100}", f"s{900 + a // 100}-a{a:03d}"
            level = [rng.uniform(0, 100) for _ in range(METRICS)]
            t = start_ns + a * 1000
            while t < start_ns + 86_400 * 1_000_000_000:
                received = TimestampMicros((t + 400_000_000) // 1000)
                at = TimestampNanos(t)
                for m in range(METRICS):
                    level[m] += rng.gauss(0, 0.5)
                    symbols = {"site": site, "node": node, "device": "daq", "metric": f"M{m:02d}"}
                    columns = {"value": round(level[m], 3), "hot": m < 3, "historical": False,
                               "received": received}  # fmt: skip
                    sender.row(tables.raw.name, symbols=symbols, columns=columns, at=at)
                    n += 1
                t += step_ns
        sender.flush()
    return n


def nightly(base: Path, qdb: QuestDB, appliances: int) -> dict[str, Any]:
    tables = TableSet(f"n{uuid.uuid4().hex[:6]}_")
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    t = time.perf_counter()
    rows = write_day(qdb, tables, day, appliances)
    write_s = time.perf_counter() - t
    cfg = parse_config(
        f'[questdb]\ntable_prefix = "{tables.prefix}"\n'
        f'[archive]\naudit_directory = "{base / "audit"}"\n'
        f'parquet_uri = "{base / "parquet"}"\n'
        f'[nightly]\nstate_directory = "{base / "state"}"\nrecheck_days = 0\n'
    )
    db = ColdQuestDB(qdb.pg_dsn, qdb.http_url)
    try:
        db.wait_wal_applied(tables.raw.name, timeout_s=600)
        t = time.perf_counter()
        state = NightlyJob(cfg, db).run(day.date())
        job_s = time.perf_counter() - t
    finally:
        db.close()
    parquet = sum(p.stat().st_size for p in (base / "parquet").rglob("*.parquet"))
    steps = {k: v["seconds"] for k, v in state["done"].items()}
    return {
        "appliances": appliances,
        "rows": rows,
        "write_s": write_s,
        "job_s": job_s,
        "steps_s": steps,
        "rows_per_s": rows / job_s,
        "extrapolated_100_appliances_s": job_s * 21_000_000 / rows,
        "parquet_bytes": parquet,
        "parquet_bytes_per_value": parquet / rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny loads (smoke test)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--appliances", type=int, default=4)
    args = parser.parse_args()
    appliances = 1 if args.quick else args.appliances
    with tempfile.TemporaryDirectory(prefix="cold-bench-") as tmp:
        base = Path(tmp)
        with QuestDB(base / "questdb") as qdb:
            nodes, seconds = (200, 2) if args.quick else (2000, 10)
            overhead = archive_overhead(base, qdb, nodes, seconds)
            night = nightly(base, qdb, appliances)
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "archive": overhead,
        "nightly": night,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    o, n = overhead, night
    lines = [
        ("ingest pure half + ILP rows, CPU per message", f"{o['ingest_cpu_us_per_msg']:.1f} µs"),
        ("archive append, CPU per message", f"{o['append_cpu_us_per_msg']:.1f} µs"),
        ("archive group commit, CPU per message", f"{o['commit_cpu_us_per_msg']:.1f} µs"),
        ("  append + commit: fraction of ingest CPU", f"{o['overhead_cpu_fraction']:.3f}"),
        ("group commit (fsync), wall per message p50", f"{o['commit_wall_us_per_msg_p50']:.1f} µs"),
        ("group commit (fsync), wall per message p99", f"{o['commit_wall_us_per_msg_p99']:.1f} µs"),
        ("archive bytes per message", f"{o['archive_bytes_per_msg']:.0f}"),
        ("nightly: rows in the day", f"{n['rows']:,}"),
        ("nightly: job time", f"{n['job_s']:.1f} s"),
        *((f"  {step}", f"{sec:.1f} s") for step, sec in n["steps_s"].items()),
        ("nightly: rows per second", f"{n['rows_per_s']:,.0f}"),
        ("nightly: extrapolated to 21 M rows", f"{n['extrapolated_100_appliances_s']:.0f} s"),
        ("Parquet bytes per value", f"{n['parquet_bytes_per_value']:.2f}"),
    ]
    for what, value in lines:
        print(f"{what:50} {value:>16}")
    print(f"peak RSS {report['peak_rss_mib']:.0f} MiB, load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
