#!/usr/bin/python
"""Detect the legacy appliance software: version, how it was known, anomalies (as facts)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: derrick_legacy_facts
short_description: Detect the legacy CDD software version and anomalies of an appliance
description:
  - Reads the markers, configuration and data store of the ten legacy versions
    (v1.0 ... v4.2) under O(root) and returns them as the C(derrick_legacy) fact.
  - Read-only; supports check mode. Never changes the appliance.
options:
  root:
    description: The appliance's filesystem root (C(/) on a real appliance).
    type: path
    default: /
author: Derrick fleet team
"""

RETURN = r"""
ansible_facts:
  description: C(derrick_legacy) with version, release, inferred, anomalies (code, detail),
    upgradable, converged, agent_state, config (sensors, sampling), unsent, service.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.derrick_legacy import detect


def main() -> None:
    module = AnsibleModule(
        argument_spec={"root": {"type": "path", "default": "/"}}, supports_check_mode=True
    )
    facts = detect(module.params["root"])
    module.exit_json(changed=False, ansible_facts={"derrick_legacy": facts})


if __name__ == "__main__":
    main()
