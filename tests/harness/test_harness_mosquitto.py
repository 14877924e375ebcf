"""A real Mosquitto from the harness: round trip, restart on the same port, clean stop."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import aiomqtt
import pytest

import harness.mosquitto as mosquitto_module
from harness import Mosquitto, ServiceStartError
from harness.ports import is_listening
from harness.process import process_alive


def unique_topic() -> str:
    return f"derrick-test/{uuid.uuid4().hex}"


async def _round_trip(broker: Mosquitto, payload: bytes) -> bytes:
    topic = unique_topic()
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"t-{uuid.uuid4().hex}") as c:
        await c.subscribe(topic, qos=1)
        await c.publish(topic, payload, qos=1)
        async with asyncio.timeout(10):
            async for message in c.messages:
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("no message")


@pytest.mark.asyncio
async def test_publish_subscribe_round_trip(mosquitto: Mosquitto) -> None:
    assert await _round_trip(mosquitto, b"\x00spB\xff") == b"\x00spB\xff"
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"


@pytest.mark.asyncio
async def test_large_payload_passes(mosquitto: Mosquitto) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, under max_packet_size
    assert await _round_trip(mosquitto, payload) == payload


def test_config_is_loopback_only_and_says_it_is_insecure(mosquitto: Mosquitto) -> None:
    config = mosquitto.config_path.read_text()
    assert f"listener {mosquitto.port} 127.0.0.1" in config
    assert "allow_anonymous true" in config
    assert "persistence false" in config


def test_extra_bind_addresses_listen_on_the_same_port(tmp_path: Path) -> None:
    """For clients that cannot reach 127.0.0.1 (agents in a test's network namespace)."""
    with Mosquitto(tmp_path, extra_bind_addresses=["127.0.0.2"]) as broker:
        config = broker.config_path.read_text()
        assert f"listener {broker.port} 127.0.0.1" in config
        assert f"listener {broker.port} 127.0.0.2" in config
        assert mosquitto_module._mqtt_probe("127.0.0.2", broker.port)
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"


@pytest.mark.asyncio
async def test_restart_keeps_the_port(mosquitto: Mosquitto) -> None:
    port, old_pid = mosquitto.port, mosquitto.pid
    mosquitto.stop()
    assert not is_listening(port)
    mosquitto.restart()
    assert mosquitto.port == port
    assert mosquitto.pid != old_pid
    assert await _round_trip(mosquitto, b"again") == b"again"


def test_stop_and_kill_leave_no_process(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    pid = broker.pid
    assert pid is not None and process_alive(pid)
    broker.stop()
    assert not broker.running and not process_alive(pid)
    broker.start()
    pid = broker.pid
    assert pid is not None
    broker.kill()
    assert not process_alive(pid)
    broker.close()


def test_bad_config_fails_with_the_log_tail(tmp_path: Path) -> None:
    class BrokenMosquitto(Mosquitto):
        def render_config(self) -> str:
            return super().render_config() + "\nthis_is_not_an_option 1\n"

    broker = BrokenMosquitto(tmp_path)
    with pytest.raises(ServiceStartError, match="this_is_not_an_option"):
        broker.start()
    assert not broker.running


def test_secure_mode_needs_a_password_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="password_file"):
        Mosquitto(tmp_path, insecure_allow_anonymous=False)


def test_port_taken_by_someone_else_is_retried_on_a_new_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        offered = iter([busy])
        real_allocate = mosquitto_module.allocate_port
        monkeypatch.setattr(
            mosquitto_module, "allocate_port", lambda: next(offered, None) or real_allocate()
        )
        with Mosquitto(tmp_path) as broker:
            assert broker.port != busy
            assert is_listening(broker.port)
