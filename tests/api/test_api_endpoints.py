"""The HTTP API on real PostgreSQL and QuestDB: data endpoints with known answers, auth,
tenant isolation, hostile parameters, rate limits, OpenAPI (and schemathesis against it)."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections.abc import AsyncIterator

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api import registry
from api.keys import Role
from harness import QuestDB

from . import world as w

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

ACME_APP, BOLT_APP = "s201-a001", "s202-a001"


@pytest.fixture
async def client(world: w.World, questdb: QuestDB) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(w.make_app(world, questdb)) as c:
        yield c


def auth(world: w.World, who: str = "acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {world.keys[who]}"}


def local_day_sum(world: w.World, metric: str, day: dt.date, tz: str) -> tuple[float, int]:
    zone = zoneinfo.ZoneInfo(tz)
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    vals = [w.value(metric, i) for i, t in world.times if start <= t < end]
    return sum(vals), len(vals)


async def test_health_needs_no_key_and_everything_else_does(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    for headers in (
        {},
        {"X-API-Key": "dk_0123456789abcdef_" + "A" * 43},
        {"Authorization": "Basic x"},
    ):
        r = await client.get("/v1/sites", headers=headers)
        assert r.status_code == 401, r.text
    r = await client.get("/v1/sites", headers={"X-API-Key": world.keys["acme"]})
    assert r.status_code == 200
    assert [s["id"] for s in r.json()] == ["s201"]
    r = await client.get("/v1/sites", headers=auth(world, "vendor"))
    assert r.json() == []  # s202 is shared with the vendor: datasets only, never its identity
    r = await client.get("/v1/sites", headers=auth(world, "ops"))
    assert [s["id"] for s in r.json()] == ["s201", "s202"]


async def test_registry_and_current_values(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    site = (await client.get("/v1/sites/s201", headers=auth(world))).json()
    assert site["timezone"] == "America/Chicago"
    assert [(a["id"], a["state"]) for a in site["appliances"]] == [(ACME_APP, "provisioned")]
    app = (await client.get(f"/v1/appliances/{ACME_APP}", headers=auth(world))).json()
    assert {(m["name"], m["unit"], m["hot"]) for m in app["metrics"]} == {
        ("ROP", "ft/h", True),
        ("WOB", "klbf", True),
    }
    last_i, last_t = world.times[0]
    for path in ("/v1/sites/s201/current", f"/v1/appliances/{ACME_APP}/current"):
        got = (await client.get(path, headers=auth(world))).json()
        assert {(v["metric"], v["value"]) for v in got} == {
            ("ROP", w.value("ROP", last_i)),
            ("WOB", w.value("WOB", last_i)),
        }
        assert all(v["ts"].startswith(last_t.strftime("%Y-%m-%dT%H:%M:%S")) for v in got)


async def test_series_aggregates_compare_kpis(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    h = auth(world)
    r = await client.get(
        f"/v1/appliances/{ACME_APP}/series", params={"metric": "ROP", "bucket": "1h"}, headers=h
    )
    assert r.status_code == 200, r.text
    buckets = r.json()["buckets"]
    assert 23 <= len(buckets) <= 25
    by_hour = {t.replace(minute=0): w.value("ROP", i) for i, t in world.times}
    for b in buckets:
        start = dt.datetime.fromisoformat(b["ts"])
        assert b["avg"] == b["min"] == b["max"] == by_hour[start] and b["count"] == 1

    tz = "America/Chicago"
    r = await client.get(
        f"/v1/appliances/{ACME_APP}/aggregates",
        params={"metric": "WOB", "period": "day", "tz": tz},
        headers=h,
    )
    days = r.json()["buckets"]
    assert len(days) >= w.DAYS
    full = days[len(days) // 2]
    local = dt.datetime.fromisoformat(full["ts"]).astimezone(zoneinfo.ZoneInfo(tz))
    assert (local.hour, local.minute) == (0, 0)  # local midnight
    want_sum, want_count = local_day_sum(world, "WOB", local.date(), tz)
    assert (full["sum"], full["count"]) == (want_sum, want_count)

    r = await client.get(
        f"/v1/appliances/{ACME_APP}/aggregates",
        params={"metric": "WOB", "period": "week", "tz": tz},
        headers=h,
    )
    weeks = r.json()["buckets"]
    inner = weeks[1]
    start = dt.datetime.fromisoformat(inner["ts"]).astimezone(zoneinfo.ZoneInfo(tz))
    assert start.weekday() == 0 and start.hour == 0
    assert inner["count"] == 7 * 24  # a whole inner week (DST weeks have 167/169)  or
    r = await client.get(
        f"/v1/appliances/{ACME_APP}/aggregates",
        params={"metric": "WOB", "period": "month", "tz": tz},
        headers=h,
    )
    assert r.status_code == 200
    months = r.json()["buckets"]  # every sample of the world is in one of them
    assert sum(b["count"] for b in months) == len(world.times)
    assert sum(b["sum"] for b in months) == pytest.approx(
        sum(w.value("WOB", i) for i, _ in world.times), rel=1e-12
    )
    for b in months:
        first = dt.datetime.fromisoformat(b["ts"]).astimezone(zoneinfo.ZoneInfo(tz))
        assert (first.day, first.hour, first.minute) == (1, 0, 0)  # local first of the month

    r = await client.get(
        f"/v1/appliances/{ACME_APP}/compare", params={"period": "week", "tz": tz}, headers=h
    )
    cmp_ = r.json()
    rop = next(m for m in cmp_["metrics"] if m["metric"] == "ROP")
    cur, prev = rop["current"]["avg"], rop["previous"]["avg"]
    assert rop["avg_change_pct"] == pytest.approx((cur - prev) / prev * 100)
    assert rop["previous"]["count"] == 7 * 24 or rop["previous"]["count"] in (167, 169)
    r = await client.get(
        f"/v1/appliances/{ACME_APP}/compare", params={"period": "month", "tz": tz}, headers=h
    )
    month = r.json()
    assert all(m["previous"] is None and m["avg_change_pct"] is None for m in month["metrics"])

    kpis = (await client.get(f"/v1/appliances/{ACME_APP}/kpis", headers=h)).json()
    assert kpis["current"] == [
        {"metric": "DrillingEfficiency", "value": 40.0, "ts": kpis["current"][0]["ts"]}
    ]
    # today: the KPI values (40 + k, k minutes 10k + 1 ago) since local midnight of the zone
    zone = zoneinfo.ZoneInfo(kpis["tz"])
    midnight = dt.datetime.combine(world.now.astimezone(zone).date(), dt.time(), zone)
    today = [40.0 + k for k in range(6) if world.now - dt.timedelta(minutes=10 * k + 1) >= midnight]
    want = (
        [{"metric": "DrillingEfficiency", "avg": sum(today) / len(today), "min": min(today),
          "max": max(today), "count": len(today)}]
        if today
        else []
    )  # fmt: skip
    assert kpis["today"] == want


#: the query each GET route needs to answer (the rest take defaults)
QUERY = {
    "/v1/appliances/{appliance_id}/series": "?metric=ROP",
    "/v1/appliances/{appliance_id}/aggregates": "?metric=ROP",
}
#: more variants of a route than its default answer
VARIANTS = ["/v1/sites/{site_id}/reports/{month}?format=csv&table=alerts"]


async def _id_routes(client: AsyncTestClient[Litestar]) -> list[str]:
    """Every GET route of the OpenAPI document that takes a site or appliance id (the alert
    routes by numeric id are in tests/api/test_api_alerts.py), with its query, and VARIANTS:
    a route added later is in this list without anyone remembering to add it."""
    schema = (await client.get("/schema/openapi.json")).json()
    routes = [
        path + QUERY.get(path, "")
        for path, ops in schema["paths"].items()
        if "get" in ops and ("{site_id}" in path or "{appliance_id}" in path)
    ]
    return sorted(routes) + VARIANTS


async def test_another_tenants_ids_are_404_like_missing_ones(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    month = (world.now.date().replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    routes = await _id_routes(client)
    assert {"/v1/sites/{site_id}/completeness", "/v1/sites/{site_id}/live",
            "/v1/appliances/{appliance_id}/kpis"} <= set(routes)  # fmt: skip
    for template in routes:
        path = template.replace("{month}", month)

        def at(site: str, app: str, path: str = path) -> str:
            return path.replace("{site_id}", site).replace("{appliance_id}", app)

        foreign = await client.get(at("s202", BOLT_APP), headers=auth(world))
        missing = await client.get(at("s999", "s999-a999"), headers=auth(world))
        assert foreign.status_code == missing.status_code == 404, (path, foreign.text)
        assert foreign.json() == missing.json()
        assert foreign.headers.get("content-length") == missing.headers.get("content-length")
        own = await client.get(at("s202", BOLT_APP), headers=auth(world, "bolt"))
        assert own.status_code in (200, 501), (path, own.text)  # 501: live not configured here


async def test_every_route_but_health_and_ready_refuses_a_request_without_a_valid_key(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    """Every operation of the OpenAPI document, with its ids filled in (the caller's own, so
    that only the key is wrong) and an empty JSON body where it takes one: 401 without a
    key, with a malformed one and with a well-formed unknown one."""
    schema = (await client.get("/schema/openapi.json")).json()
    ids = {"site_id": "s201", "appliance_id": ACME_APP, "alert_id": "1", "rule_id": "1",
           "target_id": "1", "month": "2026-11"}  # fmt: skip
    open_paths = {"/health", "/ready"}
    called = set()
    for path, ops in schema["paths"].items():
        if path in open_paths or path.startswith("/schema"):
            continue
        url = path
        for name, value in ids.items():
            url = url.replace("{" + name + "}", value)
        assert "{" not in url, f"no test id for {path}"
        for method in ops.keys() & {"get", "post", "put", "patch", "delete"}:
            for headers in (
                {},
                {"Authorization": "Bearer not-a-key"},
                {"Authorization": "Bearer dk_0123456789abcdef_" + "A" * 43},
            ):
                r = await client.request(method.upper(), url, headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert "s201" not in r.text and "Acme" not in r.text
            called.add((method, path))
    assert len(called) >= 20, called
    assert ("post", "/v1/sites/{site_id}/alert-rules") in called
    assert ("get", "/v1/vendor/datasets/daily") in called
    for path in open_paths:
        assert (await client.get(path)).status_code in (200, 503)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        (f"/v1/appliances/{ACME_APP}/series?metric=ROP&tz=Mars/Olympus", "time zone"),
        (f"/v1/appliances/{ACME_APP}/series?metric=ROP&tz=../../etc/passwd", "time zone"),
        (f"/v1/appliances/{ACME_APP}/series?metric=ROP&bucket=1w", "bucket"),
        (f"/v1/appliances/{ACME_APP}/series?metric=ROP&start=2000-01-01T00:00:00Z", "too large"),
        (
            f"/v1/appliances/{ACME_APP}/series?metric=ROP&start=2030-01-02T00:00:00Z"
            "&end=2030-01-01T00:00:00Z",
            "before end",
        ),
        (f"/v1/appliances/{ACME_APP}/series", "metric"),
        ("/v1/sites/s201';DROP TABLE sites;--", "site_id"),
        ("/v1/appliances/s201-a001 OR 1=1/current", "appliance_id"),
        (f"/v1/appliances/{ACME_APP}/aggregates?metric=ROP&period=decade", "period"),
        ("/v1/sites/s201/current?since_hours=-5", "since_hours"),
    ],
)
async def test_hostile_parameters_get_400_with_a_reason(
    client: AsyncTestClient[Litestar], world: w.World, path: str, fragment: str
) -> None:
    r = await client.get(path, headers=auth(world))
    assert r.status_code == 400, (path, r.status_code, r.text)
    assert fragment in r.text, r.text


async def test_sql_in_a_metric_name_is_just_a_name(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    r = await client.get(
        f"/v1/appliances/{ACME_APP}/series",
        params={"metric": "ROP' OR '1'='1", "bucket": "1h"},
        headers=auth(world),
    )
    assert r.status_code == 200 and r.json()["buckets"] == []


async def test_rate_limit_per_key_with_retry_after(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    codes = [
        (await client.get("/v1/sites", headers=auth(world, "slow"))).status_code for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    r = await client.get("/v1/sites", headers=auth(world, "slow"))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "rate limit of this key (0.2 requests/s)" in r.text
    assert (await client.get("/v1/sites", headers=auth(world))).status_code == 200  # other key


async def test_a_report_counts_as_many_requests(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    """A key with a burst of 25 and a slow refill: one report (20) passes, the second is 429
    saying what it counts as, while ordinary requests still have their 5."""
    with psycopg.connect(world.registry_dsn, autocommit=True) as conn:
        user = registry.create_user(
            conn, "acme", f"reports-{uuid.uuid4().hex[:6]}@acme.test", Role.CUSTOMER_VIEWER
        )
        key = registry.issue_api_key(conn, user, "reports", rate_per_s=0.01, burst=25).plaintext
    h = {"Authorization": f"Bearer {key}"}
    month = (world.now.date().replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    report = f"/v1/sites/s201/reports/{month}?format=csv&table=daily"
    assert (await client.get(report, headers=h)).status_code == 200
    r = await client.get(report, headers=h)
    assert r.status_code == 429, r.text
    assert "(this request counts as 20)" in r.json()["detail"]
    codes = [(await client.get("/v1/sites", headers=h)).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]


async def test_rate_limit_per_tenant_across_its_keys(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    """Tenant ``tight`` may make 4 requests in a burst, whichever of its keys asks: more keys
    do not buy a larger allowance."""
    codes = [
        (await client.get("/v1/sites", headers=auth(world, k))).status_code
        for k in ("tight1", "tight2", "tight1", "tight2", "tight2")
    ]
    assert codes == [200, 200, 200, 200, 429]
    r = await client.get("/v1/sites", headers=auth(world, "tight1"))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "tenant tight (0.2 requests/s, all its keys together)" in r.text
    assert (await client.get("/v1/sites", headers=auth(world, "bolt"))).status_code == 200


async def test_openapi_and_browsable_ui(client: AsyncTestClient[Litestar]) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    assert "/v1/appliances/{appliance_id}/series" in spec["paths"]
    assert set(spec["components"]["securitySchemes"]) == {"BearerAuth", "ApiKeyHeader"}
    ui = await client.get("/schema/swagger")
    assert ui.status_code == 200 and "swagger" in ui.text.lower()
