"""Operations endpoints of the API on real PostgreSQL and QuestDB: ``/ready`` answers for both
stores (and says which one is gone), and the per-route metrics served on their own port carry
route templates, methods and statuses, never a requested id."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import AsyncConnectionPool

from api.access import Access
from api.app import Services, _reachable, create_app
from api.ops import serve_metrics
from api.readings import Reader
from harness import QuestDB
from harness.derrick import api_process
from harness.ports import allocate_port

from . import world as w

pytestmark = [pytest.mark.integration]

SITE_ROUTE = "/v1/sites/{site_id}"


class _App:
    def __init__(self, world: w.World, questdb: QuestDB) -> None:
        def pool(dsn: str) -> AsyncConnectionPool[Any]:
            return AsyncConnectionPool(
                dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
            )

        self.pg, self.qdb = pool(world.registry_dsn), pool(questdb.pg_dsn)
        services = Services(
            Access(self.pg),
            Reader(self.qdb, world.tables, w.KPI_GROUP),
            pools=[self.pg, self.qdb],
            clock=lambda: world.now,
        )
        self.app = create_app(services, metrics=True)


@pytest.fixture
async def built(world: w.World, questdb: QuestDB) -> AsyncIterator[tuple[_App, Any]]:
    built = _App(world, questdb)
    async with AsyncTestClient(built.app) as client:
        yield built, client


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _count(m: Scrape, path: str, status: str) -> float:
    labels = (("app_name", "derrick-api"), ("method", "GET"), ("path", path),
              ("status_code", status))  # fmt: skip
    return m.get(("derrick_api_request_duration_seconds_count", labels), 0.0)


@pytest.fixture(scope="module")
def metrics_port() -> int:
    port = allocate_port()
    serve_metrics(port)
    return port


@pytest.mark.asyncio
async def test_ready_when_both_stores_answer(
    built: tuple[_App, AsyncTestClient[Litestar]], questdb: QuestDB
) -> None:
    _, client = built
    r = await client.get("/ready")  # no key
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "postgres": True, "questdb": True}
    # A store nobody answers for (a free port): not reachable, within the timeout.
    dead: AsyncConnectionPool[Any] = AsyncConnectionPool(
        f"postgresql://admin@127.0.0.1:{allocate_port()}/qdb?connect_timeout=1",
        min_size=1,
        open=False,
        name="dead-store",
    )
    await dead.open(wait=False)
    try:
        assert await _reachable(dead) is False
    finally:
        await dead.close()


@pytest.mark.asyncio
async def test_not_ready_with_503_naming_the_store_that_is_gone(
    world: w.World, questdb: QuestDB
) -> None:
    """The app with QuestDB's pool pointing at a port nobody answers on: /ready is 503 and
    names QuestDB, /health stays 200 (the process is alive; the balancer takes it out)."""
    pg: AsyncConnectionPool[Any] = AsyncConnectionPool(
        world.registry_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    gone: AsyncConnectionPool[Any] = AsyncConnectionPool(
        f"postgresql://admin@127.0.0.1:{allocate_port()}/qdb?connect_timeout=1",
        min_size=0,
        max_size=1,
        kwargs={"autocommit": True},
        open=False,
    )
    services = Services(
        Access(pg), Reader(gone, world.tables, w.KPI_GROUP), pools=[pg, gone],
        clock=lambda: world.now,
    )  # fmt: skip
    async with AsyncTestClient(create_app(services)) as client:
        r = await client.get("/ready")
        assert r.status_code == 503, r.text
        assert r.json() == {"status": "not ready", "postgres": True, "questdb": False}
        assert (await client.get("/health")).status_code == 200


@pytest.mark.asyncio
async def test_metrics_per_route_template_on_their_own_port(
    built: tuple[_App, AsyncTestClient[Litestar]], world: w.World, metrics_port: int
) -> None:
    _, client = built
    before = _scrape(metrics_port)
    headers = {"Authorization": f"Bearer {world.keys['acme']}"}
    for _ in range(3):
        assert (await client.get("/v1/sites/s201", headers=headers)).status_code == 200
    assert (await client.get("/v1/sites/s202", headers=headers)).status_code == 404  # not acme's
    assert (await client.get("/v1/sites/s201")).status_code == 401
    after = _scrape(metrics_port)
    assert _count(after, SITE_ROUTE, "200") - _count(before, SITE_ROUTE, "200") == 3
    assert _count(after, SITE_ROUTE, "404") - _count(before, SITE_ROUTE, "404") == 1
    assert _count(after, SITE_ROUTE, "401") - _count(before, SITE_ROUTE, "401") == 1
    # Only templates in labels: no site id, no key reaches the metrics.
    values = {v for (_, labels) in after for (_, v) in labels}
    assert not any("s201" in v or "s202" in v for v in values), values
    assert not any("/schema" in v for v in values)
    # The API port does not serve them.
    assert (await client.get("/metrics")).status_code == 404


def test_served_api_metrics_listener_ready_and_json_logs(
    tmp_path: Path, registry_dsn: str, questdb: QuestDB
) -> None:
    """``python -m api --log-format json serve`` with ``[metrics]``: as an operator runs it."""
    port, metrics = allocate_port(), allocate_port()
    api = api_process(
        tmp_path / "api",
        port=port,
        registry_dsn=registry_dsn,
        questdb_dsn=questdb.pg_dsn,
        metrics_port=metrics,
        log_format="json",
    )
    api.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
                    assert json.loads(r.read())["status"] == "ready"
                    break
            except OSError:
                assert time.monotonic() < deadline, "the API did not become ready in 60 s"
                time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/sites", timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        m = _scrape(metrics)
    finally:
        api.stop()
    assert _count(m, "/v1/sites", "401") == 1
    assert _count(m, "/ready", "200") >= 1
    lines = (tmp_path / "api" / "api.log").read_text(encoding="utf-8").splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(x["message"].startswith("metrics on http://127.0.0.1:") for x in logged), lines
