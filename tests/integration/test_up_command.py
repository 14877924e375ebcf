"""The README's main command, run as a user would: ``./derrick up``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.process import process_alive

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_derrick_up_runs_a_simulated_site_and_stops_cleanly(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    run = subprocess.run(
        [
            str(REPO / "derrick"),
            "up",
            "--dir",
            str(tmp_path / "run"),
            "--duration",
            "25",
            "--summary-json",
            str(summary),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "QuestDB web console:  http://127.0.0.1:" in out
    assert "SELECT node, metric, count()" in out
    assert "agent.log" in out and "[up] stopped." in out
    result = json.loads(summary.read_text())
    assert result["nodes_stored"] == 10, result
    assert result["rows"] > 100, result
    # the customer API, as the demo tenant: its site, with the appliances the births declared
    key_file = tmp_path / "run" / "api" / "demo-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() not in out  # the key is in the file, not the output
    api = result["api"]
    assert api["sites"]["status"] == 200 and [s["id"] for s in api["sites"]["body"]] == ["s001"]
    site = api["site"]["body"]
    assert len(site["appliances"]) == 10, site
    assert "alert evaluator subscribed" in (tmp_path / "run" / "alerts" / "alerts.log").read_text()


def test_derrick_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(REPO / "derrick"), "up", "--appliances", "2", "--dir", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Press Ctrl-C to stop." in line or not line:
                break
        assert "Press Ctrl-C to stop." in "".join(lines), "".join(lines)[-3000:]
        pids = [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-f", str(tmp_path / "run")], capture_output=True, text=True, check=False
            ).stdout.split()
        ]
        assert len(pids) >= 5  # 3 services + ingest + 2 agents (and their launch shims)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, rest[-3000:]
        assert "[up] stopped." in rest
        time.sleep(1)
        assert not [p for p in pids if process_alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
