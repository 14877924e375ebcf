"""Alert rules, the alert lifecycle and notification targets through the API, on the real
registry: CRUD with validation, open → acknowledged → resolved with who/when/note, filters,
roles, and another tenant's ids answered like missing ones. The list's filters (site,
appliance, state, severity, rule, since/until, limit) run on a registry of their own with
alerts of known opening times; each case's expected list is computed in the test."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from alerts.store import AlertStore
from api import keys, registry
from core.alerting import Transition
from harness import QuestDB

from . import world as w

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

THRESHOLD = {"kind": "threshold", "op": "above", "value": 3000, "clear": 2800}


@pytest.fixture
async def client(world: w.World, questdb: QuestDB) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(w.make_app(world, questdb)) as c:
        yield c


@pytest.fixture
async def store(world: w.World) -> AsyncIterator[AlertStore]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        world.registry_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    async with pool:
        yield AlertStore(pool)


def auth(world: w.World, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.keys[who]}"}


async def make_rule(
    client: AsyncTestClient[Litestar], world: w.World, site: str, who: str, **extra: Any
) -> dict[str, Any]:
    body = {"name": "pump pressure high", "metric": "SPP", "condition": THRESHOLD, **extra}
    r = await client.post(f"/v1/sites/{site}/alert-rules", json=body, headers=auth(world, who))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def open_alert(store: AlertStore, rule_id: int, appliance: str, ts_ms: int) -> int:
    t = Transition(
        "open",
        rule_id,
        f"{appliance}/SPP",
        appliance.split("-", maxsplit=1)[0],
        appliance,
        "SPP",
        3100.0,
        ts_ms,
        "SPP 3100 above 3000",
    )
    alert_id = await store.apply(t)
    assert alert_id is not None
    return alert_id


async def test_rule_crud_with_validation_and_roles(
    client: AsyncTestClient[Litestar], world: w.World
) -> None:
    rule = await make_rule(client, world, "s201", "acme_admin", appliance="s201-a001")
    assert rule["condition"] == THRESHOLD and rule["site"] == "s201"
    assert rule["created_by"].startswith("user:")
    rid = rule["id"]
    h = auth(world, "acme")
    assert (await client.get(f"/v1/alert-rules/{rid}", headers=h)).json()["name"] == rule["name"]
    assert rid in [
        r["id"] for r in (await client.get("/v1/sites/s201/alert-rules", headers=h)).json()
    ]

    viewer = await client.post(
        "/v1/sites/s201/alert-rules",
        json={"name": "x", "metric": "SPP", "condition": THRESHOLD},
        headers=h,
    )
    assert viewer.status_code == 403
    changed = {
        "name": "efficiency low",
        "metric": "DrillingEfficiency",
        "auto_close": False,
        "condition": {"kind": "kpi", "op": "below", "value": 20, "for_s": 600},
    }
    r = await client.put(f"/v1/alert-rules/{rid}", json=changed, headers=auth(world, "acme_admin"))
    assert r.status_code == 200, r.text
    assert r.json()["condition"]["for_s"] == 600 and r.json()["auto_close"] is False

    for body, fragment in (
        ({"name": "x", "metric": "SPP", "condition": {**THRESHOLD, "clear": 3500}}, "clear"),
        ({"name": "x", "condition": THRESHOLD}, "metric is required"),
        (
            {"name": "x", "metric": "SPP", "condition": {"kind": "no_data", "after_s": -1}},
            "after_s",
        ),
        (
            {"name": "x", "metric": "SPP", "condition": THRESHOLD, "appliance": "s202-a001"},
            "not an appliance of s201",
        ),
        ({"name": "x", "metric": "SPP", "condition": THRESHOLD, "targets": [987654]}, "target"),
    ):
        r = await client.post(
            "/v1/sites/s201/alert-rules", json=body, headers=auth(world, "acme_admin")
        )
        assert r.status_code == 400 and fragment in r.text, r.text

    r = await client.delete(f"/v1/alert-rules/{rid}", headers=auth(world, "acme_admin"))
    assert r.status_code == 204
    assert (await client.get(f"/v1/alert-rules/{rid}", headers=h)).status_code == 404


async def test_lifecycle_open_acknowledged_resolved_with_who_when_note(
    client: AsyncTestClient[Litestar], world: w.World, store: AlertStore
) -> None:
    rule = await make_rule(client, world, "s201", "acme_admin", severity="critical")
    sample_ms = int(time.time() * 1000)
    alert_id = await open_alert(store, rule["id"], "s201-a001", sample_ms)
    assert await open_alert_again(store, rule["id"]) is None  # one open alert per rule+scope

    h = auth(world, "acme")
    got = (await client.get(f"/v1/alerts/{alert_id}", headers=h)).json()
    assert got["state"] == "open" and got["value"] == 3100.0
    assert [e["action"] for e in got["events"]] == ["opened"]

    r = await client.post(f"/v1/alerts/{alert_id}/acknowledge", json={"note": "on it"}, headers=h)
    assert r.status_code == 200, r.text
    acked = r.json()
    assert acked["state"] == "acknowledged" and acked["acknowledge_note"] == "on it"
    assert acked["acknowledged_by"].startswith("user:")
    again = await client.post(f"/v1/alerts/{alert_id}/acknowledge", json={}, headers=h)
    assert again.status_code == 409

    note = "alerts documented and resolved: pump seal replaced"
    r = await client.post(f"/v1/alerts/{alert_id}/resolve", json={"note": note}, headers=h)
    done = r.json()
    assert done["state"] == "resolved" and done["resolve_note"] == note
    events = done["events"]
    assert [(e["action"], e["note"]) for e in events] == [
        ("opened", "SPP 3100 above 3000"),
        ("acknowledged", "on it"),
        ("resolved", note),
    ]
    stamps = [dt.datetime.fromisoformat(e["at"]) for e in events]
    assert stamps == sorted(stamps)
    assert (
        await client.post(f"/v1/alerts/{alert_id}/resolve", json={}, headers=h)
    ).status_code == 409

    # resolved: the next crossing opens a new alert for the same rule and scope
    second = await open_alert(store, rule["id"], "s201-a001", sample_ms + 1000)
    assert second != alert_id

    listed = (await client.get("/v1/alerts", params={"rule_id": rule["id"]}, headers=h)).json()
    assert [a["id"] for a in listed] == [second, alert_id]  # newest first
    only_open = (
        await client.get("/v1/alerts", params={"rule_id": rule["id"], "state": "open"}, headers=h)
    ).json()
    assert [a["id"] for a in only_open] == [second]
    crit = (
        await client.get(
            "/v1/alerts",
            params={"site": "s201", "severity": "critical", "state": "resolved"},
            headers=h,
        )
    ).json()
    assert alert_id in [a["id"] for a in crit]
    later = await client.get("/v1/alerts", params={"since": "2199-01-01T00:00:00Z"}, headers=h)
    assert later.status_code == 200 and later.json() == []
    # the other tenant sees none of it; vendors see no alerts at all
    assert (await client.get("/v1/alerts", headers=auth(world, "bolt"))).json() == [] or all(
        a["site"] == "s202"
        for a in (await client.get("/v1/alerts", headers=auth(world, "bolt"))).json()
    )
    assert (await client.get("/v1/alerts", headers=auth(world, "vendor"))).status_code == 403


async def open_alert_again(store: AlertStore, rule_id: int) -> int | None:
    t = Transition(
        "open",
        rule_id,
        "s201-a001/SPP",
        "s201",
        "s201-a001",
        "SPP",
        3300.0,
        int(time.time() * 1000),
        "again",
    )
    return await store.apply(t)


async def test_targets_secret_shown_once(client: AsyncTestClient[Litestar], world: w.World) -> None:
    h = auth(world, "acme_admin")
    r = await client.post(
        "/v1/notification-targets",
        json={"kind": "webhook", "address": "https://hooks.example/x"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    assert len(r.json()["secret"]) >= 40
    listed = (await client.get("/v1/notification-targets", headers=h)).json()
    assert all(t["secret"] is None for t in listed)
    bad = await client.post(
        "/v1/notification-targets", json={"kind": "webhook", "address": "ftp://x"}, headers=h
    )
    assert bad.status_code == 400 and "URL" in bad.text
    rule = await make_rule(client, world, "s201", "acme_admin", targets=[r.json()["id"]])
    assert rule["targets"] == [r.json()["id"]]


async def test_another_tenants_alert_ids_are_404_like_missing_ones(
    client: AsyncTestClient[Litestar], world: w.World, store: AlertStore
) -> None:
    rule = await make_rule(client, world, "s202", "ops")
    alert_id = await open_alert(store, rule["id"], "s202-a001", int(time.time() * 1000))
    r = await client.post(
        "/v1/notification-targets",
        json={"kind": "email", "address": "ops@bolt.example", "tenant": "bolt"},
        headers=auth(world, "ops"),
    )
    target = r.json()["id"]
    rule_body = {"name": "x", "metric": "SPP", "condition": THRESHOLD}
    calls = [
        ("GET", "/v1/sites/{site}/alert-rules", None),
        ("POST", "/v1/sites/{site}/alert-rules", rule_body),
        ("GET", "/v1/alert-rules/{rule}", None),
        ("PUT", "/v1/alert-rules/{rule}", rule_body),
        ("DELETE", "/v1/alert-rules/{rule}", None),
        ("GET", "/v1/alerts/{alert}", None),
        ("POST", "/v1/alerts/{alert}/acknowledge", {"note": ""}),
        ("POST", "/v1/alerts/{alert}/resolve", {"note": ""}),
        ("DELETE", "/v1/notification-targets/{target}", None),
        ("GET", "/v1/alerts?site={site}", None),
    ]
    for who in ("acme", "acme_admin"):
        for method, path, body in calls:
            foreign = await client.request(
                method,
                path.format(site="s202", rule=rule["id"], alert=alert_id, target=target),
                json=body,
                headers=auth(world, who),
            )
            missing = await client.request(
                method,
                path.format(site="s999", rule=2**40, alert=2**40, target=2**40),
                json=body,
                headers=auth(world, who),
            )
            assert foreign.status_code == missing.status_code == 404, (who, path, foreign.text)
            assert foreign.json() == missing.json()
    # untouched by all that
    r = await client.get(f"/v1/alerts/{alert_id}", headers=auth(world, "bolt"))
    assert r.json()["state"] == "open"
    assert (
        await client.get(f"/v1/alert-rules/{rule['id']}", headers=auth(world, "bolt"))
    ).status_code == 200


# -- the list's filters -------------------------------------------------------------------------

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


class Seeded(NamedTuple):
    """One alert of the filter test; ``rule`` is an index into ``FILTER_RULES``."""

    rule: int
    appliance: str
    severity: str
    state: str
    opened: dt.datetime

    @property
    def site(self) -> str:
        return self.appliance.split("-", maxsplit=1)[0]


FILTER_SITES = {"s201": "acme", "s203": "acme", "s202": "bolt"}
FILTER_RULES = ("s201", "s201", "s203", "s202")  # the site of each rule
FILTER_ALERTS = (
    Seeded(0, "s201-a001", "critical", "open", T0),
    Seeded(0, "s201-a002", "warning", "acknowledged", T0 + dt.timedelta(hours=1)),
    Seeded(1, "s201-a001", "info", "resolved", T0 + dt.timedelta(hours=2)),
    Seeded(1, "s201-a002", "critical", "resolved", T0 + dt.timedelta(hours=3)),
    Seeded(2, "s203-a001", "warning", "open", T0 + dt.timedelta(hours=4)),
    Seeded(2, "s203-a001", "critical", "acknowledged", T0 + dt.timedelta(hours=5)),
    Seeded(3, "s202-a001", "critical", "open", T0 + dt.timedelta(hours=2, minutes=30)),
    Seeded(0, "s201-a001", "warning", "resolved", T0 + dt.timedelta(hours=6)),
    # opened in the same instant as the one before: newest first falls back to the id
    Seeded(2, "s203-a001", "info", "resolved", T0 + dt.timedelta(hours=6)),
)


class FilterWorld(NamedTuple):
    client: AsyncTestClient[Litestar]
    keys: dict[str, str]
    rules: list[int]
    alerts: list[int]  # ids, in the order of FILTER_ALERTS


@pytest.fixture
async def filter_world(
    registry_dsn: str, world: w.World, questdb: QuestDB
) -> AsyncIterator[FilterWorld]:
    """A registry of its own (so the other tests' alerts stay out of the lists): tenants acme
    (sites s201, s203) and bolt (s202), the alerts of ``FILTER_ALERTS`` written directly with
    known opening times, a viewer key per tenant and an ops key."""
    issued: dict[str, str] = {}
    with psycopg.connect(registry_dsn, autocommit=True) as conn:
        for tenant, name, kind in (
            ("acme", "Acme Drilling", "customer"),
            ("bolt", "Bolt Energy", "customer"),
            ("derrick", "Derrick Ops", "operator"),
        ):
            registry.create_tenant(conn, tenant, name, kind, rate_per_s=1000.0, burst=1000)
        for site, tenant in FILTER_SITES.items():
            registry.create_site(conn, site, tenant, f"pad {site}")
        for who, tenant, role in (
            ("acme", "acme", keys.Role.CUSTOMER_VIEWER),
            ("bolt", "bolt", keys.Role.CUSTOMER_VIEWER),
            ("ops", "derrick", keys.Role.OPS),
        ):
            uid = registry.create_user(conn, tenant, f"{who}@{tenant}.example", role)
            key = registry.issue_api_key(conn, uid, who, rate_per_s=1000.0, burst=1000)
            issued[who] = key.plaintext
        rules = []
        for k, site in enumerate(FILTER_RULES):
            row = conn.execute(
                "INSERT INTO alert_rules (tenant_id, site_id, metric, name, severity, condition, "
                "created_by) VALUES (%s, %s, 'SPP', %s, 'warning', '{}'::jsonb, 'test') "
                "RETURNING id",
                (FILTER_SITES[site], site, f"rule {k}"),
            ).fetchone()
            assert row is not None
            rules.append(int(row[0]))
        alerts = []
        for k, a in enumerate(FILTER_ALERTS):
            row = conn.execute(
                "INSERT INTO alerts (rule_id, tenant_id, site_id, appliance_id, metric, "
                "scope_key, severity, state, reason, value, sample_ts, opened_at) VALUES "
                "(%s, %s, %s, %s, 'SPP', %s, %s, %s, 'SPP high', 3100.0, %s, %s) RETURNING id",
                (
                    rules[a.rule],
                    FILTER_SITES[a.site],
                    a.site,
                    a.appliance,
                    f"{a.appliance}/SPP/{k}",
                    a.severity,
                    a.state,
                    a.opened,
                    a.opened,
                ),
            ).fetchone()
            assert row is not None
            alerts.append(int(row[0]))
    app = w.make_app(w.World(registry_dsn, world.tables, world.now), questdb)
    async with AsyncTestClient(app) as c:
        yield FilterWorld(c, issued, rules, alerts)


def _iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _utc(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _kept(fw: FilterWorld, a: Seeded, name: str, value: Any) -> bool:
    match name:
        case "site" | "appliance" | "state" | "severity":
            return bool(getattr(a, name) == value)
        case "rule_id":
            return fw.rules[a.rule] == value
        case "since":
            return a.opened >= _utc(value)
        case "until":
            return a.opened < _utc(value)
        case "limit":
            return True
    raise AssertionError(f"no expectation for the filter {name!r}")


def expected_ids(fw: FilterWorld, who: str, query: dict[str, Any]) -> list[int]:
    """The documented semantics over ``FILTER_ALERTS``, in plain Python: the key's tenant
    (ops: all), every given filter (``since`` inclusive, ``until`` exclusive, naive = UTC),
    newest first and then highest id, at most ``limit``."""
    rows = [
        (a.opened, alert_id)
        for alert_id, a in zip(fw.alerts, FILTER_ALERTS, strict=True)
        if (who == "ops" or FILTER_SITES[a.site] == who)
        and all(_kept(fw, a, name, value) for name, value in query.items())
    ]
    return [alert_id for _, alert_id in sorted(rows, reverse=True)][: query.get("limit", 100)]


# (who, query): every filter of the list, alone and combined; "rule_id" names a rule by its
# index in FILTER_RULES
FILTER_CASES: list[tuple[str, dict[str, Any]]] = [
    ("acme", {"site": "s201"}),
    ("ops", {"site": "s202"}),
    ("acme", {"appliance": "s201-a002"}),
    ("acme", {"appliance": "s202-a001"}),  # bolt's: the tenant still applies
    ("ops", {"appliance": "s202-a001"}),
    ("acme", {"state": "acknowledged"}),
    ("acme", {"severity": "critical"}),
    ("acme", {"rule_id": 1}),
    ("acme", {"since": _iso(T0 + dt.timedelta(hours=2))}),  # an alert opened at it: kept
    ("acme", {"until": _iso(T0 + dt.timedelta(hours=2))}),  # an alert opened at it: left out
    ("acme", {"until": "2026-03-01T03:00:00"}),  # naive: UTC
    ("acme", {"until": "2026-03-01T06:00:00+02:00"}),  # an offset: 04:00 UTC
    ("ops", {"since": _iso(T0 + dt.timedelta(hours=1)), "until": _iso(T0 + dt.timedelta(hours=5))}),
    ("acme", {"limit": 3}),
    ("acme", {"appliance": "s201-a001", "state": "resolved"}),
    ("acme", {"site": "s203", "severity": "critical"}),
    ("ops", {"severity": "critical", "until": _iso(T0 + dt.timedelta(hours=5)), "limit": 2}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("who", "query"),
    FILTER_CASES,
    ids=[f"{who}-{'&'.join(f'{k}={v}' for k, v in q.items())}" for who, q in FILTER_CASES],
)
async def test_each_list_filter_keeps_exactly_its_alerts(
    filter_world: FilterWorld, who: str, query: dict[str, Any]
) -> None:
    """The answer is the list computed here from ``FILTER_ALERTS``; and each case is built so
    that every filter in it changes that list (without the filter the expected list differs),
    so a filter the route ignored would fail."""
    params = dict(query)
    if "rule_id" in params:
        params["rule_id"] = filter_world.rules[params["rule_id"]]
    want = expected_ids(filter_world, who, params)
    for name in params:
        without = {k: v for k, v in params.items() if k != name}
        assert expected_ids(filter_world, who, without) != want, f"{name} changes nothing here"
    h = {"Authorization": f"Bearer {filter_world.keys[who]}"}
    r = await filter_world.client.get("/v1/alerts", params=params, headers=h)
    assert r.status_code == 200, r.text
    assert [a["id"] for a in r.json()] == want


async def test_list_unfiltered_and_refused_filters(filter_world: FilterWorld) -> None:
    client, h = filter_world.client, {"Authorization": f"Bearer {filter_world.keys['acme']}"}
    everything = await client.get("/v1/alerts", headers=h)
    assert [a["id"] for a in everything.json()] == expected_ids(filter_world, "acme", {})
    assert len(everything.json()) == 8  # acme's, not bolt's
    for params, fragment in (
        ({"appliance": "s201"}, "appliance"),
        ({"site": "s201-a001"}, "site"),
        ({"state": "closed"}, "state"),
        ({"severity": "fatal"}, "severity"),
        ({"until": "2300-01-01T00:00:00Z"}, "until"),
        ({"since": "yesterday"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
    ):
        r = await client.get("/v1/alerts", params=params, headers=h)
        assert r.status_code == 400 and fragment in r.text, (params, r.text)
    # a site of another tenant is refused like a missing one, not answered with []
    foreign = await client.get("/v1/alerts", params={"site": "s202"}, headers=h)
    missing = await client.get("/v1/alerts", params={"site": "s999"}, headers=h)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
