"""A synthetic day in real QuestDB for the cold-path tests, with the numbers it should give.

Two sites, three nodes, three metrics each sampled every 30 s (2 per minute) on device
``daq``, plus a node status metric on device ``''`` every 5 minutes (not a sensor reading).
``s101-a002`` is silent 10:00–10:30; ``s101-a001`` is in alarm 12:00–12:30 (its
``Derrick/Sampling Mode`` events) and ten of its samples travelled as historical; five of
``s102-a001``'s arrived two minutes late.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from questdb import Sender, TimestampMicros, TimestampNanos

from core.tables import TableSet
from harness import QuestDB

NODES = [("s101", "s101-a001"), ("s101", "s101-a002"), ("s102", "s102-a001")]
METRICS = [("WOB", True), ("RPM", True), ("TEMP", False)]
STEP_S = 30
GAP = (600, 630)  # minutes of the day, s101-a002
ALARM = (720, 750)  # minutes of the day, s101-a001
RATES = (6, 60)  # normal, alarm values per minute


def the_day() -> date:
    return datetime.now(UTC).date() - timedelta(days=2)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def ns(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


class World:
    """The rows written, by series, for assertions."""

    def __init__(self, questdb: QuestDB, prefix: str) -> None:
        self.questdb = questdb
        self.prefix = prefix
        self.tables = TableSet(prefix)
        self.day = the_day()
        self.values: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)

    def build(self) -> World:
        for sql in self.tables.create_statements():
            self.questdb.exec_sql(sql)
        start = day_start(self.day)
        raw, events, catalogue = (
            self.tables.raw.name,
            self.tables.events.name,
            self.tables.catalogue.name,
        )
        with Sender.from_conf(self.questdb.ilp_conf + "protocol_version=2;") as sender:
            for site, node in NODES:
                for metric, hot in METRICS:
                    sender.row(
                        catalogue,
                        symbols={"site": site, "node": node, "device": "daq", "metric": metric},
                        columns={"hot": hot},
                        at=TimestampMicros(ns(start - timedelta(days=1)) // 1000),
                    )
                historical_left = 10 if node == "s101-a001" else 0
                late_left = 5 if node == "s102-a001" else 0
                for i in range(86_400 // STEP_S):
                    ts = start + timedelta(seconds=i * STEP_S)
                    minute = i * STEP_S // 60
                    if node == "s101-a002" and GAP[0] <= minute < GAP[1]:
                        continue
                    for k, (metric, hot) in enumerate(METRICS):
                        value = round(100 * k + (i % 97) * 0.25 + len(node) * 0.001, 6)
                        historical = historical_left > 0 and k == 0
                        late = late_left > 0 and k == 0 and not historical
                        received = ts + timedelta(seconds=120 if late or historical else 0.5)
                        historical_left -= historical
                        late_left -= late
                        sender.row(
                            raw,
                            symbols={"site": site, "node": node, "device": "daq", "metric": metric},
                            columns={
                                "value": value,
                                "hot": hot,
                                "historical": historical,
                                "received": TimestampMicros(ns(received) // 1000),
                            },
                            at=TimestampNanos(ns(ts) + 123),
                        )
                        self.values[(site, node, "daq", metric)].append(value)
                    if i % 10 == 0:
                        sender.row(
                            raw,
                            symbols={
                                "site": site,
                                "node": node,
                                "device": "",
                                "metric": "Derrick/Queue Depth",
                            },
                            columns={
                                "value": float(i),
                                "hot": False,
                                "historical": False,
                                "received": TimestampMicros(ns(ts) // 1000),
                            },
                            at=TimestampNanos(ns(ts)),
                        )
                        self.values[(site, node, "", "Derrick/Queue Depth")].append(float(i))
                if node == "s101-a001":
                    for at, mode in (
                        (start - timedelta(hours=1), "normal"),
                        (start + timedelta(minutes=ALARM[0]), "alarm"),
                        (start + timedelta(minutes=ALARM[1]), "normal"),
                    ):
                        sender.row(
                            events,
                            symbols={
                                "site": site,
                                "node": node,
                                "device": "",
                                "metric": "Derrick/Sampling Mode",
                                "datatype": "String",
                            },
                            columns={
                                "value": mode,
                                "historical": False,
                                "received": TimestampMicros(ns(at) // 1000),
                            },
                            at=TimestampNanos(ns(at)),
                        )
            sender.flush()
        for table in (raw, events, catalogue):
            self.wait_applied(table)
        return self

    def wait_applied(self, table: str) -> None:
        import time  # noqa: PLC0415

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = self.questdb.exec_sql(
                f"SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = '{table}'"
            )["dataset"]
            if rows and rows[0][0] >= rows[0][1]:
                return
            time.sleep(0.2)
        raise AssertionError(f"WAL of {table} not applied")

    def config(
        self,
        tmp: Path,
        archive: Path,
        audit: Path | None = None,
        *,
        s3: tuple[str, str] | None = None,
    ) -> Path:
        """The cold job's configuration; ``s3`` = (``s3://bucket/prefix``, endpoint) archives
        there instead of the local directory ``archive`` (whose name still names the file)."""
        path = tmp / f"cold-{archive.name}.toml"
        where = [f'parquet_uri = "{archive}"'] if s3 is None else [
            f'parquet_uri = "{s3[0]}"', f's3_endpoint = "{s3[1]}"', 's3_region = "us-east-1"'
        ]  # fmt: skip
        path.write_text(
            "\n".join(
                [
                    "[questdb]",
                    f'table_prefix = "{self.prefix}"',
                    "[archive]",
                    f'audit_directory = "{audit or tmp / "audit"}"',
                    *where,
                    "[nightly]",
                    f'state_directory = "{tmp / ("state-" + archive.name)}"',
                    "recheck_days = 1",
                    f'metrics_textfile = "{tmp / ("metrics-" + archive.name) / "cold.prom"}"',
                    "[completeness.default]",
                    f"normal_per_min = {RATES[0]}",
                    f"alarm_per_min = {RATES[1]}",
                    "",
                ]
            )
        )
        return path


def cold_env(questdb: QuestDB) -> dict[str, str]:
    env = dict(os.environ)
    env["DERRICK_QUESTDB_PG"] = questdb.pg_dsn
    env["DERRICK_QUESTDB_HTTP"] = questdb.http_url
    env["DERRICK_QUESTDB_ILP"] = questdb.ilp_conf
    return env


def cold_cli(
    questdb: QuestDB, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cold", *args],
        env=cold_env(questdb),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
