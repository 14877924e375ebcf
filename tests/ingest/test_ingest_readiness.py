"""The ingest worker's readiness verdict (``ingest.metrics.Readiness``), in memory: online and
no recent flush failure is ready; each failure keeps it not ready for the window. The served
``/ready`` of a real worker is checked in ``test_ingest_metrics.py``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ingest.metrics import Readiness
from ingest.nodes import NodeState


class _Host:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {"flush_failures": 0}
        self.is_online = True

    def counters(self) -> Mapping[str, int]:
        return self.counts

    def nodes(self) -> Iterable[NodeState]:
        return []

    def online(self) -> bool:
        return self.is_online


def test_readiness_follows_online_and_recent_flush_failures() -> None:
    host, now = _Host(), [100.0]
    readiness = Readiness(host, window_s=30, clock=lambda: now[0])
    assert readiness.check() == (True, [])
    host.counts["flush_failures"] = 1
    ok, problems = readiness.check()
    assert not ok and "flush failed" in problems[0]
    now[0] += 29
    assert not readiness.check()[0]  # still within the window
    now[0] += 2
    assert readiness.check() == (True, [])  # no new failure for 31 s
    host.is_online = False
    ok, problems = readiness.check()
    assert not ok and problems == ["primary host not online (broker unreachable or STATE not sent)"]
