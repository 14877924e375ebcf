"""The sensor tag catalogue shared by every version of the appliance software.

A tag mnemonic (``WOB``) is a metric's identity; its unit never changes. About a quarter of
all values are *hot* (needed live for dashboards); ``hot`` here is the default for versions
that do not decide it per sensor.
"""

from __future__ import annotations

from typing import Final

import msgspec


class TagSpec(msgspec.Struct, frozen=True, gc=False):
    """One sensor tag: mnemonic, meaning, engineering unit, typical range, hot default."""

    tag: str
    meaning: str
    unit: str
    low: float
    high: float
    hot: bool


TAGS: Final[dict[str, TagSpec]] = {
    spec.tag: spec
    for spec in (
        TagSpec("DEPTH", "bit depth", "ft", 0, 30000, True),
        TagSpec("HDTH", "hole depth", "ft", 0, 30000, False),
        TagSpec("ROP", "rate of penetration", "ft/h", 0, 500, True),
        TagSpec("WOB", "weight on bit", "klbf", 0, 80, True),
        TagSpec("HKLD", "hook load", "klbf", 0, 800, False),
        TagSpec("RPM", "rotary speed", "rpm", 0, 250, True),
        TagSpec("TQ", "rotary torque", "kft.lbf", 0, 40, False),
        TagSpec("SPP", "standpipe pressure", "psi", 0, 7500, False),
        TagSpec("FLWI", "mud flow in", "gpm", 0, 1500, False),
        TagSpec("MW", "mud weight", "ppg", 8, 18, False),
        TagSpec("GAS", "total gas", "%", 0, 100, True),
        TagSpec("H2S", "hydrogen sulfide", "ppm", 0, 100, True),
        TagSpec("PIT", "active pit volume", "bbl", 0, 1500, False),
        TagSpec("VIB", "lateral vibration", "g", 0, 20, False),
        TagSpec("TEMP", "mud temperature out", "degF", 40, 300, False),
        TagSpec("BLKPOS", "block position", "ft", 0, 150, False),
    )
}


def unit_of(tag: str) -> str:
    """The engineering unit of a known tag; raises KeyError for an unknown one."""
    return TAGS[tag].unit
