"""Alert rules, the alert lifecycle and notification targets through the API, on the real
registry: CRUD with validation, open → acknowledged → resolved with who/when/note, filters,
roles, and another tenant's ids answered like missing ones."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from alerts.store import AlertStore
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
