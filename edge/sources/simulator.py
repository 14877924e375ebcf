"""A deterministic drilling-rig signal model for the tags of the legacy fleet.

The rig cycles through phases (drilling ahead, connection, tripping); while drilling the bit
advances at ROP, weight on bit and rotary speed follow setpoints with noise; during a
connection the pumps and the rotary stop. Values stay inside each tag's typical range. The
same seed and the same sequence of read times give the same values.

Events push an appliance into alarm sampling (with rules such as ``GAS above 5``):

- ``gas_kick``: formation gas enters the well: total gas and H2S climb within a minute, the
  active pit gains volume, then everything decays when the kick is circulated out;
- ``pressure_spike``: a pack-off: standpipe pressure jumps by ~2500 psi for a few seconds.

By default each rig has a recurring schedule derived from its seed (a kick every
``KICK_PERIOD_S``, a spike every ``SPIKE_PERIOD_S``, at seed-dependent offsets); tests and
demos add their own with :meth:`DrillingSimulator.schedule`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Final, Literal

import msgspec

from core.tags import TAGS

_PHASES = (("drilling", 600.0), ("connection", 90.0), ("drilling", 900.0), ("tripping", 300.0))

EventKind = Literal["gas_kick", "pressure_spike"]
KICK_PERIOD_S: Final = 3 * 3600.0
KICK_DURATION_S: Final = 420.0
SPIKE_PERIOD_S: Final = 1800.0
SPIKE_DURATION_S: Final = 15.0


class RigEvent(msgspec.Struct, frozen=True):
    """An event between ``start`` and ``start + duration`` (epoch seconds)."""

    kind: EventKind
    start: float
    duration: float

    def progress(self, t: float) -> float | None:
        """0..1 through the event at ``t``, None outside it."""
        if self.start <= t < self.start + self.duration:
            return (t - self.start) / self.duration
        return None


def _kick_shape(p: float) -> float:
    """0..1: a minute's rise (of a 7-minute kick), a plateau, then the circulation decay."""
    if p < 0.15:
        return p / 0.15
    if p < 0.6:
        return 1.0
    return max(0.0, 1.0 - (p - 0.6) / 0.4)


class DrillingSimulator:
    """Signals of one rig; :meth:`read` returns engineering values for the asked tags."""

    def __init__(
        self, seed: int, *, start_depth_ft: float = 8000.0, recurring_events: bool = True
    ) -> None:
        self._rng = random.Random(seed)
        # Event offsets from their own generator: the signals of a seed stay the same.
        events_rng = random.Random(seed ^ 0x5EED)
        self._kick_offset = events_rng.uniform(0, KICK_PERIOD_S)
        self._spike_offset = events_rng.uniform(0, SPIKE_PERIOD_S)
        self._recurring = recurring_events
        self._scheduled: list[RigEvent] = []
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

    def schedule(self, kind: EventKind, start: float, duration: float | None = None) -> RigEvent:
        """Add an event at ``start`` (epoch s); the default duration is the kind's own."""
        if duration is None:
            duration = KICK_DURATION_S if kind == "gas_kick" else SPIKE_DURATION_S
        event = RigEvent(kind, start, duration)
        self._scheduled.append(event)
        return event

    def events_at(self, t: float) -> list[RigEvent]:
        """The events in progress at ``t``."""
        active = [e for e in self._scheduled if e.progress(t) is not None]
        if self._recurring:
            for kind, period, offset, duration in (
                ("gas_kick", KICK_PERIOD_S, self._kick_offset, KICK_DURATION_S),
                ("pressure_spike", SPIKE_PERIOD_S, self._spike_offset, SPIKE_DURATION_S),
            ):
                start = math.floor((t - offset) / period) * period + offset
                if t - start < duration:
                    active.append(RigEvent(kind, start, duration))  # type: ignore[arg-type]
        return active

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
        for event in self.events_at(t):
            p = event.progress(t)
            assert p is not None
            if event.kind == "gas_kick":
                k = _kick_shape(p)
                values["GAS"] += 35 * k + n(0, 0.5) * k
                values["H2S"] += 25 * k
                values["PIT"] += 30 * min(1.0, p / 0.6) * (1 - max(0.0, p - 0.6) / 0.4)
            else:
                values["SPP"] += 2500 * math.sin(math.pi * p)
        out: dict[str, float] = {}
        for tag in tags:
            spec = TAGS[tag]
            out[tag] = round(min(spec.high, max(spec.low, values[tag])), 4)
        return out
