"""A reading sink for driving edge sources directly in tests (no agent)."""

from __future__ import annotations

from collections.abc import Sequence

from edge.sources.base import Reading


class RecordingSink:
    """Records what a source delivers and its online/offline transitions; ``interval_s``
    is the sampling interval the source is asked to follow."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.readings: list[Reading] = []
        self.states: list[bool] = []
        self._interval_s = interval_s

    def deliver(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    async def online(self, up: bool) -> None:
        self.states.append(up)

    def interval_s(self) -> float:
        return self._interval_s
