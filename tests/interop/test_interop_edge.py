"""An independent edge node publishes into our Primary Host; every value lands in QuestDB.

The independent edge is Eclipse Tahu JS ``sparkplug-client`` 3.2.4 (``tests/interop/node/
sparkplug-edge.js``): an NBIRTH, a DBIRTH and rounds of DDATA + NDATA with every scalar
Sparkplug datatype. A real ingest worker (real Mosquitto, real QuestDB) must store each
published value with its timestamp, group, node, device and name: numbers and booleans in
``telemetry_raw``, strings in ``telemetry_events``; nothing dead-lettered.

Its quirks, which the host must live with: names in DATA when births carry no aliases (the
way Tahu's own examples publish), the datatype on every DATA metric, bdSeq as UInt64 and
appended last in NBIRTH, a Will registered at QoS 0, and a bdSeq that is 0 on every connect.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import Mosquitto, QuestDB
from harness.derrick import ingest_process
from harness.process import ManagedProcess

pytestmark = pytest.mark.integration

GROUP = "interop"
EDGE = "tahu-e1"
#: The ``node_peer`` fixture (tests/interop/conftest.py): starts a peer script.
NodePeerFactory = Callable[[str, list[str]], Any]
RawRow = tuple[int, str, str, str, str, float]
EventRow = tuple[int, str, str, str, str, str, str]
_STRINGS = frozenset({"String", "Text", "UUID"})


def _as_stored(datatype: str, value: Any) -> float:
    if datatype == "Float":  # travels as a 32-bit float
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    return float(value)


def _expected(published: list[dict[str, Any]]) -> tuple[set[RawRow], set[EventRow]]:
    raw: set[RawRow] = set()
    events: set[EventRow] = set()
    for p in published:
        key = (p["timestamp"], GROUP, EDGE, p["device"], p["name"])
        if p["type"] in _STRINGS:
            events.add((*key, p["type"], p["value"]))
        else:
            raw.add((*key, _as_stored(p["type"], p["value"])))
    return raw, events


def _query(questdb: QuestDB, sql: str) -> list[list[Any]]:
    try:
        return list(questdb.exec_sql(sql)["dataset"])
    except Exception:  # the table does not exist yet
        return []


def _stored(questdb: QuestDB, prefix: str) -> tuple[list[RawRow], list[EventRow]]:
    raw = _query(
        questdb,
        f"SELECT ts::long, site, node, device, metric, value FROM {prefix}telemetry_raw",
    )
    events = _query(
        questdb,
        "SELECT ts::long, site, node, device, metric, datatype, value "
        f"FROM {prefix}telemetry_events",
    )
    return (
        [(ts // 1_000_000, s, n, d, m, v) for ts, s, n, d, m, v in raw],
        [(ts // 1_000_000, s, n, d, m, t, v) for ts, s, n, d, m, t, v in events],
    )


def _wait_stored(
    host: _Host, raw: set[RawRow], events: set[EventRow], timeout: float = 30
) -> tuple[list[RawRow], list[EventRow]]:
    """What QuestDB holds once it holds all expected rows (or something was dead-lettered)."""
    deadline = time.monotonic() + timeout
    got: tuple[list[RawRow], list[EventRow]] = ([], [])
    while time.monotonic() < deadline:
        got = _stored(host.questdb, host.prefix)
        if set(got[0]) >= raw and set(got[1]) >= events:
            time.sleep(1.0)  # WAL apply is asynchronous: let extras, if any, show
            return _stored(host.questdb, host.prefix)
        if host.dead_letters():
            break
        time.sleep(0.5)
    return got


class _Host:
    """A real ingest worker, and Tahu's decoder watching the wire (STATE, NCMD, NDEATH)."""

    def __init__(
        self, tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB, node_peer: NodePeerFactory
    ) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}_"
        self.questdb = questdb
        self.ingest: ManagedProcess = ingest_process(
            tmp_path / "ingest",
            mqtt_port=mosquitto.port,
            ilp_conf=questdb.ilp_conf,
            pg_dsn=questdb.pg_dsn,
            table_prefix=self.prefix,
        )
        self.wire = node_peer("sparkplug-decode.js", [mosquitto.url])
        self.wire.wait_for(lambda line: line.get("event") == "ready", timeout=20)
        self.ingest.start()
        # Tahu's client does not wait for the Primary Host: start it once the host is online.
        self.wire.wait_for(
            lambda line: (
                line.get("topic") == "spBv1.0/STATE/derrick"
                and '"online":true' in line.get("state", "").replace(" ", "")
            ),
            timeout=60,
        )

    def log(self) -> str:
        return self.ingest.log_path.read_text(encoding="utf-8")

    def messages(self, kind: str) -> list[dict[str, Any]]:
        """Payloads of ``kind`` to or from the Tahu edge node, as Tahu decoded them."""
        prefix = f"spBv1.0/{GROUP}/{kind}/{EDGE}"
        return [
            line["payload"]
            for line in self.wire.lines()
            if line.get("topic", "").startswith(prefix) and "payload" in line
        ]

    def dead_letters(self) -> list[list[Any]]:
        return _query(
            self.questdb, f"SELECT reason, topic, detail FROM {self.prefix}ingest_dead_letters"
        )


def _published(peer: Any) -> list[dict[str, Any]]:
    return [line for line in peer.lines() if line.get("event") == "published"]


@pytest.mark.parametrize("mode", ["names", "aliases"])
@pytest.mark.tck(
    "tck-id-payloads-name-requirement",
    "tck-id-payloads-metric-datatype-value",
    "tck-id-payloads-metric-datatype-value-type",
    "tck-id-topics-ndata-payload",
    "tck-id-topics-ddata-payload",
)
def test_every_value_a_tahu_edge_publishes_lands_in_questdb(
    tmp_path: Path,
    mosquitto: Mosquitto,
    questdb: QuestDB,
    node_peer: NodePeerFactory,
    mode: str,
) -> None:
    host = _Host(tmp_path, mosquitto, questdb, node_peer)
    try:
        edge = node_peer("sparkplug-edge.js", [mosquitto.url, GROUP, EDGE, mode, "15", "100"])
        edge.wait_for(lambda line: line.get("event") == "done", timeout=30)
        published = _published(edge)
        raw, events = _expected(published)
        assert len(raw) == 15 * 12 and len(events) == 15 * 3
        stored_raw, stored_events = _wait_stored(host, raw, events)
        assert host.ingest.running, host.log()[-3000:]
    finally:
        host.ingest.stop()
    assert not host.dead_letters(), host.dead_letters()[:3]
    assert len(stored_raw) == len(set(stored_raw)), "a row was stored twice"
    assert set(stored_raw) == raw, (
        f"missing {sorted(raw - set(stored_raw))[:3]}; extra {sorted(set(stored_raw) - raw)[:3]}"
    )
    assert sorted(stored_events) == sorted(events)
    assert not host.messages("NCMD"), "the host asked a healthy node to rebirth"


@pytest.mark.tck(
    "tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline",
    "tck-id-payloads-ndeath-will-message",
)
def test_tahu_edge_killed_then_back_with_the_same_bdseq_loses_nothing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    questdb: QuestDB,
    node_peer: NodePeerFactory,
) -> None:
    """Killed: the broker sends Tahu's QoS 0 Will (NDEATH bdSeq 0), which matches the
    NBIRTH and ends the node's session. Back: bdSeq is 0 again (Tahu never increments it);
    the host takes the new birth and stores the second session's values too."""
    host = _Host(tmp_path, mosquitto, questdb, node_peer)
    try:
        first = node_peer("sparkplug-edge.js", [mosquitto.url, GROUP, EDGE, "aliases", "5", "100"])
        first.wait_for(lambda line: line.get("event") == "done", timeout=30)
        first.process.kill()
        deadline = time.monotonic() + 10
        while not host.messages("NDEATH") and time.monotonic() < deadline:
            time.sleep(0.1)
        second = node_peer(
            "sparkplug-edge.js", [mosquitto.url, GROUP, EDGE, "aliases", "5", "100", "1000"]
        )
        second.wait_for(lambda line: line.get("event") == "done", timeout=30)
        raw, events = _expected(_published(first) + _published(second))
        stored_raw, stored_events = _wait_stored(host, raw, events)
        assert host.ingest.running, host.log()[-3000:]
    finally:
        host.ingest.stop()
    assert set(stored_raw) == raw and set(stored_events) == events
    assert not host.dead_letters(), host.dead_letters()[:3]

    bdseqs = [
        m["value"] for p in host.messages("NBIRTH") for m in p["metrics"] if m["name"] == "bdSeq"
    ]
    assert bdseqs == [0, 0], "Tahu sparkplug-client 3.2.4 reuses bdSeq 0 on every connect"
    (will,) = host.messages("NDEATH")
    assert [(m["name"], m["type"], m["value"]) for m in will["metrics"]] == [("bdSeq", "UInt64", 0)]
    log = host.log()
    assert f"NDEATH {GROUP}/{EDGE} bdSeq 0" in log, log[-3000:]
    assert log.count(f"NBIRTH {GROUP}/{EDGE} bdSeq 0") == 2, log[-3000:]


@pytest.mark.tck("tck-id-payloads-metric-datatype-value")
def test_a_tahu_uint32_metric_lands_in_questdb(
    tmp_path: Path,
    mosquitto: Mosquitto,
    questdb: QuestDB,
    node_peer: NodePeerFactory,
) -> None:
    host = _Host(tmp_path, mosquitto, questdb, node_peer)
    try:
        edge = node_peer(
            "sparkplug-edge.js", [mosquitto.url, GROUP, EDGE, "aliases", "3", "100", "0", "uint32"]
        )
        edge.wait_for(lambda line: line.get("event") == "done", timeout=30)
        raw, events = _expected(_published(edge))
        assert any(name == "Count" for _, _, _, _, name, _ in raw)
        stored_raw, stored_events = _wait_stored(host, raw, events)
    finally:
        host.ingest.stop()
    assert not host.dead_letters(), host.dead_letters()[:3]
    assert set(stored_raw) == raw and set(stored_events) == events
