"""``python -m alerts``: a bad configuration is refused with the key path, before anything
connects; a missing secret names the variable only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(
    tmp_path: Path, text: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "alerts.toml"
    config.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "alerts", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).resolve().parents[2],
    )


def test_unknown_key_is_refused_with_its_path(tmp_path: Path) -> None:
    result = run(tmp_path, "[evaluator]\nname = 'a'\ncatchup_max = 5\n")
    assert result.returncode == 2
    assert "catchup_max" in result.stderr and "$.evaluator" in result.stderr


def test_missing_secret_names_the_variable_not_a_value(tmp_path: Path) -> None:
    env = {"DERRICK_PG_DSN": "", "DERRICK_QUESTDB_PG": "host=x password=hunter2"}
    result = run(tmp_path, "[registry]\ndsn_env = 'DERRICK_PG_DSN'\n", env)
    assert result.returncode == 2
    assert "DERRICK_PG_DSN is not set" in result.stderr and "hunter2" not in result.stderr
