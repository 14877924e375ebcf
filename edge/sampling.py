"""Adaptive sampling: normal and alarm rates, local alarm rules, report by exception.

Rates are values per minute for the whole appliance, spread evenly over its sensors (as the
v4 fleet configures them): with 16 sensors, 150/min reads each sensor every 6.4 s and
3000/min (500 per 10 s) every 0.32 s. Alarm mode is entered when a local rule fires
(threshold or rate of change) or the cloud commands it, and left ``alarm_hold_s`` after the
last trigger.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from edge.config import AgentConfig, AlarmRule

log = logging.getLogger(__name__)


class SamplingPolicy:
    """Which mode the appliance samples in, and how often each device is read."""

    def __init__(self, cfg: AgentConfig) -> None:
        self._cfg = cfg
        self._sensors = max(1, cfg.sensor_count())
        self._rules: dict[str, list[AlarmRule]] = {}
        for rule in cfg.alarms:
            self._rules.setdefault(rule.tag, []).append(rule)
        self._last: dict[str, tuple[float, float]] = {}
        self._alarm_until = 0.0
        self.commanded_alarm = False

    def in_alarm(self, now: float) -> bool:
        return self.commanded_alarm or now < self._alarm_until

    def mode(self, now: float) -> str:
        return "alarm" if self.in_alarm(now) else "normal"

    def interval_s(self, now: float) -> float:
        """Seconds between two reads of each sensor in the current mode."""
        per_min = (
            self._cfg.sampling.alarm_per_min
            if self.in_alarm(now)
            else self._cfg.sampling.normal_per_min
        )
        return self._sensors * 60.0 / per_min

    def observe(self, values: Mapping[str, float], now: float) -> bool:
        """Feed readings to the local rules; returns True when alarm mode was entered."""
        was = self.in_alarm(now)
        for tag, value in values.items():
            previous = self._last.get(tag)
            self._last[tag] = (now, value)
            for rule in self._rules.get(tag, ()):
                if self._fires(rule, value, previous, now):
                    self._alarm_until = now + self._cfg.sampling.alarm_hold_s
                    if not was:
                        log.info("alarm mode entered: %s = %s", tag, value)
        return not was and self.in_alarm(now)

    @staticmethod
    def _fires(
        rule: AlarmRule, value: float, previous: tuple[float, float] | None, now: float
    ) -> bool:
        if rule.above is not None and value > rule.above:
            return True
        if rule.below is not None and value < rule.below:
            return True
        if rule.rate_per_s is not None and previous is not None:
            t0, v0 = previous
            if now > t0 and abs(value - v0) / (now - t0) > rule.rate_per_s:
                return True
        return False


class Deadband:
    """Report by exception: skip a value within ``deadband`` of the last reported one,
    unless the sensor has been silent for ``max_silence_s``."""

    def __init__(self, deadbands: Mapping[str, float], max_silence_s: float) -> None:
        self._deadbands = dict(deadbands)
        self._max_silence = max_silence_s
        self._last: dict[str, tuple[float, float]] = {}

    def keep(self, tag: str, value: float, now: float) -> bool:
        band = self._deadbands.get(tag, 0.0)
        last = self._last.get(tag)
        if (
            band > 0
            and last is not None
            and abs(value - last[1]) <= band
            and now - last[0] < self._max_silence
        ):
            return False
        self._last[tag] = (now, value)
        return True
