#!/usr/bin/python
"""Documentation of the ``derrick_report`` action (ansible/action_plugins/derrick_report.py),
which does the work on the controller; this module is never run on an appliance."""

from __future__ import annotations

DOCUMENTATION = r"""
module: derrick_report
short_description: Write an appliance's report file on the controller
description:
  - Writes O(content) to O(path) on the controller (temporary file, then rename; mode 0644),
    from the controller's worker process, without starting a module process.
  - Changed only when the content differs. Works the same in check mode (a report is not a
    change to the appliance).
options:
  path: {description: The report file on the controller., type: path, required: true}
  content: {description: The report text (e.g. C(to_nice_json))., type: str, required: true}
author: Derrick fleet team
"""

if __name__ == "__main__":
    raise SystemExit("derrick_report is an action plugin: it runs on the controller")
