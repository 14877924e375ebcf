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
- ``nodes`` (known nodes), ``online`` (1 while the Primary Host STATE is online),
  ``pending_rows`` (held in memory until QuestDB accepts them; ``max_pending_rows`` bounds it),
  ``compiled_modules`` (hot modules this process runs compiled, ``ingest/compiled.py``; 0:
  interpreted, about a fifth slower a message).

Readiness: ``/ready`` on the same listener answers 200 ``ready`` when the Primary Host is
online (connected to the broker, STATE online published) and no QuestDB flush failed within
``READY_FLUSH_WINDOW_S`` (failures seen through ``flush_failures``, between two probes), 503
with the reasons otherwise. Every other path serves the metrics.

Cardinality: one ``ack_age_seconds`` series per node the worker serves (a few thousand per
worker at fleet scale); everything else is fixed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import Any, Protocol, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest.compiled import COMPILED_MODULES, is_compiled
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
    "quota_deferred_messages": "data messages held back by their node's quota (not acknowledged)",
    "quota_deferred_metrics": "metrics held back by their node's quota (sent again by the node)",
}
_DEAD = "dead_letters."


class HostView(Protocol):
    """What the collector reads, all public on :class:`ingest.host.PrimaryHost`."""

    def counters(self) -> Mapping[str, int]: ...

    def nodes(self) -> Iterable[NodeState]: ...

    def online(self) -> bool: ...

    def pending_rows(self) -> int: ...


class _PrimaryHostView:
    def __init__(self, host: PrimaryHost) -> None:
        self._host = host

    def counters(self) -> Mapping[str, int]:
        return self._host.counters

    def nodes(self) -> Iterable[NodeState]:
        return self._host.processor.nodes.values()

    def online(self) -> bool:
        return self._host.online.is_set()

    def pending_rows(self) -> int:
        return self._host.pending_rows()


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
        yield GaugeMetricFamily(
            "derrick_ingest_pending_rows",
            "rows held in memory until QuestDB accepts them (bounded by max_pending_rows)",
            value=_copy(self._host.pending_rows),
        )
        yield GaugeMetricFamily(
            "derrick_ingest_compiled_modules",
            "hot modules loaded compiled with mypyc (0: running interpreted)",
            value=sum(is_compiled(sys.modules[m]) for m in COMPILED_MODULES if m in sys.modules),
        )


#: A flush failure seen less than this long ago makes the worker not ready.
READY_FLUSH_WINDOW_S = 30.0


class Readiness:
    """Ready = online and no flush failure seen within ``window_s`` (checked per probe)."""

    def __init__(
        self,
        host: HostView,
        window_s: float = READY_FLUSH_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host, self._window_s, self._clock = host, window_s, clock
        self._lock = threading.Lock()
        self._failures = 0
        self._failed_at: float | None = None

    def check(self) -> tuple[bool, list[str]]:
        now = self._clock()
        failures = _copy(lambda: dict(self._host.counters())).get("flush_failures", 0)
        with self._lock:
            if failures != self._failures:
                self._failures, self._failed_at = failures, now
            failed_at = self._failed_at
        problems = []
        if not self._host.online():
            problems.append("primary host not online (broker unreachable or STATE not sent)")
        if failed_at is not None and now - failed_at < self._window_s:
            problems.append(f"a QuestDB flush failed within the last {self._window_s:.0f} s")
        return not problems, problems


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes are not worth a log line each."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def wsgi_app(registry: CollectorRegistry, readiness: Readiness) -> Any:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/ready":
            return metrics_app(environ, start_response)
        ok, problems = readiness.check()
        body = ("ready\n" if ok else "".join(f"not ready: {p}\n" for p in problems)).encode()
        status = "200 OK" if ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body]

    return app


def serve(host: PrimaryHost, port: int, address: str = "127.0.0.1") -> CollectorRegistry:
    """Expose the host's metrics on ``http://address:port/metrics`` and its readiness on
    ``/ready`` (a daemon thread)."""
    view = _PrimaryHostView(host)
    registry = CollectorRegistry()
    registry.register(IngestCollector(view))
    server = make_server(
        address,
        port,
        wsgi_app(registry, Readiness(view)),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return registry
