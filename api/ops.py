"""Operations: Prometheus metrics of the API (latency and counts per route) on their own port.

The metrics are the Litestar Prometheus plugin's middleware (``litestar.plugins.prometheus``)
with ``group_path``: the ``path`` label is the route *template*
(``/v1/appliances/{appliance_id}/series``), never the requested path, so no site,
appliance or tenant id reaches a label and the cardinality is the number of routes.
Series (prefix ``derrick_api_``): ``request_duration_seconds`` (histogram),
``requests_total``, ``requests_error_total`` (5xx), ``requests_in_progress``, each by
``method``, ``path``, ``status_code`` (and ``app_name``). Requests no route matches (404 before
routing) are not counted: the middleware runs inside the matched route's stack.

Why a separate port and not ``/metrics`` on the API: the API port faces customers and every
route on it but ``/health`` and ``/ready`` needs a key; a key-less ``/metrics`` there would tell
anyone the request mix of every tenant, and a keyed one would need a scrape credential in
Prometheus. A second listener (``[metrics] port``, loopback by default, the private interface
in production) keeps the public surface and the OpenAPI document unchanged.
"""

from __future__ import annotations

from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import REGISTRY, start_http_server

#: Latency buckets (seconds): API answers take milliseconds to a few seconds.
BUCKETS: list[str | float] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


def prometheus_config() -> PrometheusConfig:
    """The middleware configuration; the server-sent-event stream is excluded (its duration is
    the subscription's, not a latency)."""
    return PrometheusConfig(
        app_name="derrick-api",
        prefix="derrick_api",
        group_path=True,
        buckets=BUCKETS,
        exclude=[r"/live$", "^/schema"],
    )


def serve_metrics(port: int, address: str = "127.0.0.1") -> None:
    """Expose the process's metrics on ``http://address:port/metrics`` (a daemon thread)."""
    start_http_server(port, addr=address, registry=REGISTRY)
