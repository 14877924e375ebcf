"""The ingest worker as a Sparkplug 3.0 Primary Host: STATE birth, Will, clean session,
re-assertion and graceful termination, checked on a real Mosquitto (its verbose log shows
every CONNECT flag, Will flag and PUBLISH) with the worker as a real process."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness import Mosquitto, QuestDB
from harness.derrick import ingest_process
from harness.process import ManagedProcess

pytestmark = pytest.mark.integration

STATE = "spBv1.0/STATE/derrick"
CLIENT_ID = "derrick-w0"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto", verbose=True) as b:
        yield b


@pytest.fixture
def host(tmp_path: Path, broker: Mosquitto, questdb: QuestDB) -> Iterator[ManagedProcess]:
    proc = ingest_process(
        tmp_path / "ingest",
        mqtt_port=broker.port,
        ilp_conf=questdb.ilp_conf,
        pg_dsn=questdb.pg_dsn,
        table_prefix=f"t{uuid.uuid4().hex[:8]}_",
    )
    try:
        yield proc
    finally:
        proc.stop()


class StateWatcher:
    """Subscribes to the host's STATE topic and records (online, timestamp, qos, retain)."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[bool, int, int, bool]] = []
        self._event = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"w{uuid.uuid4().hex}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(STATE, qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        assert set(body) == {"online", "timestamp"}
        with self._event:
            self.messages.append((body["online"], body["timestamp"], msg.qos, bool(msg.retain)))
            self._event.notify_all()

    def wait_for(
        self, online: bool, after: int = 0, timeout: float = 60
    ) -> tuple[bool, int, int, bool]:
        deadline = time.monotonic() + timeout
        with self._event:
            while True:
                found = [m for m in self.messages[after:] if m[0] is online]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                assert left > 0, f"no STATE online={online} within {timeout} s: {self.messages}"
                self._event.wait(left)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def broker_log(broker: Mosquitto) -> str:
    return broker.log_path.read_text(errors="replace")


@pytest.mark.tck(
    "tck-id-host-topic-phid-birth-sub-required",
    "tck-id-host-topic-phid-birth-required",
    "tck-id-host-topic-phid-birth-qos",
    "tck-id-host-topic-phid-birth-retain",
    "tck-id-host-topic-phid-birth-payload",
    "tck-id-payloads-state-will-message-qos",
    "tck-id-payloads-state-will-message-retain",
    "tck-id-message-flow-phid-sparkplug-clean-session-311",
    "tck-id-host-topic-phid-death-payload-timestamp-connect",
)
def test_state_birth_is_the_first_publish_and_the_will_matches(
    broker: Mosquitto, host: ManagedProcess
) -> None:
    watcher = StateWatcher(broker.port)
    try:
        host.start()
        _, birth_ts, qos, _ = watcher.wait_for(True)
        assert qos == 1
        assert abs(birth_ts - time.time() * 1000) < 60_000
        log = broker_log(broker)
        # clean session, Will on the STATE topic with QoS 1 and retain
        assert re.search(rf"as {CLIENT_ID} \(p\d, c1, k\d+\)", log), log[-2000:]
        assert re.search(r"Will message specified \(\d+ bytes\) \(r1, q1\)", log), log[-2000:]
        assert f"topic {STATE}" in log or STATE in log
        # subscribed before publishing; the first PUBLISH is the STATE birth
        first_publish = log.index(f"Received PUBLISH from {CLIENT_ID}")
        first_subscribe = log.index(f"Received SUBSCRIBE from {CLIENT_ID}")
        assert first_subscribe < first_publish
        assert STATE in log[first_publish:].splitlines()[0]
        # a late subscriber gets the retained birth
        late = StateWatcher(broker.port)
        try:
            assert late.wait_for(True)[3] is True
        finally:
            late.close()
        # killed: the broker publishes the Will, offline, with the birth's timestamp
        seen = len(watcher.messages)
        host.kill()
        offline = watcher.wait_for(False, after=seen, timeout=120)
        assert offline[1] == birth_ts
    finally:
        watcher.close()


@pytest.mark.tck("tck-id-message-flow-hid-sparkplug-state-message-delivered")
def test_host_reasserts_online_when_declared_offline(
    broker: Mosquitto, host: ManagedProcess
) -> None:
    watcher = StateWatcher(broker.port)
    try:
        host.start()
        watcher.wait_for(True)
        seen = len(watcher.messages)
        intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder")
        intruder.connect("127.0.0.1", broker.port)
        intruder.loop_start()
        payload = json.dumps({"online": False, "timestamp": int(time.time() * 1000)})
        intruder.publish(STATE, payload, qos=1, retain=True).wait_for_publish(10)
        intruder.loop_stop()
        intruder.disconnect()
        watcher.wait_for(False, after=seen)
        back = watcher.wait_for(True, after=seen, timeout=10)
        assert back[2] == 1
    finally:
        watcher.close()


@pytest.mark.tck(
    "tck-id-operational-behavior-host-application-termination",
    "tck-id-host-topic-phid-death-payload-timestamp-disconnect-clean",
)
def test_graceful_stop_publishes_offline_before_disconnecting(
    broker: Mosquitto, host: ManagedProcess
) -> None:
    watcher = StateWatcher(broker.port)
    try:
        host.start()
        _, birth_ts, _, _ = watcher.wait_for(True)
        seen = len(watcher.messages)
        host.stop()
        offline = watcher.wait_for(False, after=seen, timeout=30)
        assert offline[1] >= birth_ts and offline[2] == 1
        log = broker_log(broker)
        assert log.rindex(f"Received PUBLISH from {CLIENT_ID}") < log.rindex(
            f"Received DISCONNECT from {CLIENT_ID}"
        )
    finally:
        watcher.close()
