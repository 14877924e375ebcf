"""The Primary Host's MQTT connection (``ingest/mqtt.py``, gmqtt) against a real Mosquitto:
what the worker relies on beyond "messages arrive" (tests/ingest/test_primary_host_state.py
covers STATE, the Will and re-assertion through the whole host)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from harness import Mosquitto
from harness.ports import allocate_port
from ingest.mqtt import HostConnection, MqttError

pytestmark = [pytest.mark.integration]


def _connection(
    port: int,
    received: list[tuple[str, bytes, bool]],
    *,
    arrived: tuple[asyncio.Event, int] | None = None,
    **kw: object,
) -> HostConnection:
    """A connection appending what it receives to ``received``; ``arrived`` = (event, n):
    set the event when n messages are in."""

    def on_message(topic: str, payload: bytes, retained: bool) -> None:
        received.append((topic, payload, retained))
        if arrived is not None and len(received) >= arrived[1]:
            arrived[0].set()

    options: dict[str, object] = {
        "host": "127.0.0.1", "port": port, "client_id": "derrick-w1", "username": None,
        "password": None, "keepalive_s": 30, "will": ("spBv1.0/STATE/derrick", b"offline"),
    }  # fmt: skip
    options.update(kw)
    return HostConnection(on_message=on_message, **options)  # type: ignore[arg-type]


async def test_a_lost_connection_is_reported_and_never_resumed(mosquitto: Mosquitto) -> None:
    """Another client taking over the id ends our connection: it is reported (so the host
    starts over clean, with a new birth) and gmqtt does not reconnect by itself with the old
    session, which would in turn throw the other client off."""
    received: list[tuple[str, bytes, bool]] = []
    conn = _connection(mosquitto.port, received)
    await conn.connect()
    await conn.subscribe("spBv1.0/#", qos=0)
    assert conn.connected
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="derrick-w1") as taker:
        async with asyncio.timeout(10):
            await conn.wait_lost()
        assert not conn.connected
        with pytest.raises(MqttError, match="not connected"):
            conn.publish("spBv1.0/s1/NCMD/n1", b"x")
        # the taker stays connected: nobody reconnects as derrick-w1 behind our back (gmqtt
        # would, with the old session, after its reconnect_delay of 6 s, throwing it off)
        await asyncio.sleep(8)
        await taker.publish("probe", b"still here", qos=1)
    await conn.close()


async def test_messages_arrive_in_order_with_the_retain_flag(mosquitto: Mosquitto) -> None:
    received: list[tuple[str, bytes, bool]] = []
    all_in = asyncio.Event()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as edge:
        await edge.publish("spBv1.0/STATE/derrick", b"retained", qos=1, retain=True)
        conn = _connection(mosquitto.port, received, arrived=(all_in, 2001))
        await conn.connect()
        await conn.subscribe("spBv1.0/#", qos=0)
        for k in range(2000):  # many packets per socket read
            await edge.publish("spBv1.0/s1/NDATA/n1", k.to_bytes(4, "big"), qos=0)
        async with asyncio.timeout(20):
            await all_in.wait()
    await conn.close()
    assert received[0] == ("spBv1.0/STATE/derrick", b"retained", True)
    assert received[1:] == [
        ("spBv1.0/s1/NDATA/n1", k.to_bytes(4, "big"), False) for k in range(2000)
    ]


async def test_the_will_is_published_when_the_connection_dies(mosquitto: Mosquitto) -> None:
    """The host's Will (its offline STATE, QoS 1, retained) is registered on every connect:
    a connection that ends without DISCONNECT makes the broker publish it."""
    received: list[tuple[str, bytes, bool]] = []
    conn = _connection(mosquitto.port, received, keepalive_s=5)
    await conn.connect()
    # a second client with the same id ends ours without a DISCONNECT from us: the broker
    # publishes the Will (Mosquitto does on a session takeover)
    seen: list[tuple[bytes, bool]] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as watcher:
        await watcher.subscribe("spBv1.0/STATE/derrick", qos=1)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="derrick-w1"):
            async with asyncio.timeout(10):
                async for message in watcher.messages:
                    seen.append((bytes(message.payload), message.retain))
                    break
    await conn.close()
    assert seen == [(b"offline", False)]


@pytest.fixture
def login_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto that lets in derrick-ingest with the password "right" and nobody else."""
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "derrick-ingest", "right"],
                   check=True)  # fmt: skip
    with Mosquitto(tmp_path / "mq", insecure_allow_anonymous=False, password_file=passwd) as mq:
        yield mq


async def test_a_refused_login_is_an_error_at_once(login_broker: Mosquitto) -> None:
    conn = _connection(login_broker.port, [], username="derrick-ingest", password="wrong")
    started = time.monotonic()
    with pytest.raises(MqttError, match="cannot connect"):
        await conn.connect()
    assert time.monotonic() - started < 10
    assert "wrong" not in repr(conn)
    good = _connection(login_broker.port, [], username="derrick-ingest", password="right")
    await good.connect()
    assert good.connected
    await good.close()


async def test_nothing_listening_is_an_error() -> None:
    conn = _connection(allocate_port(), [])
    with pytest.raises(MqttError, match="cannot connect"):
        await conn.connect()
