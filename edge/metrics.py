"""Prometheus metrics of an edge agent, read from the status the agent already keeps.

Nothing is added to the hot path: every status interval the agent computes an
:class:`edge.status.AgentStatus` (queue statistics from SQLite, connection and
acknowledgement state, sampling mode) for ``status.json`` and keeps the last one in
:attr:`EdgeAgent.status`. A collector turns that object into metrics at scrape time, from
the HTTP server's thread (``prometheus_client``); the attribute is replaced whole, never
mutated, so a scrape sees one consistent status. Values are at most one status interval
old (``[publish] status_interval_ms``, 5 s by default); ages are computed at scrape time.

Series (all prefixed ``derrick_edge_``):

- ``queue_batches``, ``queue_samples``, ``queue_bytes``, ``queue_max_bytes``: what the
  store-and-forward queue holds (everything in it is unacknowledged: what is older than the
  live window is the replay backlog);
- ``oldest_unacked_age_seconds``: age of the oldest queued batch (0 when empty);
- ``evicted_samples_total``: samples dropped because the queue was full (data lost);
- ``acked_batch``: the highest batch number the Primary Host acknowledged;
- ``live`` (1 while connected and born), ``connected_seconds``, ``last_ack_age_seconds``;
- ``sampling_mode{mode}`` (1 for the current mode), ``published_samples_total``;
- ``status_age_seconds`` (how old the values are), ``info{appliance,version}``.

Nothing here is tenant data beyond the appliance's own id; the server binds loopback by
default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge.agent import EdgeAgent
from edge.status import AgentStatus

Metric = CounterMetricFamily | GaugeMetricFamily
#: What :meth:`edge.sampling.SamplingPolicy.mode` returns.
MODES = ("normal", "alarm")


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"derrick_edge_{name}", doc, value=value)


class EdgeCollector(Collector):
    """Metrics from the last :class:`AgentStatus` ``read_status`` returns."""

    def __init__(
        self,
        read_status: Callable[[], AgentStatus | None],
        read_published: Callable[[], int],
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._read_status = read_status
        self._read_published = read_published
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "derrick_edge_published_samples",
            "samples published (live and replayed, including re-sends)",
            value=self._read_published(),
        )
        status = self._read_status()
        if status is None:  # before the first status interval: only what is known
            yield _gauge("live", "1 while connected and born", 0)
            return
        now = self._clock_ms()
        q = status.queue
        info = GaugeMetricFamily(
            "derrick_edge_info", "the agent (value 1)", labels=["appliance", "version"]
        )
        info.add_metric([status.appliance, status.version], 1)
        yield info
        yield _gauge("status_age_seconds", "age of these values", (now - status.updated_ms) / 1000)
        yield _gauge("queue_batches", "batches in the queue (unacknowledged)", q.batches)
        yield _gauge("queue_samples", "samples in the queue (unacknowledged)", q.samples)
        yield _gauge("queue_bytes", "bytes the queue's SQLite file uses", q.used_bytes)
        yield _gauge("queue_max_bytes", "the queue's byte cap", q.max_bytes)
        oldest = 0.0 if q.oldest_created_ms is None else (now - q.oldest_created_ms) / 1000
        yield _gauge("oldest_unacked_age_seconds", "age of the oldest queued batch", oldest)
        yield CounterMetricFamily(
            "derrick_edge_evicted_samples",
            "samples evicted because the queue was full (lost)",
            value=q.evicted_samples,
        )
        yield _gauge("acked_batch", "highest batch number acknowledged", q.acked_batch)
        yield _gauge("live", "1 while connected and born", 1 if status.live else 0)
        since = status.connected_since_ms
        yield _gauge(
            "connected_seconds",
            "seconds since the current connection was made (0: not connected)",
            0 if since is None else (now - since) / 1000,
        )
        if status.last_ack_ms is not None:
            yield _gauge(
                "last_ack_age_seconds",
                "seconds since the last acknowledgement was applied",
                (now - status.last_ack_ms) / 1000,
            )
        mode = GaugeMetricFamily(
            "derrick_edge_sampling_mode", "1 for the current sampling mode", labels=["mode"]
        )
        for name in MODES:
            mode.add_metric([name], 1 if status.mode == name else 0)
        yield mode


def serve(agent: EdgeAgent, port: int, address: str = "127.0.0.1") -> CollectorRegistry:
    """Expose the agent's metrics on ``http://address:port/metrics`` (a daemon thread)."""
    registry = CollectorRegistry()
    registry.register(EdgeCollector(lambda: agent.status, lambda: agent.published_samples))
    start_http_server(port, addr=address, registry=registry)
    return registry
