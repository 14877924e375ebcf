"""Schemathesis against the served OpenAPI document: no input makes the server fail (5xx)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import world as w

pytestmark = [pytest.mark.integration]


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~30 operations since the alert and vendor routes
# each role reaches code the others are refused at once: ops the registry-wide routes, a
# customer admin its tenant's alert rules, targets and reports, a vendor the Parquet datasets
@pytest.mark.parametrize("key", ["ops", "acme_admin", "vendor"])
def test_schemathesis_finds_no_server_error(
    served: str, world: w.World, tmp_path: Path, key: str
) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{served}/schema/openapi.json",
            "--checks",
            "not_a_server_error",
            "-H",
            f"Authorization: Bearer {world.keys[key]}",
            "--exclude-path-regex",
            "/live$",
            "--max-examples",
            "30",
            "--workers",
            "1",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,  # schemathesis keeps its example database in ./.schemathesis
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
