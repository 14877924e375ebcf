"""Identifiers of the fleet: sites and appliances.

A site is ``s`` followed by three or more digits (``s017``); an appliance is
``<site>-a<NNN>`` (``s017-a042``). In Sparkplug terms the site is the ``group_id`` and the
appliance the ``edge_node_id``.
"""

from __future__ import annotations

import re
from typing import Final

_SITE_RE: Final = re.compile(r"s\d{3,}")
_APPLIANCE_RE: Final = re.compile(r"(s\d{3,})-a\d{3,}")


class IdError(ValueError):
    """An identifier does not follow the fleet's naming pattern."""


def check_site_id(value: str) -> str:
    """Return ``value`` if it is a valid site id, else raise :class:`IdError`."""
    if not _SITE_RE.fullmatch(value):
        raise IdError(f"site id {value!r} does not match 's' followed by digits, e.g. 's017'")
    return value


def check_appliance_id(value: str, site: str | None = None) -> str:
    """Return ``value`` if it is a valid appliance id (of ``site`` when given)."""
    match = _APPLIANCE_RE.fullmatch(value)
    if match is None:
        raise IdError(f"appliance id {value!r} does not match '<site>-a<NNN>', e.g. 's017-a042'")
    if site is not None and match.group(1) != site:
        raise IdError(f"appliance id {value!r} does not belong to site {site!r}")
    return value


def site_of(appliance_id: str) -> str:
    """The site an appliance id belongs to."""
    return check_appliance_id(appliance_id).split("-", 1)[0]
