"""Alert rules and their evaluation (pure: no clock, no I/O).

A rule watches one site, optionally one appliance, and (except ``no_data``) one metric. Its
``condition`` is one of four kinds, a tagged union in JSON (``{"kind": "threshold", ...}``):

- ``threshold``: ``above``/``below`` ``value``; with hysteresis, an alert opened above
  ``value`` clears only at or below ``clear`` (and mirrored for ``below``).
- ``rate_of_change``: the change between two consecutive live samples, per minute, beyond
  ``per_minute`` (``rise``, ``fall`` or ``any``); clears when a later step is within it.
- ``no_data``: an appliance sent nothing for ``after_s`` seconds (checked by :meth:`tick`),
  or its node died (NDEATH: the *stale node* case, at once); clears with the next sample.
- ``kpi``: a KPI (``DrillingEfficiency``, ``ROP_MA5`` ...) beyond a bound in every sample
  for ``for_s`` seconds; clears with the first sample that is not.

The :class:`AlertEngine` turns samples into :class:`Transition` s (``open``/``clear``) per
rule and *scope* (an appliance, plus the metric for metric rules): one open alert per rule
and scope. It is seeded with the scopes that are open in storage, so a restarted evaluator
neither opens them again nor forgets to clear them. A ``clear`` is emitted only for rules
with ``auto_close``; otherwise the alert waits for a person (:meth:`AlertEngine.sync`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Finite = Annotated[float, Meta(ge=-1e300, le=1e300)]
Op = Literal["above", "below"]
Severity = Literal["info", "warning", "critical"]
MetricName = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]


class Threshold(
    msgspec.Struct, tag="threshold", tag_field="kind", forbid_unknown_fields=True, frozen=True
):
    op: Op
    value: Finite
    clear: Finite | None = None  # default: value itself (no hysteresis)

    def __post_init__(self) -> None:
        if self.clear is None:
            return
        if self.op == "above" and self.clear > self.value:
            raise ValueError("threshold: 'clear' must be <= 'value' for op 'above'")
        if self.op == "below" and self.clear < self.value:
            raise ValueError("threshold: 'clear' must be >= 'value' for op 'below'")

    def crossed(self, v: float) -> bool:
        return v > self.value if self.op == "above" else v < self.value

    def cleared(self, v: float) -> bool:
        bound = self.value if self.clear is None else self.clear
        return v <= bound if self.op == "above" else v >= bound


class RateOfChange(
    msgspec.Struct, tag="rate_of_change", tag_field="kind", forbid_unknown_fields=True, frozen=True
):
    per_minute: Annotated[float, Meta(gt=0, le=1e300)]
    direction: Literal["rise", "fall", "any"] = "any"

    def exceeded(self, rate: float) -> bool:
        if self.direction == "rise":
            return rate > self.per_minute
        if self.direction == "fall":
            return -rate > self.per_minute
        return abs(rate) > self.per_minute


class NoData(
    msgspec.Struct, tag="no_data", tag_field="kind", forbid_unknown_fields=True, frozen=True
):
    after_s: Annotated[int, Meta(ge=1, le=7 * 86400)]


class KpiCondition(
    msgspec.Struct, tag="kpi", tag_field="kind", forbid_unknown_fields=True, frozen=True
):
    op: Op
    value: Finite
    for_s: Annotated[int, Meta(ge=0, le=86400)] = 300

    def holds(self, v: float) -> bool:
        return v > self.value if self.op == "above" else v < self.value


Condition = Threshold | RateOfChange | NoData | KpiCondition


class Rule(msgspec.Struct, frozen=True):
    """A rule as the evaluator sees it."""

    id: int
    site: str
    appliance: str | None
    metric: str | None
    condition: Condition
    auto_close: bool = True

    def __post_init__(self) -> None:
        if self.metric is None and not isinstance(self.condition, NoData):
            raise ValueError(f"rule {self.id}: a {type(self.condition).__name__} needs a metric")

    def matches(self, site: str, appliance: str, metric: str) -> bool:
        return (
            site == self.site
            and (self.appliance is None or self.appliance == appliance)
            and (self.metric is None or self.metric == metric)
        )

    def scope_key(self, appliance: str, metric: str | None) -> str:
        return appliance if isinstance(self.condition, NoData) else f"{appliance}/{metric}"


class Sample(msgspec.Struct, frozen=True):
    """A live numeric value: ``appliance`` is the edge node (for a KPI, the appliance it was
    computed for); ``ts`` the source time in ms since the epoch."""

    site: str
    appliance: str
    device: str
    metric: str
    value: float
    ts: int


class Transition(msgspec.Struct, frozen=True):
    kind: Literal["open", "clear"]
    rule_id: int
    scope_key: str
    site: str
    appliance: str
    metric: str | None
    value: float | None
    ts: int
    reason: str


def decode_condition(raw: bytes | str) -> Condition:
    """A condition from JSON; :class:`msgspec.ValidationError` names the bad field."""
    cond: Condition = msgspec.json.decode(raw, type=Condition)
    return cond


class _State:
    __slots__ = ("active", "last_ts", "last_value", "since_ts")

    def __init__(self) -> None:
        self.active = False
        self.last_ts: int | None = None
        self.last_value: float | None = None
        self.since_ts: int | None = None


class AlertEngine:
    """State of every (rule, scope); feed it samples, deaths and ticks."""

    def __init__(self, rules: Iterable[Rule] = (), open_scopes: Iterable[tuple[int, str]] = ()):
        self._rules: dict[int, Rule] = {}
        self._states: dict[tuple[int, str], _State] = {}
        self._seen: dict[tuple[str, str], int] = {}  # (site, appliance) -> last sample ts
        self.sync(rules, open_scopes)

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def is_open(self, rule_id: int, scope_key: str) -> bool:
        state = self._states.get((rule_id, scope_key))
        return state is not None and state.active

    def sync(self, rules: Iterable[Rule], open_scopes: Iterable[tuple[int, str]]) -> None:
        """Adopt the stored rules and open alerts: state of changed or removed rules is
        dropped, scopes a person resolved become inactive (a later crossing opens anew)."""
        new = {r.id: r for r in rules}
        for key in [k for k in self._states if self._rules.get(k[0]) != new.get(k[0])]:
            del self._states[key]
        self._rules = new
        open_set = set(open_scopes)
        for key, state in self._states.items():
            state.active = key in open_set
        for key in open_set:
            if key[0] in new:
                self._state(key).active = True

    def _state(self, key: tuple[int, str]) -> _State:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        return state

    def seen(self, site: str, appliance: str, ts: int) -> None:
        """Record that the appliance had data at ``ts``, judging no rule: how an evaluator
        started after a node fell silent learns, from storage, where its no-data clock is."""
        key = (site, appliance)
        self._seen[key] = max(self._seen.get(key, ts), ts)

    def observe(self, sample: Sample) -> list[Transition]:
        if not math.isfinite(sample.value):
            return []
        out: list[Transition] = []
        self.seen(sample.site, sample.appliance, sample.ts)
        for rule in self._rules.values():
            if not rule.matches(sample.site, sample.appliance, sample.metric):
                continue
            key = (rule.id, rule.scope_key(sample.appliance, sample.metric))
            state = self._state(key)
            if state.last_ts is not None and sample.ts <= state.last_ts:
                continue  # a redelivery or an out-of-order sample: already judged
            transition = self._judge(rule, key[1], state, sample)
            state.last_ts, state.last_value = sample.ts, sample.value
            if transition is not None:
                out.append(transition)
        return out

    def _judge(self, rule: Rule, scope: str, st: _State, s: Sample) -> Transition | None:
        cond = rule.condition
        v = s.value
        if isinstance(cond, Threshold):
            if not st.active and cond.crossed(v):
                return self._open(rule, scope, st, s, f"{s.metric} {v:g} {cond.op} {cond.value:g}")
            if st.active and cond.cleared(v):
                return self._clear(rule, scope, st, s, f"{s.metric} back at {v:g}")
            return None
        if isinstance(cond, RateOfChange):
            if st.last_ts is None or st.last_value is None:
                return None
            rate = (v - st.last_value) / ((s.ts - st.last_ts) / 60000)
            if not st.active and cond.exceeded(rate):
                text = f"{s.metric} changed {rate:+.4g}/min (limit {cond.per_minute:g})"
                return self._open(rule, scope, st, s, text)
            if st.active and not cond.exceeded(rate):
                return self._clear(rule, scope, st, s, f"{s.metric} rate {rate:+.4g}/min")
            return None
        if isinstance(cond, KpiCondition):
            if not cond.holds(v):
                st.since_ts = None
                if st.active:
                    return self._clear(rule, scope, st, s, f"{s.metric} back at {v:g}")
                return None
            if st.since_ts is None:
                st.since_ts = s.ts
            if not st.active and s.ts - st.since_ts >= cond.for_s * 1000:
                text = f"{s.metric} {cond.op} {cond.value:g} for {(s.ts - st.since_ts) / 1000:g} s"
                return self._open(rule, scope, st, s, text)
            return None
        # NoData: any sample of the appliance clears
        if st.active:
            return self._clear(rule, scope, st, s, f"data again ({s.metric})")
        return None

    def _open(self, rule: Rule, scope: str, st: _State, s: Sample, reason: str) -> Transition:
        st.active = True
        return Transition(
            "open", rule.id, scope, s.site, s.appliance, rule.metric, s.value, s.ts, reason
        )

    def _clear(
        self, rule: Rule, scope: str, st: _State, s: Sample, reason: str
    ) -> Transition | None:
        if not rule.auto_close:
            return None
        st.active = False
        return Transition(
            "clear", rule.id, scope, s.site, s.appliance, rule.metric, s.value, s.ts, reason
        )

    def _nodata_rules(self, site: str, appliance: str) -> list[Rule]:
        return [
            r
            for r in self._rules.values()
            if isinstance(r.condition, NoData)
            and r.site == site
            and r.appliance in (None, appliance)
        ]

    def node_dead(self, site: str, appliance: str, ts: int) -> list[Transition]:
        """The node's death certificate arrived: every no-data rule over it opens now."""
        out = []
        for rule in self._nodata_rules(site, appliance):
            state = self._state((rule.id, appliance))
            if not state.active:
                state.active = True
                out.append(
                    Transition(
                        "open",
                        rule.id,
                        appliance,
                        site,
                        appliance,
                        None,
                        None,
                        ts,
                        "node offline (NDEATH)",
                    )
                )
        return out

    def tick(self, now_ms: int) -> list[Transition]:
        """No-data rules: every appliance seen before and silent for ``after_s``."""
        out = []
        for (site, appliance), last in self._seen.items():
            for rule in self._nodata_rules(site, appliance):
                assert isinstance(rule.condition, NoData)
                state = self._state((rule.id, appliance))
                silent_ms = now_ms - last
                if not state.active and silent_ms >= rule.condition.after_s * 1000:
                    state.active = True
                    out.append(
                        Transition(
                            "open",
                            rule.id,
                            appliance,
                            site,
                            appliance,
                            None,
                            None,
                            now_ms,
                            f"no data for {silent_ms / 1000:.0f} s",
                        )
                    )
        return out
