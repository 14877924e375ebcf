"""Action plugin ``derrick_report``: write an appliance's report file on the controller.

Runs in the controller's worker process and writes the file itself (temporary file + rename),
instead of ``copy`` delegated to localhost, which starts a module process per appliance (on a
100-appliance site that was the costliest task of a re-run: 61 s of 122).
Changed only when the content differs.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("path", "content"))
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        path = self._task.args.get("path")
        content = self._task.args.get("content")
        if not isinstance(path, str) or not path:
            raise AnsibleActionFail("derrick_report: 'path' (a file on the controller) is required")
        if not isinstance(content, str):
            raise AnsibleActionFail("derrick_report: 'content' must be a string (to_nice_json)")
        text = content if content.endswith("\n") else content + "\n"
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    result.update(changed=False, path=path)
                    return result
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise AnsibleActionFail(f"derrick_report: cannot read {path}: {exc}") from exc
        directory = os.path.dirname(path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp_path = tempfile.mkstemp(prefix=".report-", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp_path, 0o644)
            os.replace(tmp_path, path)
        except OSError as exc:
            raise AnsibleActionFail(f"derrick_report: cannot write {path}: {exc}") from exc
        result.update(changed=True, path=path)
        return result
