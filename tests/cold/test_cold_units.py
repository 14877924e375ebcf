"""The systemd units that schedule the cold job (docs/systemd/) are valid units, and every
``python -m cold`` command line in them is one the CLI accepts."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from cold.__main__ import _parser

UNITS = Path(__file__).parents[2] / "docs" / "systemd"


def test_units_verify_and_their_commands_parse(tmp_path: Path) -> None:
    names = sorted(p.name for p in UNITS.iterdir())
    assert {"derrick-cold-nightly.service", "derrick-cold-nightly.timer",
            "derrick-cold-freshness.service", "derrick-cold-freshness.timer",
            "derrick-cold-alert@.service"} <= set(names)  # fmt: skip
    commands = 0
    for name in names:
        text = (UNITS / name).read_text()
        for line in text.splitlines():
            if line.startswith("ExecStart=") and " -m cold " in line:
                argv = shlex.split(line.removeprefix("ExecStart="))
                _parser().parse_args(argv[argv.index("cold") + 1 :])  # exits on a bad command
                commands += 1
        # the install paths do not exist here: point them at this interpreter to verify
        (tmp_path / name).write_text(text.replace("/opt/derrick/.venv/bin/python", sys.executable))
    assert commands == 2
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
