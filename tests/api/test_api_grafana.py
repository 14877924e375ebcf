"""The Grafana provisioning: every dashboard panel and template variable query, its macros
expanded as the QuestDB plugin does, returns rows from real QuestDB holding the test world."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.tables import TableSet
from harness import QuestDB

from . import world as w

pytestmark = [pytest.mark.integration]

GRAFANA = Path(__file__).resolve().parents[2] / "api" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
CHOICE = {"site": "s201", "appliance": "s201-a001", "metric": "ROP"}


def _us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def expand(
    sql: str,
    tables: TableSet,
    start: dt.datetime,
    end: dt.datetime,
    constants: dict[str, str] | None = None,
) -> str:
    """The plugin's macros (``$__timeFilter``, ``$__fromTime``/``$__toTime``,
    ``$__sampleByInterval``), the template variables (the query ones as CHOICE, the
    dashboard's ``constants`` as they are), and the test's table prefix."""
    lo, hi = f"cast({_us(start)} as timestamp)", f"cast({_us(end)} as timestamp)"
    sql = re.sub(r"\$__timeFilter\((\w+)\)", lambda m: f"{m[1]} >= {lo} AND {m[1]} <= {hi}", sql)
    sql = sql.replace("$__fromTime", lo).replace("$__toTime", hi)
    sql = sql.replace("$__sampleByInterval", "1h")
    for name, value in (CHOICE | (constants or {})).items():
        sql = sql.replace(f"${name}", value)
    assert "$" not in sql, sql
    plain = TableSet()
    for ours, theirs in zip(
        (*plain.all(), *plain.views()), (*tables.all(), *tables.views()), strict=True
    ):
        sql = re.sub(rf"\b{ours.name}\b", theirs.name, sql)
    return sql


def test_provisioning_files_name_the_plugin_and_the_dashboards() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/questdb.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "questdb-questdb-datasource" and source["uid"] == "derrick-questdb"
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {"Drilling Operations Overview", "Drilling KPIs", "Fleet Health"}


def test_every_panel_and_variable_query_returns_rows(
    world: w.World, _questdb_server: QuestDB
) -> None:
    questdb = _questdb_server
    tables = world.tables
    questdb.exec_sql(
        f"INSERT INTO {tables.dead_letters.name} VALUES ("
        f"'{(world.now - dt.timedelta(hours=2)).isoformat()}', 'bad-payload', "
        "'spBv1.0/s201/DDATA/s201-a001/daq', 'not protobuf', 'AA==', 1)"
    )
    start, end = world.now - dt.timedelta(days=3), world.now + dt.timedelta(minutes=1)
    checked = 0
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        variables = board["templating"]["list"]
        constants = {v["name"]: v["query"] for v in variables if v["type"] == "constant"}
        # the KPI group as the ingest's KPI node stores it (a constant: edit it if yours differs)
        assert constants in ({}, {"kpi_group": w.KPI_GROUP}), constants
        queries: list[tuple[str, str]] = [
            (f"variable {v['name']}", v["query"]) for v in variables if v["type"] == "query"
        ]
        for panel in board["panels"]:
            assert panel["datasource"]["type"] == "questdb-questdb-datasource"
            queries += [(f"panel {panel['title']!r}", t["rawSql"]) for t in panel["targets"]]
        for what, raw in queries:
            assert w.KPI_GROUP not in raw, f"{what}: use $kpi_group"  # one place to change it
            sql = expand(raw, tables, start, end, constants)
            rows = _rows(questdb, sql)
            assert rows, f"{path.name}: {what} returned no rows:\n{sql}"
            if what.startswith("variable "):
                name = what.split()[1]
                assert [CHOICE[name]] in rows, (what, rows)
            checked += 1
    assert checked >= 14


def _rows(questdb: QuestDB, sql: str) -> list[Any]:
    deadline = time.monotonic() + 20  # the dead letter row is visible after its WAL commit
    while True:
        rows: list[Any] = questdb.exec_sql(sql)["dataset"]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)
