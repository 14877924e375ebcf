"""The alert engine in memory: each rule kind, hysteresis, dedup, auto-close, seeding."""

from __future__ import annotations

import msgspec
import pytest

from core.alerting import (
    AlertEngine,
    KpiCondition,
    NoData,
    RateOfChange,
    Rule,
    Sample,
    Threshold,
    decode_condition,
)

APP = "s017-a042"


def s(metric: str, value: float, ts: int, appliance: str = APP) -> Sample:
    return Sample("s017", appliance, "daq", metric, value, ts)


def kinds(engine: AlertEngine, *samples: Sample) -> list[str]:
    return [t.kind for x in samples for t in engine.observe(x)]


def test_threshold_with_hysteresis_opens_once_and_clears_below_the_clear_bound() -> None:
    rule = Rule(1, "s017", None, "SPP", Threshold("above", 3000, clear=2800))
    engine = AlertEngine([rule])
    got = kinds(
        engine,
        s("SPP", 2900, 1),
        s("SPP", 3100, 2),
        s("SPP", 3200, 3),
        s("SPP", 2900, 4),
        s("SPP", 3050, 5),
        s("SPP", 2800, 6),
        s("SPP", 3001, 7),
    )
    assert got == ["open", "clear", "open"]
    assert engine.is_open(1, f"{APP}/SPP")


def test_scope_appliance_and_metric() -> None:
    rule = Rule(1, "s017", APP, "SPP", Threshold("below", 10))
    engine = AlertEngine([rule])
    assert kinds(engine, s("SPP", 5, 1, appliance="s017-a043"), s("WOB", 5, 2)) == []
    assert kinds(engine, Sample("s018", APP, "daq", "SPP", 5, 3)) == []
    assert kinds(engine, s("SPP", 5, 4)) == ["open"]


def test_one_scope_per_appliance_for_site_wide_rules() -> None:
    engine = AlertEngine([Rule(1, "s017", None, "SPP", Threshold("above", 1))])
    out = [t for x in (s("SPP", 2, 1), s("SPP", 2, 1, "s017-a043")) for t in engine.observe(x)]
    assert [t.scope_key for t in out] == [f"{APP}/SPP", "s017-a043/SPP"]


def test_redelivered_and_older_samples_are_ignored() -> None:
    engine = AlertEngine([Rule(1, "s017", None, "SPP", Threshold("above", 1, clear=0))])
    assert kinds(engine, s("SPP", 2, 10), s("SPP", 2, 10), s("SPP", -5, 9)) == ["open"]


def test_no_auto_close_keeps_it_open_until_a_person_resolves() -> None:
    rule = Rule(1, "s017", None, "SPP", Threshold("above", 1), auto_close=False)
    engine = AlertEngine([rule])
    assert kinds(engine, s("SPP", 2, 1), s("SPP", 0, 2), s("SPP", 2, 3)) == ["open"]
    engine.sync([rule], open_scopes=[])  # resolved through the API
    assert kinds(engine, s("SPP", 3, 4)) == ["open"]


def test_seeded_open_scopes_are_not_opened_again_and_still_close() -> None:
    rule = Rule(1, "s017", None, "SPP", Threshold("above", 1))
    engine = AlertEngine([rule], open_scopes=[(1, f"{APP}/SPP")])
    assert kinds(engine, s("SPP", 5, 1), s("SPP", 0, 2)) == ["clear"]


def test_rate_of_change_per_minute() -> None:
    engine = AlertEngine([Rule(1, "s017", None, "PIT", RateOfChange(10, "rise"))])
    # 5 bbl in 60 s: 5/min; then 20 in 60 s; then a fall of 30/min (rise-only rule clears)
    got = kinds(
        engine,
        s("PIT", 100, 0),
        s("PIT", 105, 60_000),
        s("PIT", 125, 120_000),
        s("PIT", 95, 180_000),
    )
    assert got == ["open", "clear"]


def test_no_data_after_silence_and_on_node_death() -> None:
    engine = AlertEngine([Rule(1, "s017", APP, None, NoData(after_s=30))])
    assert engine.tick(0) == []  # never seen: nothing to miss
    assert kinds(engine, s("WOB", 1, 1000)) == []
    assert engine.tick(30_000) == []
    opened = engine.tick(31_000)
    assert [(t.kind, t.scope_key) for t in opened] == [("open", APP)]
    assert engine.tick(60_000) == []  # still one
    assert kinds(engine, s("ROP", 1, 61_000)) == ["clear"]
    assert [t.reason for t in engine.node_dead("s017", APP, 62_000)] == ["node offline (NDEATH)"]
    assert engine.node_dead("s017", APP, 62_001) == []


def test_no_data_clock_from_storage_judges_nothing_and_keeps_the_newest() -> None:
    engine = AlertEngine([Rule(1, "s017", APP, None, NoData(after_s=30))])
    engine.seen("s017", APP, 5000)  # what QuestDB says at a restart
    engine.seen("s017", APP, 4000)  # an older answer does not move the clock back
    assert engine.tick(34_999) == []
    assert [t.reason for t in engine.tick(35_000)] == ["no data for 30 s"]


def test_kpi_condition_must_hold_for_the_whole_duration() -> None:
    rule = Rule(1, "s017", None, "DrillingEfficiency", KpiCondition("below", 20, for_s=60))
    engine = AlertEngine([rule])
    m = "DrillingEfficiency"
    got = kinds(
        engine,
        s(m, 10, 0),
        s(m, 10, 30_000),
        s(m, 25, 45_000),
        s(m, 10, 50_000),
        s(m, 10, 100_000),
        s(m, 10, 110_000),
        s(m, 30, 120_000),
    )
    assert got == ["open", "clear"]


def test_rule_change_resets_state() -> None:
    rule = Rule(1, "s017", None, "SPP", Threshold("above", 1))
    engine = AlertEngine([rule])
    assert kinds(engine, s("SPP", 2, 1)) == ["open"]
    engine.sync([Rule(1, "s017", None, "SPP", Threshold("above", 5))], open_scopes=[])
    assert kinds(engine, s("SPP", 2, 2), s("SPP", 6, 3)) == ["open"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"kind": "threshold", "op": "above", "value": 1, "clear": 2}', "clear"),
        (b'{"kind": "threshold", "op": "sideways", "value": 1}', "$.op"),
        (b'{"kind": "no_data", "after_s": 0}', "$.after_s"),
        (b'{"kind": "rate_of_change", "per_minute": 1, "extra": 1}', "extra"),
        (b'{"kind": "magic"}', "magic"),
    ],
)
def test_bad_conditions_name_the_field(raw: bytes, fragment: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=None) as info:
        decode_condition(raw)
    assert fragment in str(info.value)


def test_metric_rules_need_a_metric() -> None:
    with pytest.raises(ValueError, match="needs a metric"):
        Rule(1, "s017", None, None, Threshold("above", 1))
