"""What the agent needs from a sensor source, whatever it is.

Two kinds:

- :class:`PolledSource` (local DAQ channels, the simulator): the agent reads it at the
  current mode's interval; a read raises :class:`SourceUnavailable` when it cannot be made.
- :class:`SubscribedSource` (OPC UA, CSV replay): the source pushes :class:`Reading` values
  with their own source timestamps and qualities into a :class:`ReadingSink`, reports when it
  goes away and comes back (the agent publishes DDEATH / DBIRTH), and is told the sampling
  interval of the current mode (OPC UA: the monitored items' sampling interval on the server).

Quality follows Sparkplug's ``Quality`` property (Int32): 192 good, 500 stale (OPC UA
*Uncertain*), 0 bad.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

import msgspec

from core import conventions
from edge.sources.simulator import DrillingSimulator

QUALITY_GOOD: Final = conventions.QUALITY_GOOD
QUALITY_STALE: Final = conventions.QUALITY_STALE
QUALITY_BAD: Final = conventions.QUALITY_BAD


class SourceUnavailable(Exception):
    """The source cannot be read now (a server down, a device unplugged): the agent reports
    the device dead (DDEATH) and born again (DBIRTH) when reads succeed again."""


class Reading(msgspec.Struct, frozen=True, gc=False):
    """One value a source delivered: tag, engineering value (None when the source has none,
    e.g. a bad-quality OPC UA value), source timestamp (epoch ms) and Sparkplug quality."""

    tag: str
    value: float | None
    ts_ms: int
    quality: int = QUALITY_GOOD


class ReadingSink(Protocol):
    """Where a subscribed source delivers (the agent's pending samples)."""

    def deliver(self, readings: Sequence[Reading]) -> None:
        """Take readings (called on the event loop, never blocks)."""
        ...

    async def online(self, up: bool) -> None:
        """The source came back (``True``: DBIRTH) or went away (``False``: DDEATH)."""
        ...

    def interval_s(self) -> float:
        """Seconds between two samples of each sensor in the agent's current mode."""
        ...


class SubscribedSource(Protocol):
    """A source that pushes readings; :meth:`run` runs until cancelled (or, for a finite
    replay, returns when it is done) and handles its own reconnects."""

    async def run(self, sink: ReadingSink) -> None: ...


class PolledSource(Protocol):
    """A source the agent polls at the sampling rate."""

    def read(self, tags: Sequence[str], now: float) -> dict[str, float]:
        """Engineering values of ``tags`` at ``now`` (epoch s); raises SourceUnavailable."""
        ...


class SimulatorSource:
    """The drilling-rig simulator as a local DAQ. If ``fault_file`` exists, the DAQ is
    unreachable (for demos and fault tests of device death and rebirth)."""

    def __init__(self, seed: int, fault_file: Path | None = None) -> None:
        self._sim = DrillingSimulator(seed)
        self._fault_file = fault_file

    def read(self, tags: Sequence[str], now: float) -> dict[str, float]:
        if self._fault_file is not None and self._fault_file.exists():
            raise SourceUnavailable(f"simulated DAQ fault ({self._fault_file} exists)")
        return self._sim.read(tags, now)
