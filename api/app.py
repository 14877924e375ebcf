"""The Litestar application: registry-backed auth, tenant isolation, data and live endpoints.

Every route but ``/health``, ``/ready`` (and the OpenAPI pages under ``/schema``) needs an
API key, as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. An id the caller may
not see is a 404 exactly like an id that does not exist. Each key has its own token bucket (429 with
``Retry-After``). Parameters are checked before any query: ids by pattern, time zones
against the IANA database, ranges by the number of buckets they would produce (400).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
import psycopg
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromQuery, PathParameter, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from psycopg_pool import AsyncConnectionPool

from api import readings
from api.access import Access, Principal
from api.completeness import site_completeness
from api.live import LiveFeed, StreamLimitError
from api.ops import prometheus_config
from api.ratelimit import Limit, RateLimiter
from api.readings import Bucket, Reader, Totals
from core.logformat import JsonFormatter, LogFormat
from core.queries import SERIES_BUCKETS

log = logging.getLogger(__name__)

OPENAPI_PATH = "/schema"

SiteId = Annotated[str, PathParameter(pattern=r"^s[0-9]{3,12}$", description="Site id, e.g. s017")]
ApplianceId = Annotated[
    str, PathParameter(pattern=r"^s[0-9]{3,12}-a[0-9]{3,12}$", description="Appliance id")
]
Tz = Annotated[
    str | None,
    QueryParameter(
        max_length=64,
        description="IANA time zone, e.g. America/Chicago (default: the site's time zone)",
    ),
]
MetricName = Annotated[
    str,
    QueryParameter(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$", description="Metric"),
]
OptionalMetricName = Annotated[
    str | None,
    QueryParameter(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$", description="Metric"),
]
BucketWidth = Literal["1m", "5m", "15m", "30m", "1h", "6h", "12h", "1d", "1M"]
MAX_BUCKETS = 5000
#: How long /ready waits for a connection to each store.
READY_TIMEOUT_S = 2.0
_EARLIEST = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
_LATEST = dt.datetime(2199, 12, 31, tzinfo=dt.UTC)
_BUCKET_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
                   "6h": 21600, "12h": 43200, "1d": 86400, "1M": 28 * 86400}  # fmt: skip
assert set(_BUCKET_SECONDS) == set(SERIES_BUCKETS)


class Services:
    """What the handlers use; opened and closed by the application's lifespan."""

    def __init__(
        self,
        access: Access,
        reader: Reader,
        *,
        pools: list[AsyncConnectionPool[Any]],
        live: LiveFeed | None = None,
        limiter: RateLimiter | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        vendor_key: bytes | None = None,
    ) -> None:
        self.access, self.reader, self.live = access, reader, live
        self.vendor_key = vendor_key  # pseudonym key of vendor datasets (never logged)
        self.pools = pools
        self.limiter = limiter or RateLimiter()
        self.now = clock


Svc = NamedDependency[Services]
Who = NamedDependency[Principal]


# -- response bodies -----------------------------------------------------------------------


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: Literal["ready", "not ready"]
    postgres: bool
    questdb: bool


class ApplianceSummary(msgspec.Struct):
    id: str
    state: str
    first_seen: dt.datetime | None
    last_birth: dt.datetime | None


class Site(msgspec.Struct):
    id: str
    name: str
    timezone: str
    appliances: list[ApplianceSummary] | None = None


class MetricInfo(msgspec.Struct):
    device: str
    name: str
    datatype: str
    unit: str | None
    hot: bool


class Appliance(msgspec.Struct):
    id: str
    site: str
    state: str
    metrics: list[MetricInfo]


class CurrentValue(msgspec.Struct):
    node: str
    device: str
    metric: str
    value: float | None
    ts: dt.datetime


class Series(msgspec.Struct):
    appliance: str
    metric: str
    bucket: str
    tz: str
    buckets: list[Bucket]


class Aggregates(msgspec.Struct):
    appliance: str
    metric: str
    period: str
    tz: str
    buckets: list[Bucket]


class Comparison(msgspec.Struct):
    device: str
    metric: str
    current: Totals | None
    previous: Totals | None
    avg_change_pct: float | None
    min_change_pct: float | None
    max_change_pct: float | None


class PeriodComparison(msgspec.Struct):
    appliance: str
    period: str
    tz: str
    current_start: dt.datetime
    current_end: dt.datetime
    previous_start: dt.datetime
    previous_end: dt.datetime
    metrics: list[Comparison]


class KpiValue(msgspec.Struct):
    metric: str
    value: float | None
    ts: dt.datetime


class KpiTotals(msgspec.Struct):
    metric: str
    avg: float | None
    min: float | None
    max: float | None
    count: int


class Kpis(msgspec.Struct):
    appliance: str
    tz: str
    current: list[KpiValue]
    today: list[KpiTotals]


# -- auth, rate limits, visibility ---------------------------------------------------------


def _presented_key(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key")


async def authenticate(request: Request[Any, Any, Any], svc: Svc) -> Principal:
    presented = _presented_key(request)
    who = await svc.access.authenticate(presented) if presented else None
    if who is None:
        raise NotAuthorizedException(
            "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # a route that costs the servers many ordinary requests' work (a PDF, a Parquet export)
    # says so with ``cost=`` in its decorator and counts as that many requests
    cost = float(request.route_handler.opt.get("cost", 1))
    counts = f" (this request counts as {cost:g})" if cost != 1 else ""
    key = Limit(who.key_id, who.rate_per_s, who.burst)
    tenant = Limit(f"tenant:{who.tenant}", who.tenant_rate_per_s, who.tenant_burst)
    refused = svc.limiter.admit((key, tenant), cost)
    if refused is not None:
        limit, retry_after = refused
        detail = (
            f"rate limit of this key ({who.rate_per_s:g} requests/s) exceeded{counts}"
            if limit is key
            else f"rate limit of tenant {who.tenant} ({who.tenant_rate_per_s:g} requests/s, "
            f"all its keys together) exceeded{counts}"
        )
        raise HTTPException(
            status_code=429, detail=detail, headers={"Retry-After": str(retry_after)}
        )
    return who


def _key_first(services: Services) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """The app's ``before_request`` hook: the key and its rate limits are checked before
    anything else of a request is read (path and query parameters, the body), so that a
    request without a valid key is 401 (or 429) on every route whatever its parameters, and
    an unauthenticated caller learns nothing, not even which parameters a route wants. The
    principal waits in ``request.state`` for the ``who`` dependency. Open: the routes marked
    ``exclude_from_auth`` (health, ready) and the OpenAPI document and UI."""

    async def check(request: Request[Any, Any, Any]) -> None:
        if (
            request.route_handler.opt.get("exclude_from_auth")
            or request.scope["path"].startswith(OPENAPI_PATH + "/")
            or request.scope["path"] == OPENAPI_PATH
        ):
            return
        request.state.who = await authenticate(request, services)

    return check


def _principal(request: Request[Any, Any, Any]) -> Principal:
    """The ``who`` dependency: the principal :func:`_key_first` authenticated."""
    who: Principal = request.state.who
    return who


_NOT_FOUND = "not found"


async def _site(svc: Services, who: Principal, site: str) -> tuple[Any, ...]:
    row = await svc.access.site(who, site)
    if row is None:
        raise NotFoundException(_NOT_FOUND)
    return row


async def _appliance(svc: Services, who: Principal, appliance: str) -> tuple[Any, ...]:
    row = await svc.access.appliance(who, appliance)
    if row is None:
        raise NotFoundException(_NOT_FOUND)
    return row


def _zone(tz: str) -> Any:
    try:
        return readings.zone(tz)
    except ValueError as exc:
        raise ValidationException(str(exc)) from exc


def _site_zone(tz: str | None, appliance: tuple[Any, ...]) -> tuple[str, Any]:
    """The zone a request asked for, else its appliance's site's (registry) zone."""
    name = tz if tz is not None else str(appliance[3])
    return name, _zone(name)


def _range(
    svc: Services,
    start: dt.datetime | None,
    end: dt.datetime | None,
    tz: Any,
    default: dt.timedelta,
) -> tuple[dt.datetime, dt.datetime]:
    for given in (start, end):
        if given is not None and not _EARLIEST.year <= given.year <= _LATEST.year:
            raise ValidationException(
                f"start/end must lie between {_EARLIEST.year} and {_LATEST.year}"
            )
    end_ = readings.aware(end, tz) if end else svc.now()
    start_ = readings.aware(start, tz) if start else end_ - default
    if start_ >= end_:
        raise ValidationException("start must be before end")
    return start_.astimezone(dt.UTC), end_.astimezone(dt.UTC)


def _check_buckets(start: dt.datetime, end: dt.datetime, seconds: int) -> None:
    n = (end - start).total_seconds() / seconds
    if n > MAX_BUCKETS:
        raise ValidationException(
            f"range too large: {n:.0f} buckets (at most {MAX_BUCKETS}); "
            "narrow start/end or use a wider bucket"
        )


# -- routes ----------------------------------------------------------------------------------


@get("/health", exclude_from_auth=True, tags=["ops"])
async def health() -> Health:
    """Liveness: no key needed."""
    return Health("ok")


async def _reachable(pool: AsyncConnectionPool[Any]) -> bool:
    try:
        async with pool.connection(timeout=READY_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")
    except psycopg.Error as exc:  # PoolTimeout and PoolClosed too
        log.warning("readiness: %s unreachable: %s", pool.name, type(exc).__name__)
        return False
    return True


@get("/ready", exclude_from_auth=True, tags=["ops"])
async def ready(*, svc: Svc) -> Response[Readiness]:
    """Readiness: 200 when PostgreSQL (registry) and QuestDB answer, else 503. No key needed;
    says only which store is unreachable."""
    pg = await _reachable(svc.access.pool)
    qdb = await _reachable(svc.reader.pool)
    ok = pg and qdb
    return Response(
        Readiness("ready" if ok else "not ready", postgres=pg, questdb=qdb),
        status_code=200 if ok else 503,
    )


@get("/v1/sites", tags=["registry"])
async def list_sites(*, svc: Svc, who: Who) -> list[Site]:
    """The sites the key may see."""
    return [Site(r[0], r[1], r[2]) for r in await svc.access.sites(who)]


@get("/v1/sites/{site_id:str}", tags=["registry"])
async def get_site(*, svc: Svc, who: Who, site_id: SiteId) -> Site:
    """One site and its appliances (from the registry)."""
    row = await _site(svc, who, site_id)
    apps = [ApplianceSummary(*a) for a in await svc.access.appliances(site_id)]
    return Site(row[0], row[1], row[2], apps)


@get("/v1/sites/{site_id:str}/current", tags=["data"])
async def site_current(
    *,
    svc: Svc,
    who: Who,
    site_id: SiteId,
    since_hours: Annotated[int, QueryParameter(ge=1, le=24 * 31)] = 48,
) -> list[CurrentValue]:
    """Current value of every metric of every appliance of a site (last seen within
    ``since_hours``)."""
    await _site(svc, who, site_id)
    since = svc.now() - dt.timedelta(hours=since_hours)
    rows = await svc.reader.site_current(site_id, since)
    return [CurrentValue(n, d, m, v, readings.utc(t)) for n, d, m, v, t in rows]


@get("/v1/appliances/{appliance_id:str}", tags=["registry"])
async def get_appliance(*, svc: Svc, who: Who, appliance_id: ApplianceId) -> Appliance:
    """An appliance: provisioning state and the metrics its births declared."""
    row = await _appliance(svc, who, appliance_id)
    metrics = [MetricInfo(*m) for m in await svc.access.metrics(appliance_id)]
    return Appliance(row[0], row[1], row[2], metrics)


@get("/v1/appliances/{appliance_id:str}/current", tags=["data"])
async def appliance_current(
    *,
    svc: Svc,
    who: Who,
    appliance_id: ApplianceId,
    since_hours: Annotated[int, QueryParameter(ge=1, le=24 * 31)] = 48,
) -> list[CurrentValue]:
    """Current value of every metric of one appliance."""
    row = await _appliance(svc, who, appliance_id)
    since = svc.now() - dt.timedelta(hours=since_hours)
    rows = await svc.reader.node_current(row[1], appliance_id, since)
    return [CurrentValue(appliance_id, d, m, v, readings.utc(t)) for d, m, v, t in rows]


@get("/v1/appliances/{appliance_id:str}/series", tags=["data"])
async def series(
    *,
    svc: Svc,
    who: Who,
    appliance_id: ApplianceId,
    metric: MetricName,
    bucket: FromQuery[BucketWidth] = "1m",
    tz: Tz = None,
    start: FromQuery[dt.datetime | None] = None,
    end: FromQuery[dt.datetime | None] = None,
) -> Series:
    """One metric in buckets (avg, min, max, count, sum), aligned to the calendar of ``tz``
    (default: the site's zone). Naive ``start``/``end`` are read in ``tz``; default: the last
    24 hours."""
    if tz is not None:
        _zone(tz)
    row = await _appliance(svc, who, appliance_id)
    tz, zone = _site_zone(tz, row)
    start_, end_ = _range(svc, start, end, zone, dt.timedelta(hours=24))
    _check_buckets(start_, end_, _BUCKET_SECONDS[bucket])
    buckets = await svc.reader.series(
        row[1], appliance_id, metric=metric, bucket=bucket, start=start_, end=end_, tz=tz
    )
    return Series(appliance_id, metric, bucket, tz, buckets)


@get("/v1/appliances/{appliance_id:str}/aggregates", tags=["data"])
async def aggregates(
    *,
    svc: Svc,
    who: Who,
    appliance_id: ApplianceId,
    metric: MetricName,
    period: FromQuery[readings.Period] = "day",
    tz: Tz = None,
    start: FromQuery[dt.datetime | None] = None,
    end: FromQuery[dt.datetime | None] = None,
) -> Aggregates:
    """Daily, weekly (ISO, Monday first) or monthly aggregates in ``tz`` (default: the site's
    zone), from the rollup views. Default range: 31 days (day), 12 weeks (week), 12 months
    (month)."""
    if tz is not None:
        _zone(tz)
    row = await _appliance(svc, who, appliance_id)
    tz, zone = _site_zone(tz, row)
    default = {"day": 31, "week": 84, "month": 366}[period]
    start_, end_ = _range(svc, start, end, zone, dt.timedelta(days=default))
    _check_buckets(start_, end_, 86400)
    if period == "month":
        buckets = await svc.reader.series(
            row[1], appliance_id, metric=metric, bucket="1M", start=start_, end=end_, tz=tz
        )
    else:
        buckets = await svc.reader.series(
            row[1], appliance_id, metric=metric, bucket="1d", start=start_, end=end_, tz=tz
        )
        if period == "week":
            buckets = readings.weekly(buckets, zone)
    return Aggregates(appliance_id, metric, period, tz, buckets)


@get("/v1/appliances/{appliance_id:str}/compare", tags=["data"])
async def compare(
    *,
    svc: Svc,
    who: Who,
    appliance_id: ApplianceId,
    period: FromQuery[readings.ComparePeriod] = "week",
    tz: Tz = None,
    metric: OptionalMetricName = None,
) -> PeriodComparison:
    """This week so far vs last week, or this month so far vs the same month last year
    (in ``tz``, default: the site's zone): avg/min/max/count/sum per metric and the
    percentage change."""
    if tz is not None:
        _zone(tz)
    row = await _appliance(svc, who, appliance_id)
    tz, zone = _site_zone(tz, row)
    (cs, ce), (ps, pe) = readings.period_windows(period, svc.now(), zone)
    current = await svc.reader.totals(row[1], appliance_id, cs, ce, to_now=True)
    previous = await svc.reader.totals(row[1], appliance_id, ps, pe)
    cur = {(t.device, t.metric): t for t in current}
    prev = {(t.device, t.metric): t for t in previous}
    out = []
    for key in sorted(cur.keys() | prev.keys()):
        if metric is not None and key[1] != metric:
            continue
        c, p = cur.get(key), prev.get(key)
        both = c is not None and p is not None
        out.append(
            Comparison(
                key[0],
                key[1],
                c,
                p,
                readings.pct_change(c.avg, p.avg) if c and p else None,
                readings.pct_change(c.min, p.min) if c and p else None,
                readings.pct_change(c.max, p.max) if both and c and p else None,
            )
        )
    return PeriodComparison(appliance_id, period, tz, cs, ce, ps, pe, out)


@get("/v1/appliances/{appliance_id:str}/kpis", tags=["data"])
async def kpis(*, svc: Svc, who: Who, appliance_id: ApplianceId, tz: Tz = None) -> Kpis:
    """Drilling KPIs of an appliance: current values and today's (in ``tz``, default: the
    site's zone) avg/min/max."""
    if tz is not None:
        _zone(tz)
    row = await _appliance(svc, who, appliance_id)
    tz, zone = _site_zone(tz, row)
    now = svc.now()
    midnight = dt.datetime.combine(now.astimezone(zone).date(), dt.time(), zone)
    current = await svc.reader.kpis_current(appliance_id, now - dt.timedelta(days=2))
    today = await svc.reader.kpi_totals(appliance_id, midnight.astimezone(dt.UTC), now)
    return Kpis(
        appliance_id,
        tz,
        [KpiValue(m, v, readings.utc(t)) for m, v, t in current],
        [KpiTotals(m, a, lo, hi, int(n)) for m, a, lo, hi, n in today],
    )


@get("/v1/sites/{site_id:str}/live", tags=["live"])
async def live(*, svc: Svc, who: Who, site_id: SiteId) -> ServerSentEvent:
    """Server-sent events: every hot value of the site as it arrives from the broker
    (event ``value``, data: site, node, device, metric, value, ts in UTC ms)."""
    await _site(svc, who, site_id)
    feed = svc.live
    if feed is None:
        raise HTTPException(status_code=501, detail="live stream not configured")
    if (why := feed.refusal(who.key_id, who.tenant)) is not None:
        feed.counters["streams_refused"] += 1
        raise HTTPException(status_code=429, detail=why, headers={"Retry-After": "5"})

    async def events() -> AsyncIterator[ServerSentEventMessage]:
        try:
            async with feed.subscribe(site_id, key_id=who.key_id, tenant=who.tenant) as queue:
                yield ServerSentEventMessage(data=None, comment="subscribed")
                while True:
                    value = await queue.get()
                    yield ServerSentEventMessage(
                        data=msgspec.json.encode(value).decode(), event="value"
                    )
        except StreamLimitError as exc:  # lost a race with another request of the same key
            yield ServerSentEventMessage(data=str(exc), event="error")

    return ServerSentEvent(events())


# -- application -----------------------------------------------------------------------------


def _store_unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning("data store unavailable: %s", exc)
    return Response(
        {"status_code": 503, "detail": "data store unavailable"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def create_app(
    services: Services, *, metrics: bool = False, log_format: LogFormat = "text"
) -> Litestar:
    """The application; ``metrics``: time and count requests per route (``api.ops``);
    ``log_format``: Litestar configures the root logger, in this format."""
    from api.alerts_routes import ROUTES as ALERT_ROUTES  # noqa: PLC0415 - imports this module
    from api.reports_routes import ROUTES as REPORT_ROUTES  # noqa: PLC0415
    from api.vendor_routes import ROUTES as VENDOR_ROUTES  # noqa: PLC0415

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        for pool in services.pools:
            await pool.open(wait=True, timeout=30)
        try:
            async with asyncio.TaskGroup() as tasks:
                task = (
                    tasks.create_task(services.live.run(), name="live-feed")
                    if services.live
                    else None
                )
                try:
                    yield
                finally:
                    if task is not None:
                        task.cancel()
        finally:
            for pool in services.pools:
                await pool.close()

    security: list[dict[str, list[str]]] = [{"BearerAuth": []}, {"ApiKeyHeader": []}]
    routes = [list_sites, get_site, site_current, get_appliance, appliance_current, series,
              aggregates, compare, kpis, live, site_completeness]  # fmt: skip
    return Litestar(
        route_handlers=[health, ready, *routes, *ALERT_ROUTES, *VENDOR_ROUTES, *REPORT_ROUTES],
        dependencies={
            "svc": Provide(lambda: services, sync_to_thread=False),
            "who": Provide(_principal, sync_to_thread=False),
        },
        before_request=_key_first(services),
        lifespan=[lifespan],
        exception_handlers={psycopg.OperationalError: _store_unavailable},
        openapi_config=OpenAPIConfig(
            title="Derrick API",
            version="1.0.0",
            description="Drill-site telemetry for customers, vendors and operations.",
            path=OPENAPI_PATH,
            render_plugins=[SwaggerRenderPlugin()],
            components=Components(
                security_schemes={
                    "BearerAuth": SecurityScheme(type="http", scheme="bearer"),
                    "ApiKeyHeader": SecurityScheme(
                        type="apiKey", name="X-API-Key", security_scheme_in="header"
                    ),
                }
            ),
            security=security,
        ),
        state=State({}),
        middleware=[prometheus_config().middleware] if metrics else [],
        logging_config=(
            LoggingConfig(formatters={"standard": {"()": JsonFormatter}})
            if log_format == "json"
            else LoggingConfig()
        ),
        debug=False,
    )
