"""The edge agent as a Sparkplug B 3.0 edge node, on a real Mosquitto whose verbose log shows
every CONNECT, Will and SUBSCRIBE flag. The agent runs as a real process; the test plays the
Primary Host (STATE) and a SCADA subscriber. Tests carry the specification's tck ids."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core import conventions
from core.sparkplug import (
    DataType,
    Metric,
    Payload,
    decode_payload,
    decompress_payload,
    encode_payload,
    is_compressed,
)
from harness import Mosquitto
from harness.derrick import EdgeSpec, SimulatedDevice, edge_process
from harness.process import ManagedProcess

pytestmark = pytest.mark.integration

SITE, NODE = "s003", "s003-a001"
STATE = "spBv1.0/STATE/derrick"
TAGS = ("WOB", "RPM", "ROP", "GAS")


@dataclass
class Seen:
    at: float
    topic: str
    payload: bytes
    qos: int
    retain: bool

    @property
    def kind(self) -> str:
        return self.topic.split("/")[2]

    def decoded(self, types: dict[int, DataType] | None = None) -> Payload:
        return decode_payload(self.payload, types)


class Recorder:
    """Records every message under spBv1.0/<site>/#; publishes as the Primary Host."""

    def __init__(self, port: int) -> None:
        self.seen: list[Seen] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="scada-recorder")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"spBv1.0/{SITE}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.seen.append(Seen(time.monotonic(), msg.topic, bytes(msg.payload), msg.qos,
                                  bool(msg.retain)))  # fmt: skip
            self._cond.notify_all()

    def state(self, online: bool) -> None:
        body = json.dumps({"online": online, "timestamp": int(time.time() * 1000)})
        self.client.publish(STATE, body, qos=1, retain=True).wait_for_publish(10)

    def command(self, metrics: list[Metric], types: dict[int, DataType] | None = None) -> None:
        payload = encode_payload(Payload(timestamp=int(time.time() * 1000), metrics=metrics), types)
        self.client.publish(f"spBv1.0/{SITE}/NCMD/{NODE}", payload, qos=0).wait_for_publish(10)

    def of(self, kind: str, after: int = 0) -> list[Seen]:
        with self._cond:
            return [s for s in self.seen[after:] if s.kind == kind]

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not cond():
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}"
                self._cond.wait(min(left, 0.5))

    def wait_for(
        self, kind: str, count: int = 1, after: int = 0, timeout: float = 60
    ) -> list[Seen]:
        self.wait(lambda: len(self.of(kind, after)) >= count, timeout, f"{count} {kind}")
        return self.of(kind, after)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", verbose=True) as b:
        yield b


@pytest.fixture
def recorder(broker: Mosquitto) -> Iterator[Recorder]:
    r = Recorder(broker.port)
    yield r
    r.close()


def agent(tmp_path: Path, ports: list[int], **spec: object) -> ManagedProcess:
    devices = spec.pop("devices", None) or [SimulatedDevice("daq", TAGS, seed=1)]
    return edge_process(
        EdgeSpec(site=SITE, appliance=NODE, devices=devices,  # type: ignore[arg-type]
                 normal_per_min=240, publish_interval_ms=250, **spec),  # type: ignore[arg-type]
        tmp_path / "agent",
        ports,
    )  # fmt: skip


def bdseq_of(p: Payload) -> int:
    values = [m.value for m in p.metrics if m.name == "bdSeq"]
    assert len(values) == 1, p.metrics
    assert isinstance(values[0], int)
    return values[0]


@pytest.mark.tck(
    "tck-id-principles-persistence-clean-session-311",
    "tck-id-message-flow-edge-node-birth-publish-will-message-qos",
    "tck-id-message-flow-edge-node-birth-publish-will-message-will-retained",
    "tck-id-message-flow-edge-node-ncmd-subscribe",
    "tck-id-message-flow-device-dcmd-subscribe",
    "tck-id-message-flow-edge-node-birth-publish-phid-wait",
    "tck-id-topics-nbirth-seq-num",
    "tck-id-topics-nbirth-bdseq-included",
    "tck-id-topics-nbirth-rebirth-metric",
    "tck-id-operational-behavior-data-commands-rebirth-name-aliases",
    "tck-id-payloads-alias-birth-requirement",
    "tck-id-payloads-alias-data-cmd-requirement",
    "tck-id-payloads-metric-datatype-not-req",
    "tck-id-payloads-ddata-qos",
    "tck-id-payloads-ddata-retain",
    "tck-id-payloads-sequence-num-incrementing",
    "tck-id-payloads-dbirth-seq-inc",
)
def test_connect_births_and_data_follow_the_specification(
    tmp_path: Path, broker: Mosquitto, recorder: Recorder
) -> None:
    proc = agent(tmp_path, [broker.port])
    proc.start()
    try:
        recorder.wait(lambda: "SUBSCRIBE from " + NODE in broker.log_path.read_text(), 60,
                      "the agent's subscriptions")  # fmt: skip
        time.sleep(2)
        assert not recorder.of("NBIRTH"), "born before the Primary Host said online"
        log = broker.log_path.read_text()
        assert re.search(rf"as {NODE} \(p\d, c1, k\d+\)", log), "not a clean session"
        assert re.search(r"Will message specified \(\d+ bytes\) \(r0, q1\)", log), log[-1500:]
        for topic in (f"spBv1.0/{SITE}/NCMD/{NODE}", f"spBv1.0/{SITE}/DCMD/{NODE}/daq", STATE):
            assert f"{topic} (QoS 1)" in log, topic

        recorder.state(True)
        nbirth = recorder.wait_for("NBIRTH")[0]
        dbirth = recorder.wait_for("DBIRTH")[0]
        data = recorder.wait_for("DDATA", 8)
        nb, db = nbirth.decoded(), dbirth.decoded()
        assert nb.seq == 0 and db.seq == 1 and nbirth.qos == 0 and not nbirth.retain
        bdseq_of(nb)
        rebirth = [m for m in nb.metrics if m.name == conventions.REBIRTH_METRIC]
        assert rebirth and rebirth[0].alias is None and rebirth[0].datatype is DataType.Boolean
        assert rebirth[0].value is False
        for m in nb.metrics:
            assert m.name and m.datatype is not None
            assert m.alias is not None or m.name in ("bdSeq", conventions.REBIRTH_METRIC)
        names = {m.name: m for m in db.metrics}
        assert set(names) == set(TAGS)
        for m in db.metrics:
            assert m.alias is not None and m.datatype is DataType.Double and m.timestamp
            assert m.properties is not None
            assert m.properties["engUnit"].value and m.properties["hot"].type is DataType.Boolean
        types = {m.alias: m.datatype for m in (*nb.metrics, *db.metrics) if m.alias is not None}
        aliases = set(types)
        assert len(aliases) == len([m for m in (*nb.metrics, *db.metrics) if m.alias is not None])
        seqs = [
            s.decoded(types).seq
            for s in recorder.seen
            if s.kind in ("NBIRTH", "DBIRTH", "DDATA", "NDATA")
        ]
        assert seqs == [i % 256 for i in range(len(seqs))], seqs
        live = 0
        for s in data:
            assert s.qos == 0 and not s.retain
            outer = decode_payload(s.payload)
            if is_compressed(outer):
                # readings committed before the birth are replayed as compressed history
                raw = decompress_payload(outer, types)
                assert all(m.is_historical for m in raw.metrics)
                inner = decompress_payload(outer)
            else:
                raw, inner, live = decode_payload(s.payload, types), outer, live + 1
            for m in raw.metrics:
                assert m.name is None and m.alias in aliases and m.timestamp
            # alias-only on the wire: no datatype field was sent
            assert all(m.datatype is None for m in inner.metrics)
        assert live >= 3
    finally:
        proc.stop()


@pytest.mark.tck(
    "tck-id-operational-behavior-data-commands-rebirth-action-1",
    "tck-id-operational-behavior-data-commands-rebirth-action-2",
    "tck-id-operational-behavior-data-commands-rebirth-action-3",
    "tck-id-payloads-nbirth-bdseq-repeat",
    "tck-id-operational-behavior-edge-node-termination-host-offline",
    "tck-id-topics-nbirth-bdseq-increment",
    "tck-id-message-flow-edge-node-birth-publish-will-message-payload-bdSeq",
    "tck-id-payloads-ndeath-will-message-qos",
)
def test_rebirth_host_offline_kill_and_restart_keep_bdseq_rules(
    tmp_path: Path, broker: Mosquitto, recorder: Recorder
) -> None:
    proc = agent(tmp_path, [broker.port])
    recorder.state(True)
    proc.start()
    try:
        first = recorder.wait_for("NBIRTH")[0].decoded()
        recorder.wait_for("DDATA", 3)
        connects = broker.log_path.read_text().count(f"as {NODE} (")
        # Rebirth on command: same bdSeq, no new CONNECT
        mark = len(recorder.seen)
        recorder.command([Metric(name=conventions.REBIRTH_METRIC, datatype=DataType.Boolean,
                                 value=True)])  # fmt: skip
        reborn = recorder.wait_for("NBIRTH", after=mark)[0].decoded()
        recorder.wait_for("DBIRTH", after=mark)
        assert bdseq_of(reborn) == bdseq_of(first) and reborn.seq == 0
        assert broker.log_path.read_text().count(f"as {NODE} (") == connects

        # Primary Host offline: NDEATH, disconnect, nothing published until it is back
        mark = len(recorder.seen)
        recorder.state(False)
        death = recorder.wait_for("NDEATH", after=mark)[0]
        assert bdseq_of(death.decoded()) == bdseq_of(first) and death.decoded().seq is None
        time.sleep(2)
        quiet = len(recorder.seen)
        time.sleep(2)
        assert not [s for s in recorder.seen[quiet:] if s.kind in ("DDATA", "NBIRTH")]
        recorder.state(True)
        second = recorder.wait_for("NBIRTH", after=mark)[0].decoded()
        assert bdseq_of(second) == (bdseq_of(first) + 1) % 256

        # Killed: the broker delivers the Will, an NDEATH with the current bdSeq, QoS 1
        mark = len(recorder.seen)
        proc.kill()
        will = recorder.wait_for("NDEATH", after=mark)[0]
        assert bdseq_of(will.decoded()) == bdseq_of(second) and will.qos == 1
        assert not will.retain

        # Restarted: bdSeq was persisted, the next CONNECT uses the next value
        proc.start()
        third = recorder.wait_for("NBIRTH", after=mark)[0].decoded()
        assert bdseq_of(third) == (bdseq_of(second) + 1) % 256
    finally:
        proc.stop()


@pytest.mark.tck(
    "tck-id-operational-behavior-primary-application-state-with-multiple-servers-walk",
    "tck-id-operational-behavior-primary-application-state-with-multiple-servers-single-server",
)
def test_walks_the_server_list_when_a_broker_is_down(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "a") as a, Mosquitto(tmp_path / "b") as b:
        ra, rb = Recorder(a.port), Recorder(b.port)
        try:
            for r in (ra, rb):
                r.state(True)
            proc = agent(tmp_path, [a.port, b.port])
            proc.start()
            try:
                ra.wait_for("NBIRTH")
                assert not rb.of("NBIRTH")  # one server at a time
                ra.close()
                a.stop()
                rb.wait_for("NBIRTH", timeout=60)
                rb.wait_for("DDATA", 2)
            finally:
                proc.stop()
        finally:
            rb.close()


def test_datatype_in_data_option_puts_the_datatype_on_every_metric(
    tmp_path: Path, broker: Mosquitto, recorder: Recorder
) -> None:
    proc = agent(tmp_path, [broker.port], datatype_in_data=True)
    recorder.state(True)
    proc.start()
    try:
        for s in recorder.wait_for("DDATA", 3):
            assert all(m.datatype is DataType.Double for m in decode_payload(s.payload).metrics)
    finally:
        proc.stop()


@pytest.mark.tck(
    "tck-id-operational-behavior-device-ddeath",
    "tck-id-payloads-ddeath-seq-inc",
)
def test_a_device_that_goes_away_dies_and_is_born_again_without_losing_data(
    tmp_path: Path, broker: Mosquitto, recorder: Recorder
) -> None:
    fault = tmp_path / "daq.fault"
    proc = agent(tmp_path, [broker.port],
                 devices=[SimulatedDevice("daq", TAGS, seed=1, fault_file=fault),
                          SimulatedDevice("aux", ("TEMP",), seed=2)])  # fmt: skip
    recorder.state(True)
    proc.start()
    try:
        recorder.wait_for("DBIRTH", 2)
        recorder.wait_for("DDATA", 4)
        mark = len(recorder.seen)
        fault.touch()
        ddeath = recorder.wait_for("DDEATH", after=mark)[0]
        assert ddeath.topic.endswith("/daq") and ddeath.decoded().seq is not None
        time.sleep(1.5)
        dead_at = len(recorder.seen)
        time.sleep(1.5)
        after = [s for s in recorder.seen[dead_at:] if s.kind == "DDATA"]
        assert after and all(s.topic.endswith("/aux") for s in after)
        fault.unlink()
        back = recorder.wait_for("DBIRTH", after=mark)[0]
        assert back.topic.endswith("/daq")
        recorder.wait(
            lambda: any(s.topic.endswith("/daq") for s in recorder.of("DDATA", mark)),
            30,
            "daq data after its DBIRTH",
        )
    finally:
        proc.stop()
