"""The KPI engine against a brute-force reference, in memory (no services)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.kpi import (
    DRILLING_EFFICIENCY,
    INPUTS,
    MOVING_AVERAGES,
    KpiEngine,
    KpiValue,
    MovingAverage,
)
from ingest.pipeline import NumericRow

SITE = "s001"


def row(node: str, metric: str, ts: int, value: float, historical: bool = False) -> NumericRow:
    return NumericRow(ts, SITE, node, "daq", metric, value, True, historical)


def by_kpi(values: list[KpiValue]) -> dict[tuple[str, int], float]:
    return {(v.kpi, v.ts_ms): v.value for v in values}


# -- examples --------------------------------------------------------------------------------


def test_drilling_efficiency_from_latest_rop_wob_rpm() -> None:
    engine = KpiEngine()
    out = engine.observe([row("n", "ROP", 1000, 50.0), row("n", "WOB", 1000, 20.0)])
    assert DRILLING_EFFICIENCY not in {v.kpi for v in out}  # RPM not yet known
    out = engine.observe([row("n", "RPM", 2000, 100.0)])
    assert by_kpi(out) == {(DRILLING_EFFICIENCY, 2000): 50.0 * 100 / (20.0 * 100.0 / 1000)}


def test_one_efficiency_per_timestamp_after_all_its_updates() -> None:
    engine = KpiEngine()
    out = engine.observe(
        [row("n", "RPM", 1000, 100.0), row("n", "WOB", 1000, 20.0), row("n", "ROP", 1000, 40.0)]
    )
    assert [v for v in out if v.kpi == DRILLING_EFFICIENCY] == [
        KpiValue(SITE, "n", DRILLING_EFFICIENCY, 1000, 2000.0)
    ]


def test_no_efficiency_when_wob_times_rpm_is_zero_or_inputs_are_stale() -> None:
    engine = KpiEngine(freshness_ms=30_000)
    out = engine.observe(
        [row("n", "ROP", 1000, 40.0), row("n", "WOB", 1000, 0.0), row("n", "RPM", 1000, 100.0)]
    )
    assert DRILLING_EFFICIENCY not in {v.kpi for v in out}
    out = engine.observe([row("n", "WOB", 2000, 10.0)])
    assert by_kpi(out)[(DRILLING_EFFICIENCY, 2000)] == 4000.0
    # RPM and ROP are now 30.001 s old: too stale to pair with a new WOB
    out = engine.observe([row("n", "WOB", 31_001, 10.0)])
    assert DRILLING_EFFICIENCY not in {v.kpi for v in out}
    out = engine.observe([row("n", "WOB", 31_000 - 1, 10.0)])  # reordered: dropped
    assert out == []
    assert engine.counters["stale_ignored"] == 1


def test_historical_and_duplicate_samples_do_not_feed_the_kpis() -> None:
    engine = KpiEngine()
    first = engine.observe([row("n", "ROP", 1000, 10.0)])
    assert by_kpi(first) == {("ROP_MA5", 1000): 10.0, ("ROP_MA15", 1000): 10.0}
    assert engine.observe([row("n", "ROP", 1000, 10.0)]) == []  # redelivered
    assert engine.observe([row("n", "ROP", 5000, 99.0, historical=True)]) == []
    out = engine.observe([row("n", "ROP", 2000, 20.0)])
    assert by_kpi(out) == {("ROP_MA5", 2000): 15.0, ("ROP_MA15", 2000): 15.0}
    assert engine.counters["historical_ignored"] == 1


def test_moving_average_window_is_half_open() -> None:
    ma = MovingAverage(5 * 60_000)
    assert ma.add(0, 1.0) == 1.0
    assert ma.add(299_999, 3.0) == 2.0
    assert ma.add(300_000, 5.0) == 4.0  # the sample at 0 is exactly 5 min old: out
    assert len(ma) == 2


def test_nodes_are_independent_and_other_metrics_ignored() -> None:
    engine = KpiEngine()
    out = engine.observe([row("a", "ROP", 1000, 10.0), row("b", "ROP", 1000, 30.0)])
    out += engine.observe([row("a", "HKLD", 2000, 1.0)])
    assert {(v.node, v.kpi): v.value for v in out} == {
        ("a", "ROP_MA5"): 10.0,
        ("a", "ROP_MA15"): 10.0,
        ("b", "ROP_MA5"): 30.0,
        ("b", "ROP_MA15"): 30.0,
    }


# -- against a brute-force reference ---------------------------------------------------------


@dataclass
class _Accepted:
    ts: int
    value: float


def reference(batches: list[list[NumericRow]], freshness_ms: int) -> list[KpiValue]:
    """The KPI definitions, computed the slow and obvious way."""
    accepted: dict[tuple[str, str], list[_Accepted]] = {}
    out: list[KpiValue] = []
    for batch in batches:
        nodes: dict[str, list[NumericRow]] = {}
        for r in batch:
            if r.metric in INPUTS and not r.historical:
                nodes.setdefault(r.node, []).append(r)
        for node, unsorted in nodes.items():
            rows = sorted(unsorted, key=lambda r: r.ts_ms)
            for ts in sorted({r.ts_ms for r in rows}):
                updated = False
                for r in (r for r in rows if r.ts_ms == ts):
                    seen = accepted.setdefault((node, r.metric), [])
                    if seen and r.ts_ms <= max(a.ts for a in seen):
                        continue
                    seen.append(_Accepted(r.ts_ms, r.value))
                    updated = True
                    for kpi, (metric, window) in MOVING_AVERAGES.items():
                        if metric == r.metric:
                            inside = [a.value for a in seen if ts - window < a.ts <= ts]
                            out.append(KpiValue(SITE, node, kpi, ts, sum(inside) / len(inside)))
                if not updated:
                    continue
                latest = {}
                for metric in INPUTS:
                    seen = accepted.get((node, metric), [])
                    if seen:
                        latest[metric] = max(seen, key=lambda a: a.ts)
                if len(latest) < 3:
                    continue
                times = [a.ts for a in latest.values()]
                if max(times) > ts or ts - min(times) > freshness_ms:
                    continue
                load = latest["WOB"].value * latest["RPM"].value / 1000
                if load != 0:
                    de = latest["ROP"].value * 100 / load
                    out.append(KpiValue(SITE, node, DRILLING_EFFICIENCY, ts, de))
    return out


_events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["ROP", "WOB", "RPM", "HKLD"]),
        st.integers(min_value=-20_000, max_value=120_000),  # step of the clock; < 0 reorders
        st.one_of(st.just(0.0), st.integers(-5, 300).map(float), st.floats(0.01, 500.0)),
        st.sampled_from([False, False, False, True]),  # historical, now and then
        st.integers(min_value=1, max_value=6),  # batch size
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(_events, st.sampled_from([0, 10_000, 30_000]))
def test_engine_equals_brute_force_reference(events: list[tuple], freshness_ms: int) -> None:
    clock = 1_700_000_000_000
    batches: list[list[NumericRow]] = []
    current: list[NumericRow] = []
    for node, metric, step, value, historical, size in events:
        clock += step
        current.append(row(node, metric, clock, value, historical))
        if len(current) >= size:
            batches.append(current)
            current = []
    batches.append(current)
    engine = KpiEngine(freshness_ms=freshness_ms)
    got = [v for batch in batches for v in engine.observe(batch)]
    want = reference(batches, freshness_ms)
    assert [(v.node, v.kpi, v.ts_ms) for v in got] == [(v.node, v.kpi, v.ts_ms) for v in want]
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g.value, w.value, rel_tol=1e-9, abs_tol=1e-9), (g, w)
