"""Prometheus metrics of an ingest worker, read from what the Primary Host already keeps.

Nothing here sits on the hot path: a collector reads :attr:`PrimaryHost.counters` and the
node table at scrape time, from the HTTP server's thread (``prometheus_client``). Those are
plain dicts mutated on the event loop; a copy taken while one resizes raises
``RuntimeError``, so the copy is retried (a scrape sees a slightly stale view, never a torn
count, because each value is a single int).

Series (all prefixed ``derrick_ingest_``):

- ``messages_total``, ``metrics_total`` (values stored), ``acks_total`` (acknowledgements
  sent), ``rebirth_requests_total``, ``rebirth_throttled_total``, ``shed_messages_total``
  (not taken because QuestDB lags: not acknowledged, the edge re-sends),
  ``flush_failures_total``, ``dead_letters_total{reason}``;
- ``ack_age_seconds{group,node}``: time since the node was last acknowledged (the
  "acknowledgement lag": grows while a node sends and nothing it sent is stored);
- ``nodes`` (known nodes), ``online`` (1 while the Primary Host STATE is online).

Cardinality: one ``ack_age_seconds`` series per node the worker serves (a few thousand per
worker at fleet scale); everything else is fixed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest.host import PrimaryHost
from ingest.nodes import NodeState

T = TypeVar("T")

_COUNTERS = {
    "messages": "MQTT messages received",
    "metrics": "values (numeric and events) handed to QuestDB",
    "acks": "acknowledgements (NCMD) sent to edge nodes",
    "rebirth_requests": "rebirth requests sent",
    "rebirth_throttled": "rebirth requests suppressed by the rate limit",
    "shed_messages": "data messages not taken because QuestDB lags (not acknowledged)",
    "flush_failures": "QuestDB flushes that failed",
}
_DEAD = "dead_letters."


class HostView(Protocol):
    """What the collector reads, all public on :class:`ingest.host.PrimaryHost`."""

    def counters(self) -> Mapping[str, int]: ...

    def nodes(self) -> Iterable[NodeState]: ...

    def online(self) -> bool: ...


class _PrimaryHostView:
    def __init__(self, host: PrimaryHost) -> None:
        self._host = host

    def counters(self) -> Mapping[str, int]:
        return self._host.counters

    def nodes(self) -> Iterable[NodeState]:
        return self._host.processor.nodes.values()

    def online(self) -> bool:
        return self._host.online.is_set()


def _copy(read: Callable[[], T], attempts: int = 5) -> T:
    for _ in range(attempts - 1):
        try:
            return read()
        except RuntimeError:  # a dict resized under us on the event loop's thread
            continue
    return read()


class IngestCollector(Collector):
    def __init__(self, host: HostView, clock_ms: Callable[[], int] | None = None) -> None:
        self._host = host
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = _copy(lambda: dict(self._host.counters()))
        for name, doc in _COUNTERS.items():
            yield CounterMetricFamily(f"derrick_ingest_{name}", doc, value=counters.get(name, 0))
        dead = CounterMetricFamily(
            "derrick_ingest_dead_letters", "messages dead-lettered, by reason", labels=["reason"]
        )
        for key, value in sorted(counters.items()):
            if key.startswith(_DEAD):
                dead.add_metric([key.removeprefix(_DEAD)], value)
        yield dead
        nodes = _copy(lambda: list(self._host.nodes()))
        now = self._clock_ms()
        age = GaugeMetricFamily(
            "derrick_ingest_ack_age_seconds",
            "seconds since the node was last acknowledged",
            labels=["group", "node"],
        )
        for node in nodes:
            if node.last_ack_ms is not None:
                age.add_metric([node.group_id, node.edge_node_id], (now - node.last_ack_ms) / 1000)
        yield age
        yield GaugeMetricFamily("derrick_ingest_nodes", "edge nodes known", value=len(nodes))
        yield GaugeMetricFamily(
            "derrick_ingest_online",
            "1 while this worker's Primary Host STATE is online",
            value=1 if self._host.online() else 0,
        )


def serve(host: PrimaryHost, port: int, address: str = "127.0.0.1") -> CollectorRegistry:
    """Expose the host's metrics on ``http://address:port/metrics`` (a daemon thread)."""
    registry = CollectorRegistry()
    registry.register(IngestCollector(_PrimaryHostView(host)))
    start_http_server(port, addr=address, registry=registry)
    return registry
