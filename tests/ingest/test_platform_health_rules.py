"""The Platform Health dashboard and alert rules name only series that exist: the ingest
series as a real worker's collector exposes them, the QuestDB series as real QuestDB 9.3.4
exposes them on its /metrics, the nightly job's as its textfile holds them."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cold.nightly import write_metrics
from harness import QuestDB
from ingest.metrics import IngestCollector
from ingest.nodes import NodeState

pytestmark = [pytest.mark.integration]

GRAFANA = Path(__file__).resolve().parents[2] / "api" / "grafana"
RULES = GRAFANA / "alerts" / "platform-health.rules.yml"
DASHBOARD = GRAFANA / "platform" / "platform-health.json"
EXTERNAL = {"up"}  # Prometheus's own
PROMQL_WORDS = {
    "sum", "by", "rate", "and", "or", "max", "count", "increase", "time", "vector",
    "instance", "reason", "group", "job", "without", "on",
}  # fmt: skip


class _World:
    def __init__(self) -> None:
        node = NodeState("s001", "s001-a001")
        node.last_ack_ms = 0
        self._nodes = [node]

    def counters(self) -> dict[str, int]:
        return {"messages": 3, "dead_letters.malformed payload": 1}

    def nodes(self) -> list[NodeState]:
        return self._nodes

    def online(self) -> bool:
        return True

    def pending_rows(self) -> int:
        return 0


def _names(text: str) -> set[str]:
    out = set()
    for family in text_string_to_metric_families(text):
        out |= {s.name for s in family.samples}
    return out


def _metrics_in(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\([^()]*\)\s*(?=\()", "", expr)  # by (...) before an argument list
    words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", expr))
    return {w for w in words if w not in PROMQL_WORDS}


def _exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    return exprs


def test_rules_and_dashboard_name_only_existing_series(questdb: QuestDB, tmp_path: Path) -> None:
    write_metrics(tmp_path / "cold.prom", dt.date(2026, 1, 2), 12.5)
    cold_names = _names((tmp_path / "cold.prom").read_text())
    registry = CollectorRegistry()
    registry.register(IngestCollector(_World(), clock_ms=lambda: 5000))
    ingest_names = _names(generate_latest(registry).decode())
    url = f"http://127.0.0.1:{questdb.http_min_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    # QuestDB 9.3.4 writes `null` for some values (a strict parser rejects the page): take
    # the names from the lines themselves
    questdb_names = {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    known = ingest_names | questdb_names | cold_names | EXTERNAL
    for expr in _exprs():
        unknown = _metrics_in(expr) - known
        assert not unknown, f"{expr!r} names unknown series {sorted(unknown)}"
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "QuestDBSuspendedTable", "QuestDBWalApplyLag", "IngestNotAcknowledging",
        "NodesSilent", "NightlyJobLate",
    } <= alerts  # fmt: skip
    assert json.loads(DASHBOARD.read_text())["title"] == "Platform Health"
