"""Ansible callback for bench/fleet_bench.py: wall time per task (first start to last result,
over all hosts of all waves) into the JSON file named by ``DERRICK_TIMING_OUT``."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: derrick_timing
type: aggregate
short_description: wall time per task, for the fleet benchmark
description: Writes, per task name, the summed wall time of its runs (one per wave) as JSON.
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "derrick_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._current: tuple[str, float] | None = None
        self._totals: dict[str, float] = {}

    def _close(self) -> None:
        if self._current is not None:
            name, started = self._current
            self._totals[name] = self._totals.get(name, 0.0) + time.monotonic() - started
            self._current = None

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._close()
        self._current = (task.get_name(), time.monotonic())

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self.v2_playbook_on_task_start(task, False)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._close()
        out = os.environ.get("DERRICK_TIMING_OUT")
        if out:
            with open(out, "w", encoding="utf-8") as f:
                json.dump(self._totals, f, indent=1)
