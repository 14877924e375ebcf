"""The live stream end to end: a real edge agent publishes to a real Mosquitto, the API's
Sparkplug consumer hands hot values to an SSE client over real HTTP; each value must reach
the client within 1 s of the edge's sample timestamp."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.live import LiveFeed
from harness import Mosquitto, QuestDB
from harness.asgi import serve_in_thread
from harness.derrick import EdgeSpec, SimulatedDevice, edge_process

from . import world as w

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLES = 30


@pytest.fixture
def live_api(world: w.World, _questdb_server: QuestDB, mosquitto: Mosquitto) -> Iterator[str]:
    feed = LiveFeed("127.0.0.1", mosquitto.port, client_id="api-live-test")
    app = w.make_app(world, _questdb_server, live=feed)
    with serve_in_thread(app, name="api-uvicorn-live", ready=feed.connected.is_set) as url:
        yield url


def test_hot_values_reach_an_sse_client_within_a_second(
    live_api: str, world: w.World, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    spec = EdgeSpec(
        site="s201",
        appliance="s201-a001",
        devices=[SimulatedDevice("daq", tags=("ROP", "WOB", "HKLD"), seed=3)],
        normal_per_min=600,  # ~every 0.1 s per tag
        publish_interval_ms=250,
        wait_for_primary_host=False,
    )
    latencies: list[float] = []
    metrics: set[str] = set()
    headers = {"Authorization": f"Bearer {world.keys['acme']}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{live_api}/v1/sites/s201/live", headers=headers) as response,
    ):
        assert response.status_code == 200
        agent = edge_process(spec, tmp_path / "edge", [mosquitto.port])
        agent.start()
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                value = json.loads(line.removeprefix("data:").strip())
                latencies.append(time.time() * 1000 - value["ts"])
                metrics.add(value["metric"])
                assert value["node"] == "s201-a001" and value["site"] == "s201"
                if len(latencies) >= SAMPLES:
                    break
        finally:
            agent.stop()
    assert metrics <= {"ROP", "WOB"}  # HKLD is not hot
    print(  # the measured figure, for the report
        f"live latency over {len(latencies)} values: p50 {statistics.median(latencies):.0f} ms,"
        f" max {max(latencies):.0f} ms"
    )
    assert max(latencies) < 1000, sorted(latencies)
