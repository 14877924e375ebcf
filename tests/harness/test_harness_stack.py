"""The three services together, and the error-log guard from conftest."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from harness import ServiceStack
from harness.ports import is_listening
from harness.process import process_alive

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_stack_starts_and_stops_everything(tmp_path: Path) -> None:
    stack = ServiceStack(tmp_path, postgres_fsync=False)
    with stack:
        assert all(service.running for service in stack.services)
        assert is_listening(stack.mosquitto.port)
        assert stack.questdb.exec_sql("select 1")["dataset"] == [[1]]
        with psycopg.connect(stack.postgres.dsn) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        pids = [service.pid for service in stack.services]
    assert all(pid is not None and not process_alive(pid) for pid in pids)


@pytest.mark.allow_error_logs
def test_marked_test_may_log_errors() -> None:
    logging.getLogger("derrick.test").error("expected in this test")


def _run_inner_pytest(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(body)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_logged_error_fails_the_test(tmp_path: Path) -> None:
    result = _run_inner_pytest(
        tmp_path,
        "import logging\n"
        "def test_swallows():\n"
        "    try:\n"
        "        raise ValueError('boom')\n"
        "    except ValueError:\n"
        "        logging.getLogger('ingest').exception('swallowed')\n",
    )
    assert result.returncode == 1, result.stdout
    assert "ERROR ingest: swallowed (ValueError: boom)" in result.stdout
    assert "allow_error_logs" in result.stdout
