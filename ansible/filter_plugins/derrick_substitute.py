"""``derrick_substitute``: render a ``string.Template`` file (``${name}`` placeholders) with a
mapping, for configuration files the tests' harness renders from the same source (so that the
role and the tests cannot drift apart). A placeholder without a value is an error naming it,
never an empty string in a broker's configuration."""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError


def derrick_substitute(text: str, values: Mapping[str, Any]) -> str:
    template = string.Template(text)
    wanted = set(template.get_identifiers())
    missing = sorted(wanted - values.keys())
    if missing:
        raise AnsibleFilterError(f"derrick_substitute: no value for {', '.join(missing)}")
    unused = sorted(values.keys() - wanted)
    if unused:
        raise AnsibleFilterError(f"derrick_substitute: the template has no {', '.join(unused)}")
    return template.substitute({k: str(v) for k, v in values.items()})


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"derrick_substitute": derrick_substitute}
