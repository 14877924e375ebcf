"""The Platform Health alert rules evaluated by Prometheus's own ``promtool test rules``: each
alert the issue names fires on the failure it is for (after its ``for:``), stays quiet on a
healthy series, and renders its summary as written. promtool is Debian's (the bootstrap
unpacks it); a missing promtool fails the test."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from harness import locate

RULES = (
    Path(__file__).resolve().parents[2] / "api" / "grafana" / "alerts" / "platform-health.rules.yml"
)
SUSPENDED_RUNBOOK = "docs/runbooks/recover-suspended-questdb-table.md"


def _alert(labels: dict[str, str], summary: str, runbook: str | None = None) -> dict[str, Any]:
    annotations = {"summary": summary} | ({"runbook": runbook} if runbook else {})
    return {"exp_labels": labels, "exp_annotations": annotations}


def _case(
    series: dict[str, str], checks: list[tuple[str, str, list[dict[str, Any]]]]
) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {"eval_time": t, "alertname": name, "exp_alerts": alerts} for t, name, alerts in checks
        ],
    }


CASES = [
    # a suspended WAL table pages after a minute; none suspended: quiet
    _case(
        {
            'questdb_suspended_tables{instance="q1"}': "0 0 1x10",
            'questdb_suspended_tables{instance="q2"}': "0x12",
        },
        [
            ("1m", "QuestDBSuspendedTable", []),
            ("2m", "QuestDBSuspendedTable", []),  # pending: for 1m
            (
                "4m",
                "QuestDBSuspendedTable",
                [
                    _alert(
                        {"severity": "page", "instance": "q1"},
                        "QuestDB has 1 suspended WAL table(s): rows are not applied",
                        SUSPENDED_RUNBOOK,
                    )
                ],
            ),
        ],
    ),
    # WAL apply 2,000 transactions behind for 10 minutes; 500 behind is not a lag
    _case(
        {
            'questdb_wal_apply_seq_txn{instance="q1"}': "5000x20",
            'questdb_wal_apply_writer_txn{instance="q1"}': "3000x20",
            'questdb_wal_apply_seq_txn{instance="q2"}': "5000x20",
            'questdb_wal_apply_writer_txn{instance="q2"}': "4500x20",
        },
        [
            ("5m", "QuestDBWalApplyLag", []),
            (
                "12m",
                "QuestDBWalApplyLag",
                [
                    _alert(
                        {"severity": "ticket", "instance": "q1"},
                        "QuestDB WAL apply is 2000 transactions behind for 10 min",
                        SUSPENDED_RUNBOOK,
                    )
                ],
            ),
        ],
    ),
    # w1 receives 100 messages a minute and acknowledges nothing; w2 acknowledges
    _case(
        {
            'derrick_ingest_messages_total{instance="w1"}': "0+100x30",
            'derrick_ingest_acks_total{instance="w1"}': "7x30",
            'derrick_ingest_messages_total{instance="w2"}': "0+100x30",
            'derrick_ingest_acks_total{instance="w2"}': "0+20x30",
        },
        [
            ("4m", "IngestNotAcknowledging", []),  # pending: for 5m
            (
                "15m",
                "IngestNotAcknowledging",
                [
                    _alert(
                        {"severity": "page", "instance": "w1"},
                        "ingest worker w1 receives data but acknowledges nothing"
                        " (QuestDB writes failing?)",
                    )
                ],
            ),
        ],
    ),
    # a worker that is not an online Primary Host pages after 2 minutes
    _case(
        {
            'derrick_ingest_online{instance="w1"}': "1 1 0x10",
            'derrick_ingest_online{instance="w2"}': "1x12",
        },
        [
            ("3m", "IngestWorkerOffline", []),
            (
                "6m",
                "IngestWorkerOffline",
                [
                    _alert(
                        {"severity": "page", "instance": "w1"},
                        "ingest worker w1 is not an online Primary Host",
                    )
                ],
            ),
        ],
    ),
    # a worker without its compiled build opens a ticket after 10 minutes (a restart while
    # the build is replaced does not)
    _case(
        {
            'derrick_ingest_compiled_modules{instance="w1"}': "7 0x15",
            'derrick_ingest_compiled_modules{instance="w2"}': "7 0x3 7x12",
        },
        [
            ("8m", "IngestRunningInterpreted", []),
            (
                "12m",
                "IngestRunningInterpreted",
                [
                    _alert(
                        {"severity": "ticket", "instance": "w1"},
                        "ingest worker w1 runs interpreted, ~1/5 slower a message: its mypyc"
                        " build is missing or does not match the release (its log says why)",
                    )
                ],
            ),
        ],
    ),
    # two nodes of s101 unacknowledged for more than 15 min; s102's node answered a minute ago
    _case(
        {
            'derrick_ingest_ack_age_seconds{group="s101",node="s101-a001"}': "1000+60x20",
            'derrick_ingest_ack_age_seconds{group="s101",node="s101-a002"}': "950+60x20",
            'derrick_ingest_ack_age_seconds{group="s102",node="s102-a001"}': "60x20",
        },
        [
            ("2m", "NodesSilent", []),
            (
                "10m",
                "NodesSilent",
                [
                    _alert(
                        {"severity": "ticket", "group": "s101"},
                        "2 node(s) of site s101 neither sent nor were acknowledged for 15 min",
                    )
                ],
            ),
        ],
    ),
    # the nightly job's last success 27 h before the evaluation (time() starts at 0 here);
    # one 2 h ago is on time
    _case(
        {
            'derrick_cold_last_success_timestamp_seconds{job="late"}': "-96600x5",
            'derrick_cold_last_success_timestamp_seconds{job="fresh"}': "-6600x5",
        },
        [
            (
                "5m",
                "NightlyJobLate",
                [
                    _alert(
                        {"severity": "ticket", "job": "late"},
                        "the nightly cold job has not succeeded for more than 26 h",
                        "docs/runbooks/restore-from-the-archive.md",
                    )
                ],
            )
        ],
    ),
]


def test_alert_rules_fire_on_their_failure_and_not_otherwise(tmp_path: Path) -> None:
    promtool = locate.promtool_binary()
    check = subprocess.run(
        [str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 9 rules found" in check.stdout, check.stdout
    tests = tmp_path / "platform-health.test.yml"
    tests.write_text(
        yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": CASES})
    )
    run = subprocess.run(
        [str(promtool), "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout, run.stdout
