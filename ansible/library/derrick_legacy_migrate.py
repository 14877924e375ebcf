#!/usr/bin/python
"""Stage the migration: backup, agent TOML, legacy sources record, hand-off file."""

from __future__ import annotations

DOCUMENTATION = r"""
module: derrick_legacy_migrate
short_description: Back up a legacy appliance and stage the Derrick agent's configuration
description:
  - Writes the backup of the legacy installation and data (tar, fsynced, renamed into place)
    first; if it cannot be written (disk full) nothing else is changed and the module fails
    with C(anomaly=disk-full).
  - Then writes the agent's TOML (legacy settings carried over), the legacy sources record
    (DAQ channel / OPC UA node, v1.x scale and offset) and the hand-off file of every unsent
    reading (docs/legacy-handoff.md). Never modifies the legacy files.
  - Idempotent (files are rewritten only when their content differs); check mode and diff
    mode show the agent configuration that would be written.
options:
  root: {description: The appliance's filesystem root., type: path, default: /}
  backup_dir: {description: Where the backup goes (relative to O(root))., type: str,
               default: var/backups/derrick}
  agent: {description: "Agent settings: mqtt_servers, primary_host_id, wait_for_primary_host,
           publish, device_id.", type: dict, required: true}
author: Derrick fleet team
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.derrick_legacy import (
    AGENT_CONFIG,
    BACKUP_NAME,
    HANDOFF_FILE,
    SOURCES_FILE,
    STATE_FILE,
    LegacyError,
    agent_state,
    agent_toml,
    detect,
    file_sha256,
    handoff_text,
    sources_json,
    write_atomic,
    write_backup,
)


def _current(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "default": "/"},
            "backup_dir": {"type": "str", "default": "var/backups/derrick"},
            "agent": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    root = module.params["root"]
    facts = detect(root)
    state = agent_state(root)
    if facts["converged"] or (state and state.get("state") == "trial"):
        module.exit_json(changed=False, msg=f"already {state and state.get('state')}")
    if not facts["upgradable"]:
        module.fail_json(msg="not upgradable", anomalies=facts["anomalies"])
    version, plan = facts["version"], facts["config"]
    files = {
        AGENT_CONFIG: agent_toml(plan, root, version, module.params["agent"]),
        SOURCES_FILE: sources_json(plan, version),
        HANDOFF_FILE: handoff_text(root, version, plan),
    }
    changed = [rel for rel, text in files.items() if _current(os.path.join(root, rel)) != text]
    backup_dir = os.path.join(root, module.params["backup_dir"])
    backup = os.path.join(backup_dir, BACKUP_NAME)
    staged = state and state.get("state") == "staged" and os.path.exists(backup)
    diff = {
        "before_header": AGENT_CONFIG,
        "after_header": AGENT_CONFIG,
        "before": _current(os.path.join(root, AGENT_CONFIG)),
        "after": files[AGENT_CONFIG],
    }
    if module.check_mode:
        module.exit_json(changed=bool(changed) or not staged, diff=diff, would_write=changed)
    if staged and state and file_sha256(backup) == state.get("backup_sha256"):
        sha = state["backup_sha256"]
    else:
        try:
            backup, sha = write_backup(root, version, backup_dir)
        except LegacyError as exc:
            module.fail_json(msg=str(exc), anomaly=exc.code)
    for rel in changed:
        write_atomic(os.path.join(root, rel), files[rel])
    new_state = {"state": "staged", "version": version, "backup": backup, "backup_sha256": sha,
                 "unsent": facts["unsent"], "service": facts["service"]}  # fmt: skip
    if state != new_state:
        write_atomic(os.path.join(root, STATE_FILE), json.dumps(new_state, indent=1) + "\n")
    module.exit_json(
        changed=bool(changed) or state != new_state, diff=diff, version=version,
        unsent=facts["unsent"], written=changed,
    )  # fmt: skip


if __name__ == "__main__":
    main()
