"""The alert service as a customer and an operator meet it, every part a real process:
rules created and edited through ``python -m api serve``, evaluated by ``python -m alerts
run`` on the live stream of a Sparkplug node (Mosquitto, an ingest worker, QuestDB), alerts
read back through the API. The evaluator is SIGKILLed twice, as a crash would end it:

- while it is down the condition clears and crosses again: after the restart both
  transitions are in the history, once each (caught up from QuestDB);
- a node that fell silent before the evaluator started opens its no-data alert on time
  (the no-data clock starts from QuestDB's newest sample, not from the first one heard).

Threshold (edited: the new bounds decide at once), rate of change and no data by silence
are each opened and closed by the running service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api import keys, registry
from harness import Mosquitto, QuestDB
from harness.derrick import alerts_process, api_process
from harness.ports import allocate_port
from harness.process import ManagedProcess

from .conftest import APPLIANCE, SITE, HandNode, now_ms

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.asyncio]

SPP_HIGH = {"kind": "threshold", "op": "above", "value": 3000, "clear": 2800}
SPP_HIGHER = {"kind": "threshold", "op": "above", "value": 3500, "clear": 3300}
ROP_JUMP = {"kind": "rate_of_change", "per_minute": 600, "direction": "rise"}
SILENT_S = 6


@pytest.fixture
async def api(
    tmp_path: Path, registry_dsn: str, questdb: QuestDB, prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The API process, and a client holding a customer_admin key of the site's tenant."""
    with psycopg.connect(registry_dsn, autocommit=True) as conn:
        registry.provision(conn, APPLIANCE)
        uid = registry.create_user(conn, "acme", "admin@acme.example", keys.Role.CUSTOMER_ADMIN)
        # the test polls the alert list: a rate limit out of the way (429s are not its subject)
        key = registry.issue_api_key(conn, uid, "admin", rate_per_s=1000.0, burst=1000).plaintext
    port = allocate_port()
    proc = api_process(
        tmp_path / "api",
        port=port,
        registry_dsn=registry_dsn,
        questdb_dsn=questdb.pg_dsn,
        table_prefix=prefix,
    )
    proc.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        ) as client:
            await _until(lambda: _ready(client), 60, "the API to be ready")
            yield client
    finally:
        proc.stop()


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/ready")).status_code == 200
    except httpx.TransportError:
        return False


async def _until(cond: Callable[[], Any], within_s: float, what: str) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        result = await cond()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {within_s:.0f} s waiting for {what}")


class Service:
    """``python -m alerts run`` as a process the test starts and kills."""

    def __init__(
        self, base: Path, mosquitto: Mosquitto, registry_dsn: str, questdb: QuestDB, prefix: str
    ) -> None:
        self.runs = 0
        self._args = (base, mosquitto, registry_dsn, questdb, prefix)
        self.proc: ManagedProcess | None = None

    def _make(self) -> ManagedProcess:
        base, mosquitto, registry_dsn, questdb, prefix = self._args
        return alerts_process(
            base / f"run{self.runs}",
            mqtt_port=mosquitto.port,
            registry_dsn=registry_dsn,
            questdb_dsn=questdb.pg_dsn,
            table_prefix=prefix,
            extra=(
                "[evaluator]\nname = 'svc'\nreload_interval_ms = 300\ntick_interval_ms = 200\n"
                "[notify]\nenabled = false\n"
            ),
        )

    async def start(self) -> None:
        self.runs += 1
        self.proc = self._make()
        self.proc.start()
        log = self.proc.log_path

        async def subscribed() -> bool:
            assert self.proc is not None and self.proc.running, log.read_text(encoding="utf-8")
            return "alert evaluator subscribed" in log.read_text(encoding="utf-8")

        await _until(subscribed, 60, f"the evaluator to subscribe ({log})")

    def log_tail(self) -> str:
        assert self.proc is not None
        return "evaluator log:\n" + self.proc.log_path.read_text(encoding="utf-8")[-3000:]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None and self.proc.running:
            assert self.proc.stop() == 0


async def _rule(api: httpx.AsyncClient, body: dict[str, Any]) -> int:
    r = await api.post(f"/v1/sites/{SITE}/alert-rules", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _alerts(api: httpx.AsyncClient, rule: int) -> list[dict[str, Any]]:
    r = await api.get("/v1/alerts", params={"rule_id": rule, "appliance": APPLIANCE})
    assert r.status_code == 200, r.text
    return list(reversed(r.json()))  # oldest first


async def _history(
    api: httpx.AsyncClient, rule: int, want: list[str], within_s: float = 10
) -> list[dict[str, Any]]:
    """Wait until the rule's alerts, oldest first, are in the states ``want``."""
    seen: list[dict[str, Any]] = []

    async def matches() -> bool:
        seen[:] = await _alerts(api, rule)
        return [a["state"] for a in seen] == want

    try:
        await _until(matches, within_s, f"rule {rule} alerts {want}")
    except TimeoutError:
        raise AssertionError(f"rule {rule}: wanted {want}, have {seen}") from None
    return seen


def _ts(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


async def _stored(questdb: QuestDB, prefix: str, metric: str, ts: int) -> bool:
    sql = (
        f"SELECT count() FROM {prefix}telemetry_raw WHERE metric = '{metric}' "
        f"AND ts = {ts * 1000}::timestamp"
    )
    try:
        return bool(questdb.exec_sql(sql)["dataset"][0][0])
    except Exception:
        return False


@pytest.mark.timeout(300)
async def test_rules_from_the_api_reach_the_evaluator_which_survives_sigkill(
    tmp_path: Path,
    registry_dsn: str,
    mosquitto: Mosquitto,
    questdb: QuestDB,
    prefix: str,
    ingest: None,
    hand_node: HandNode,
    api: httpx.AsyncClient,
) -> None:
    spp = await _rule(
        api, {"name": "SPP high", "metric": "SPP", "appliance": APPLIANCE, "condition": SPP_HIGH}
    )
    rop = await _rule(
        api,
        {
            "name": "ROP jump",
            "metric": "ROP",
            "appliance": APPLIANCE,
            "condition": ROP_JUMP,
            "severity": "critical",
        },
    )
    service = Service(tmp_path / "alerts", mosquitto, registry_dsn, questdb, prefix)
    await service.start()
    try:
        await hand_node.birth()
        await hand_node.send(now_ms(), SPP=2500, ROP=10)

        # threshold: opens within 2 s of the crossing sample, carrying it
        t = now_ms()
        await hand_node.send(t, SPP=3100)
        (opened,) = await _history(api, spp, ["open"])
        assert (_ts(opened["sample_ts"]), opened["value"]) == (t, 3100.0)
        assert _ts(opened["opened_at"]) - t < 2000, opened

        # rate of change: +0.01 in 0.5 s is 1.2/min (quiet); +20 in 0.5 s is 2400/min
        await asyncio.sleep(0.5)
        await hand_node.send(now_ms(), ROP=10.01)
        await asyncio.sleep(0.5)
        t = now_ms()
        await hand_node.send(t, ROP=30)
        (jump,) = await _history(api, rop, ["open"])
        assert (_ts(jump["sample_ts"]), jump["severity"]) == (t, "critical")
        assert "changed +" in jump["reason"], jump
        await asyncio.sleep(0.5)
        await hand_node.send(now_ms(), ROP=30.01)
        await _history(api, rop, ["resolved"])

        # the edit reaches the evaluator: 3200 clears under the new bounds (not the old ones),
        # 3400 no longer crosses, 3600 does
        r = await api.put(
            f"/v1/alert-rules/{spp}",
            json={
                "name": "SPP high",
                "metric": "SPP",
                "appliance": APPLIANCE,
                "condition": SPP_HIGHER,
            },
        )
        assert r.status_code == 200, r.text
        await asyncio.sleep(1.0)  # > reload_interval_ms
        await hand_node.send(now_ms(), SPP=3200)
        await _history(api, spp, ["resolved"])
        await hand_node.send(now_ms(), SPP=3400)
        await asyncio.sleep(1.0)
        assert [a["state"] for a in await _alerts(api, spp)] == ["resolved"]
        await hand_node.send(now_ms(), SPP=3600)
        await _history(api, spp, ["resolved", "open"])

        # crash: while the evaluator is down the condition clears (3000) and crosses (3700)
        await asyncio.sleep(0.6)  # a checkpoint
        service.kill()
        down = [now_ms()]
        await hand_node.send(down[0], SPP=3000)
        await asyncio.sleep(0.05)
        down.append(now_ms())
        await hand_node.send(down[1], SPP=3700)
        await _until(lambda: _stored(questdb, prefix, "SPP", down[1]), 20, "ingest to store")
        await service.start()
        history = await _history(api, spp, ["resolved", "resolved", "open"])
        # A new evaluator knows no aliases: a node's next message draws a rebirth request
        # (that message is judged only if the catch-up had it), which a real node answers at
        # once; the hand-driven node births now.
        await hand_node.birth()
        assert _ts(history[1]["resolved_at"]) >= _ts(history[1]["opened_at"])
        assert (_ts(history[2]["sample_ts"]), history[2]["value"]) == (down[1], 3700.0)

        # the node's last word, then silence; the evaluator dies after it judged that sample
        last = now_ms()
        await hand_node.send(last, SPP=2000)
        await _history(api, spp, ["resolved", "resolved", "resolved"])
        await asyncio.sleep(0.6)  # a checkpoint past the last sample
        service.kill()
        silent = await _rule(
            api,
            {
                "name": "node silent",
                "appliance": APPLIANCE,
                "condition": {"kind": "no_data", "after_s": SILENT_S},
            },
        )
        await service.start()
        try:
            (quiet,) = await _history(api, silent, ["open"], within_s=SILENT_S + 15)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast sample {last}; {service.log_tail()}") from None
        assert quiet["reason"].startswith("no data for "), quiet
        waited = _ts(quiet["opened_at"]) - last
        assert SILENT_S * 1000 <= waited < (SILENT_S + 3) * 1000, quiet
        await hand_node.birth()
        await hand_node.send(now_ms(), SPP=2100)  # data again: closes it
        await _history(api, silent, ["resolved"])
    finally:
        service.stop()

    # every transition once: the event history through the API, per alert
    everything = await _alerts(api, spp)
    assert [(a["state"], a["value"]) for a in everything] == [
        ("resolved", 3100.0),
        ("resolved", 3600.0),
        ("resolved", 3700.0),
    ]
    with psycopg.connect(registry_dsn) as conn:
        events = conn.execute(
            "SELECT a.value, e.action, e.actor FROM alert_events e "
            "JOIN alerts a ON a.id = e.alert_id WHERE a.rule_id = %s ORDER BY e.id",
            (spp,),
        ).fetchall()
    assert [(v, action) for v, action, _ in events] == [
        (3100.0, "opened"),
        (3100.0, "resolved"),
        (3600.0, "opened"),
        (3600.0, "resolved"),
        (3700.0, "opened"),
        (3700.0, "resolved"),
    ]
