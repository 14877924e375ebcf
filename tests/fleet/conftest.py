"""Fixtures of the fleet tests: an ingest worker between the test's broker and QuestDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Mosquitto, QuestDB
from harness.derrick import ingest_process
from harness.process import ManagedProcess


@pytest.fixture
def ingest_login() -> tuple[str, Path] | None:
    """(username, password file) the ingest worker logs in with; None: no login (a test whose
    broker refuses anonymous clients overrides this)."""
    return None


@pytest.fixture
def ingest(
    tmp_path: Path,
    mosquitto: Mosquitto,
    questdb: QuestDB,
    ingest_login: tuple[str, Path] | None,
) -> Iterator[tuple[ManagedProcess, str]]:
    """An ingest worker on the test's ``mosquitto`` and the session's QuestDB, writing tables
    of a unique prefix; yields the process and its ``telemetry_raw`` table."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    proc = ingest_process(
        tmp_path / "ingest",
        mqtt_port=mosquitto.port,
        ilp_conf=questdb.ilp_conf,
        pg_dsn=questdb.pg_dsn,
        table_prefix=prefix,
        mqtt_username=ingest_login[0] if ingest_login else None,
        mqtt_password_file=ingest_login[1] if ingest_login else None,
    )
    proc.start()
    try:
        yield proc, f"{prefix}telemetry_raw"
    finally:
        proc.stop()
