"""Drilling KPIs computed as samples arrive: pure, in memory, O(1) per sample.

Per edge node (appliance), from its live ROP, WOB and RPM samples, whichever device carries
them:

- ``DrillingEfficiency`` = ROP × 100 / (WOB × RPM / 1000), from the node's latest ROP, WOB
  and RPM. Evaluated once per distinct sample timestamp at which one of the three updates
  (after every update at that timestamp is applied), stamped with that timestamp, and only
  when all three are known, the oldest of them at most ``freshness_ms`` older than the
  newest, none newer than the evaluation time, WOB × RPM ≠ 0 and the result is finite.
- ``ROP_MA5``, ``ROP_MA15``, ``WOB_MA5``, ``WOB_MA15``: time-based moving averages, for each
  accepted sample at time t the mean of the accepted samples of that metric with timestamps
  in (t − window, t]. One deque and a running sum per window: O(1) amortized per sample.

Which samples feed the KPIs:

- Historical samples (``is_historical``: replays of buffered data) never do; the KPIs
  describe the live stream. Their raw values are still stored and rolled up by the views.
- Per (node, metric), a live sample must be strictly newer than the last accepted one;
  duplicates and reordered samples are dropped (and counted), so a redelivery can never
  count twice and the windows stay sorted.
- Samples of one call are taken in timestamp order per node.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from typing import Final, Protocol

import msgspec

ROP: Final = "ROP"
WOB: Final = "WOB"
RPM: Final = "RPM"
INPUTS: Final = frozenset({ROP, WOB, RPM})

DRILLING_EFFICIENCY: Final = "DrillingEfficiency"

#: KPI name -> (input metric, window in ms).
MOVING_AVERAGES: Final[dict[str, tuple[str, int]]] = {
    "ROP_MA5": (ROP, 5 * 60_000),
    "ROP_MA15": (ROP, 15 * 60_000),
    "WOB_MA5": (WOB, 5 * 60_000),
    "WOB_MA15": (WOB, 15 * 60_000),
}

#: Every KPI and its engineering unit, in publication (alias) order.
KPI_UNITS: Final[dict[str, str]] = {
    DRILLING_EFFICIENCY: "ft/h per klbf.krpm x100",
    "ROP_MA5": "ft/h",
    "ROP_MA15": "ft/h",
    "WOB_MA5": "klbf",
    "WOB_MA15": "klbf",
}

#: Recompute a window's sum from its samples after this many updates (bounds float drift).
_RESUM_EVERY: Final = 4096


class Sample(Protocol):
    """What the engine reads from a stored row (``ingest.pipeline.NumericRow`` fits)."""

    @property
    def ts_ms(self) -> int: ...
    @property
    def site(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def historical(self) -> bool: ...


class KpiValue(msgspec.Struct, frozen=True, gc=False):
    """One KPI value of one appliance at one time."""

    site: str
    node: str
    kpi: str
    ts_ms: int
    value: float


class MovingAverage:
    """Mean of the samples in (t − window, t], for samples added in increasing time order."""

    def __init__(self, window_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError("window must be positive")
        self.window_ms = window_ms
        self._samples: deque[tuple[int, float]] = deque()
        self._sum = 0.0
        self._updates = 0

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, ts_ms: int, value: float) -> float:
        """Add a sample (newer than every earlier one) and return the mean at ``ts_ms``."""
        samples = self._samples
        samples.append((ts_ms, value))
        self._sum += value
        horizon = ts_ms - self.window_ms
        while samples[0][0] <= horizon:
            self._sum -= samples.popleft()[1]
        self._updates += 1
        if self._updates >= _RESUM_EVERY:
            self._updates = 0
            self._sum = math.fsum([v for _, v in samples])
        return self._sum / len(samples)


class _NodeKpis:
    """Inputs and windows of one node."""

    __slots__ = ("averages", "latest")

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, float]] = {}
        self.averages: dict[str, MovingAverage] = {
            kpi: MovingAverage(window) for kpi, (_, window) in MOVING_AVERAGES.items()
        }


class KpiEngine:
    """Turns live ROP/WOB/RPM samples into KPI values, node by node."""

    def __init__(self, *, freshness_ms: int = 30_000) -> None:
        if freshness_ms < 0:
            raise ValueError("freshness must not be negative")
        self.freshness_ms = freshness_ms
        self._nodes: dict[tuple[str, str], _NodeKpis] = {}
        self._averages_of: dict[str, list[str]] = defaultdict(list)
        for kpi, (metric, _) in MOVING_AVERAGES.items():
            self._averages_of[metric].append(kpi)
        self.counters: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"KpiEngine(nodes={len(self._nodes)}, freshness_ms={self.freshness_ms})"

    def observe(self, rows: Iterable[Sample]) -> list[KpiValue]:
        """Feed one message's rows; return the KPI values they produce."""
        by_node: dict[tuple[str, str], list[Sample]] = {}
        for r in rows:
            if r.metric in INPUTS:
                if r.historical:
                    self.counters["historical_ignored"] += 1
                    continue
                by_node.setdefault((r.site, r.node), []).append(r)
        out: list[KpiValue] = []
        for key, samples in by_node.items():
            state = self._nodes.get(key)
            if state is None:
                state = self._nodes[key] = _NodeKpis()
            samples.sort(key=lambda s: s.ts_ms)
            i = 0
            while i < len(samples):
                ts = samples[i].ts_ms
                updated = False
                while i < len(samples) and samples[i].ts_ms == ts:
                    updated |= self._update(key, state, samples[i], out)
                    i += 1
                if updated:
                    self._efficiency(key, state, ts, out)
        return out

    def _update(
        self, key: tuple[str, str], state: _NodeKpis, s: Sample, out: list[KpiValue]
    ) -> bool:
        last = state.latest.get(s.metric)
        value = float(s.value)
        if (last is not None and s.ts_ms <= last[0]) or not math.isfinite(value):
            self.counters["stale_ignored" if math.isfinite(value) else "nonfinite_ignored"] += 1
            return False
        state.latest[s.metric] = (s.ts_ms, value)
        for kpi in self._averages_of.get(s.metric, ()):
            mean = state.averages[kpi].add(s.ts_ms, value)
            out.append(KpiValue(key[0], key[1], kpi, s.ts_ms, mean))
        return True

    def _efficiency(
        self, key: tuple[str, str], state: _NodeKpis, ts: int, out: list[KpiValue]
    ) -> None:
        latest = state.latest
        rop, wob, rpm = latest.get(ROP), latest.get(WOB), latest.get(RPM)
        if rop is None or wob is None or rpm is None:
            return
        times = (rop[0], wob[0], rpm[0])
        if max(times) > ts or ts - min(times) > self.freshness_ms:
            return
        load = wob[1] * rpm[1] / 1000
        if load == 0:
            return
        value = rop[1] * 100 / load
        if math.isfinite(value):
            out.append(KpiValue(key[0], key[1], DRILLING_EFFICIENCY, ts, value))
