"""A deterministic drilling-rig signal model for the tags of the legacy fleet.

The rig cycles through phases (drilling ahead, connection, tripping); while drilling the bit
advances at ROP, weight on bit and rotary speed follow setpoints with noise; during a
connection the pumps and the rotary stop. Values stay inside each tag's typical range. The
same seed and the same sequence of read times give the same values.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

from core.tags import TAGS

_PHASES = (("drilling", 600.0), ("connection", 90.0), ("drilling", 900.0), ("tripping", 300.0))


class DrillingSimulator:
    """Signals of one rig; :meth:`read` returns engineering values for the asked tags."""

    def __init__(self, seed: int, *, start_depth_ft: float = 8000.0) -> None:
        self._rng = random.Random(seed)
        self._depth = start_depth_ft + self._rng.uniform(0, 2000)
        self._last_t: float | None = None
        self._phase_offset = self._rng.uniform(0, sum(d for _, d in _PHASES))
        self._block = 60.0
        self._pit = 600.0 + self._rng.uniform(-50, 50)

    def phase(self, t: float) -> str:
        cycle = sum(d for _, d in _PHASES)
        pos = (t + self._phase_offset) % cycle
        for name, duration in _PHASES:
            if pos < duration:
                return name
            pos -= duration
        return _PHASES[-1][0]

    def read(self, tags: Iterable[str], t: float) -> dict[str, float]:
        """Values of ``tags`` at time ``t`` (epoch seconds); advances the model to ``t``."""
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        phase = self.phase(t)
        n = self._rng.gauss
        drilling = phase == "drilling"
        pumping = phase != "connection"
        rop = max(0.0, 60 + 25 * math.sin(t / 300) + n(0, 4)) if drilling else 0.0
        self._depth += rop * dt / 3600
        self._block = (self._block - rop * dt / 3600) % 150 if drilling else self._block
        self._pit += n(0, 0.5) * min(dt, 10)
        values = {
            "DEPTH": self._depth,
            "HDTH": self._depth + (0.0 if drilling else 0.5),
            "ROP": rop,
            "WOB": max(0.0, 25 + 5 * math.sin(t / 120) + n(0, 1.5)) if drilling else n(0, 0.2) ** 2,
            "HKLD": 250 + 40 * (not drilling) + n(0, 3),
            "RPM": max(0.0, 120 + n(0, 4)) if drilling else 0.0,
            "TQ": max(0.0, 12 + n(0, 1.2)) if drilling else 0.0,
            "SPP": max(0.0, 2800 + n(0, 40)) if pumping else max(0.0, n(0, 5)),
            "FLWI": max(0.0, 650 + n(0, 8)) if pumping else 0.0,
            "MW": 10.5 + n(0, 0.02),
            "GAS": min(100.0, max(0.0, 0.8 + n(0, 0.2))),
            "H2S": max(0.0, n(0, 0.3) ** 2),
            "PIT": self._pit,
            "VIB": max(0.0, 1.5 + n(0, 0.5)) if drilling else max(0.0, n(0, 0.1)),
            "TEMP": 140 + 10 * math.sin(t / 1800) + n(0, 0.5),
            "BLKPOS": self._block,
        }
        out: dict[str, float] = {}
        for tag in tags:
            spec = TAGS[tag]
            out[tag] = round(min(spec.high, max(spec.low, values[tag])), 4)
        return out
