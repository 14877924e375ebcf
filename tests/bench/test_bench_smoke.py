"""The ingest (``--quick``) and API (``--rows small``) benchmarks run and report every figure
docs/benchmarks.md quotes.

Shape only: a smoke test on a shared machine asserts no timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_ingest_bench_quick_json_has_every_figure() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ingest_bench.py"),
            "--quick",
            "--json",
            "--latency-workers",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert {"machine", "shapes", "limits", "end_to_end", "latency", "naive"} <= report.keys()
    assert {"cpu", "cores", "python", "questdb", "mosquitto"} <= report["machine"].keys()
    # the in-process limits run the worker's code: compiled (tests/conftest.py built it)
    assert report["code"].startswith("compiled modules from "), report["code"]
    for shape in ("live", "replay"):
        limits = report["limits"][shape]
        assert {"decode", "process", "ilp_rows", "questdb", "broker"} <= limits.keys()
        for result in limits.values():
            assert result["messages_per_s"] > 0 and result["metrics_per_s"] > 0
        e2e = report["end_to_end"][shape]
        assert e2e["complete"] and e2e["shed_messages"] == 0, e2e
        assert e2e["fraction_of_slowest_limit"] > 0
        assert e2e["worker_peak_rss_mib"] > 0
    for client in ("worker", "aiomqtt", "paho"):  # every message reached each subscriber
        assert report["limits"]["live"][client]["complete"], report["limits"]["live"][client]
    latency = report["latency"]
    assert latency["complete"] and latency["p50_ms"] <= latency["p99_ms"]
    assert latency["shed_messages"] == 0, latency
    assert latency["workers"] == 2, latency
    naive = report["naive"]
    assert naive["complete"] and naive["ratio_live_metrics_per_s"] > 0


@pytest.mark.timeout(300)
def test_api_bench_small_json_has_every_figure() -> None:
    bench = str(ROOT / "bench" / "api_bench.py")
    done = subprocess.run(
        [sys.executable, bench, "--rows", "small", "--json", "--seconds", "0.5", "--clients", "4"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert {"cpu", "cores", "python", "questdb", "loadavg"} <= report["machine"].keys()
    load = report["load"]
    assert load["raw_rows"] == 2 * 16 * 3600 and load["load_s"] > 0
    assert load["views_ready_s"] >= load["load_s"]
    names = [e["what"] for e in report["endpoints"]]
    assert names == [
        "site current values",
        "appliance current values",
        "24 h series, 1-minute buckets",
        "30 days of daily aggregates",
        "month vs same month last year",
        "KPIs (current + today)",
    ]
    for e in report["endpoints"]:
        for path in ("api", "questdb"):
            r = e[path]
            assert r["requests"] > 0 and r["errors"] == 0, (e["what"], path, r)
            assert r["p50_ms"] <= r["p99_ms"], (e["what"], path, r)
            assert r["rows_per_response"] > 0, (e["what"], path, r)
        assert e["plan"], e["what"]
    # the site's 2 appliances x 16 sensors; an hour of 1-minute buckets
    current, _, series, daily, _, _ = report["endpoints"]
    assert current["api"]["rows_per_response"] == current["questdb"]["rows_per_response"] == 32
    assert series["api"]["rows_per_response"] in (60, 61)
    assert daily["api"]["rows_per_response"] in (1, 2)


@pytest.mark.timeout(600)
def test_cold_bench_quick_json_has_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cold_bench.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    archive, night = report["archive"], report["nightly"]
    assert archive["ingest_cpu_us_per_msg"] > 0 and archive["append_cpu_us_per_msg"] > 0
    assert archive["commit_wall_us_per_msg_p50"] > 0 and archive["archive_bytes_per_msg"] > 0
    assert night["rows"] > 0 and night["job_s"] > 0 and night["parquet_bytes_per_value"] > 0
    assert {"tables", "rollups", "completeness", "export", "retention"} <= night["steps_s"].keys()
