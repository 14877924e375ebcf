"""Fixtures shared by every test: real services from ``harness`` and the error-log guard.

- ``mosquitto``: a fresh broker per test (cheap).
- ``questdb`` / ``postgres``: one server per session, restarted for the next test if a test
  stopped or killed it; tests keep apart by unique table names. Tests that crash, stop or
  reconfigure a server on purpose build their own (``QuestDB(tmp_path)`` ...).
- every test fails when something logged at ERROR or above during it, unless it is marked
  ``@pytest.mark.allow_error_logs`` (STYLE rule 8: a swallowed exception fails a test).

A fixture whose server cannot start raises: the test errors, it is never skipped.

Before the session, ``scripts/compile.py`` builds the ingest worker's compiled modules when
the sources changed since the last build (``ingest/compiled.py``): the workers the tests
start run what production runs, and a failed build stops the session.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import harness
from harness import SMALL_TABLES, Mosquitto, Postgres, QuestDB

ALLOW_ERROR_LOGS = "allow_error_logs"
# (through the harness package: tests/harness copies this file elsewhere and runs it there)
REPO = Path(harness.__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    build = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compile.py")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if build.returncode != 0:
        pytest.exit(
            f"scripts/compile.py failed (the ingest worker's compiled modules):\n"
            f"{build.stdout[-3000:]}{build.stderr[-3000:]}",
            returncode=1,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ALLOW_ERROR_LOGS}: the test expects records at ERROR or above to be logged",
    )


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _fail_on_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    handler = _ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    if handler.records and request.node.get_closest_marker(ALLOW_ERROR_LOGS) is None:
        lines = []
        for record in handler.records:
            line = f"{record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                line += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            lines.append(line)
        pytest.fail(
            f"{len(lines)} record(s) logged at ERROR or above (mark the test "
            f"@pytest.mark.{ALLOW_ERROR_LOGS} if they are expected):\n" + "\n".join(lines),
            pytrace=False,
        )


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running Mosquitto broker on a free loopback port, for this test only."""
    broker = Mosquitto(tmp_path / "mosquitto")
    with broker:
        yield broker


@pytest.fixture(scope="session")
def _questdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuestDB]:
    server = QuestDB(tmp_path_factory.mktemp("questdb"), settings=SMALL_TABLES)
    with server:
        yield server


@pytest.fixture
def questdb(_questdb_server: QuestDB) -> QuestDB:
    """The session's QuestDB (commit mode ``sync``), running; restarted if a test ended it."""
    if not _questdb_server.running:
        _questdb_server.restart()
    return _questdb_server


@pytest.fixture(scope="session")
def _postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(tmp_path_factory.mktemp("postgres"))
    with server:
        yield server


@pytest.fixture
def postgres(_postgres_server: Postgres) -> Postgres:
    """The session's PostgreSQL cluster, running; restarted if a test ended it."""
    if not _postgres_server.running:
        _postgres_server.restart()
    return _postgres_server
