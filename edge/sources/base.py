"""What the agent needs from a sensor source, whatever it is."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from edge.sources.simulator import DrillingSimulator


class SourceUnavailable(Exception):
    """The source cannot be read now (a server down, a device unplugged): the agent reports
    the device dead (DDEATH) and born again (DBIRTH) when reads succeed again."""


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
