"""An independent decoder reads our edge agents' births and data and agrees on every value.

The independent decoder is Eclipse Tahu JS (``sparkplug-payload`` 1.0.3 on mqtt.js, see
``tests/interop/node/``). Two real edge agents publish through a real Mosquitto, without a
Primary Host (``wait_for_primary_host = false``). Tahu JS only returns DATA values when the
datatype travels with them, so the agents run with ``publish.datatype_in_data = true``, and
it cannot inflate Sparkplug compressed payloads, so with ``publish.compress_live = false``; the
last test shows what it makes of spec-default, alias-only DATA.

Every data metric Tahu decoded, resolved through the aliases of the births Tahu decoded, is
compared with what our own codec decoded (:class:`harness.observer.SparkplugObserver`):
(timestamp, group, node, device, name, value) rows and datatypes must be identical.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core import conventions, tags
from harness import Mosquitto
from harness.derrick import UNITS, EdgeSpec, SimulatedDevice, edge_process
from harness.observer import Row, SparkplugObserver

pytestmark = pytest.mark.integration

SITE = "s001"
NODES: dict[str, list[SimulatedDevice]] = {
    "s001-a001": [SimulatedDevice("daq", seed=1), SimulatedDevice("opc", ("DEPTH", "ROP"), 2)],
    "s001-a002": [SimulatedDevice("daq", ("HKLD", "WOB", "GAS"), seed=3)],
}
#: The ``node_peer`` fixture (tests/interop/conftest.py): starts a peer script.
NodePeerFactory = Callable[[str, list[str]], Any]
JsonLine = dict[str, Any]


def _kind(topic: str) -> str:
    return topic.split("/")[2]


def _ids(topic: str) -> tuple[str, str, str]:
    """(group, node, device) of a Sparkplug topic, as the peer printed it."""
    parts = topic.split("/")
    return parts[1], parts[3], parts[4] if len(parts) > 4 else ""


def _run_edges(
    tmp_path: Path,
    mosquitto: Mosquitto,
    node_peer: NodePeerFactory,
    *,
    datatype_in_data: bool,
    seconds: float,
) -> tuple[list[JsonLine], SparkplugObserver]:
    """Edges publish for ``seconds`` after their births, then stop (NDEATH); all lines."""
    decoder = node_peer("sparkplug-decode.js", [mosquitto.url])
    decoder.wait_for(lambda line: line.get("event") == "ready", timeout=20)
    edges = [
        edge_process(
            EdgeSpec(
                site=SITE,
                appliance=node,
                devices=devices,
                normal_per_min=60 * 2 * sum(len(d.tags) for d in devices),
                publish_interval_ms=200,
                wait_for_primary_host=False,
                datatype_in_data=datatype_in_data,
                compress_live=False,  # Tahu JS cannot inflate compressed payloads
            ),
            tmp_path / node,
            [mosquitto.port],
        )
        for node, devices in NODES.items()
    ]
    device_count = sum(len(d) for d in NODES.values())
    with SparkplugObserver("127.0.0.1", mosquitto.port) as observer:
        try:
            for edge in edges:
                edge.start()
            deadline = time.monotonic() + 60
            while observer.counts["DBIRTH"] < device_count and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(seconds)
            for edge in edges:
                assert edge.running, edge.log_path.read_text()[-3000:]
        finally:
            for edge in edges:
                edge.stop()
        deadline = time.monotonic() + 10
        while observer.counts["NDEATH"] < len(edges) and time.monotonic() < deadline:
            time.sleep(0.1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ndeaths = [x for x in decoder.lines() if x.get("topic", "").count("/NDEATH/")]
        if len(ndeaths) >= len(edges):
            break
        time.sleep(0.1)
    lines = decoder.lines()
    assert not [x for x in lines if x.get("event") == "error"], decoder.log_tail()
    return [x for x in lines if "payload" in x], observer


class _Births:
    """What Tahu decoded from the births: alias -> (device, name, type) per node."""

    def __init__(self) -> None:
        self.aliases: dict[tuple[str, str], dict[int, tuple[str, str, str]]] = defaultdict(dict)

    def add(self, topic: str, payload: dict[str, Any]) -> None:
        group, node, device = _ids(topic)
        for m in payload["metrics"]:
            if "alias" in m:
                self.aliases[(group, node)][m["alias"]] = (device, m["name"], m["type"])


@pytest.mark.tck(
    "tck-id-payloads-alias-birth-requirement",
    "tck-id-payloads-alias-data-cmd-requirement",
    "tck-id-payloads-alias-uniqueness",
    "tck-id-payloads-metric-datatype-req",
    "tck-id-payloads-metric-timestamp-in-UTC",
    "tck-id-payloads-name-birth-data-requirement",
    "tck-id-topics-nbirth-metric-reqs",
    "tck-id-topics-dbirth-metric-reqs",
    "tck-id-topics-ddata-payload",
    "tck-id-topics-ddata-timestamp",
)
def test_tahu_decodes_every_data_value_as_our_codec_does(
    tmp_path: Path, mosquitto: Mosquitto, node_peer: NodePeerFactory
) -> None:
    messages, observer = _run_edges(
        tmp_path, mosquitto, node_peer, datatype_in_data=True, seconds=3
    )
    assert not observer.errors, observer.errors[:5]
    births = _Births()
    tahu_rows: set[Row] = set()
    tahu_types: dict[tuple[str, str, str, str], str] = {}
    problems: list[str] = []
    for msg in messages:
        topic, payload = msg["topic"], msg["payload"]
        kind = _kind(topic)
        if kind in ("NBIRTH", "DBIRTH"):
            births.add(topic, payload)
        if kind not in ("NDATA", "DDATA"):
            continue
        group, node, device = _ids(topic)
        assert isinstance(payload["timestamp"], int)
        for m in payload["metrics"]:
            assert "name" not in m, f"{topic}: DATA carries a name: {m}"
            declared = births.aliases[(group, node)].get(m["alias"])
            if declared is None:
                problems.append(f"{topic}: alias {m['alias']} not in any birth Tahu saw")
                continue
            birth_device, name, birth_type = declared
            assert birth_device == device, f"{topic}: alias {m['alias']} is {declared}"
            if m["type"] != birth_type or m["value"] is None:
                problems.append(f"{topic}: {name} {m} (birth type {birth_type})")
                continue
            tahu_rows.add((m["timestamp"], group, node, device, name, float(m["value"])))
            tahu_types[(group, node, device, name)] = m["type"]
    assert not problems, problems[:5]

    ours = observer.snapshot()
    assert tahu_rows == ours, (
        f"only Tahu: {sorted(tahu_rows - ours)[:3]}; only ours: {sorted(ours - tahu_rows)[:3]}"
    )
    for key, tahu_type in tahu_types.items():
        _, datatype = observer.declared[key]
        assert datatype is not None and datatype.name == tahu_type, (key, datatype, tahu_type)
    # Every sensor of every device published, and enough to mean something.
    sensors = {(node, d.id, t) for node, devices in NODES.items() for d in devices for t in d.tags}
    assert {(n, d, m) for _, _, n, d, m, _ in tahu_rows} == sensors
    assert len(tahu_rows) >= 3 * len(sensors)


@pytest.mark.tck(
    "tck-id-topics-nbirth-seq-num",
    "tck-id-payloads-nbirth-seq",
    "tck-id-payloads-nbirth-bdseq",
    "tck-id-topics-nbirth-bdseq-included",
    "tck-id-topics-nbirth-bdseq-matching",
    "tck-id-payloads-ndeath-bdseq",
    "tck-id-payloads-ndeath-seq",
    "tck-id-topics-nbirth-rebirth-metric",
    "tck-id-payloads-nbirth-rebirth-req",
    "tck-id-operational-behavior-data-commands-rebirth-name",
    "tck-id-operational-behavior-data-commands-rebirth-name-aliases",
    "tck-id-operational-behavior-data-commands-rebirth-datatype",
    "tck-id-operational-behavior-data-commands-rebirth-value",
    "tck-id-payloads-dbirth-seq-inc",
    "tck-id-payloads-ddata-seq-inc",
    "tck-id-payloads-sequence-num-always-included",
    "tck-id-payloads-sequence-num-incrementing",
    "tck-id-payloads-metric-propertyvalue-type-type",
    "tck-id-payloads-metric-propertyvalue-type-value",
)
def test_tahu_reads_births_bdseq_rebirth_metric_properties_and_seq(
    tmp_path: Path, mosquitto: Mosquitto, node_peer: NodePeerFactory
) -> None:
    messages, observer = _run_edges(
        tmp_path, mosquitto, node_peer, datatype_in_data=True, seconds=1
    )
    by_node: dict[tuple[str, str], list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
    for msg in messages:
        group, node, device = _ids(msg["topic"])
        by_node[(group, node)].append((_kind(msg["topic"]), device, msg["payload"]))
    assert set(by_node) == {(SITE, node) for node in NODES}

    for (group, node), stream in by_node.items():
        kinds = [k for k, _, _ in stream]
        assert kinds[0] == "NBIRTH" and kinds[-1] == "NDEATH", kinds
        assert kinds.count("NBIRTH") == 1 and kinds.count("NDEATH") == 1, kinds
        assert kinds.count("DBIRTH") == len(NODES[node])
        assert "DDATA" in kinds

        # seq: 0 in NBIRTH, then +1 (mod 256) on every message of the node, none on NDEATH.
        seqs = [p["seq"] for k, _, p in stream if k != "NDEATH"]
        assert all(isinstance(s, int) for s in seqs)
        assert seqs == [i % 256 for i in range(len(seqs))], seqs[:20]
        ndeath = stream[-1][2]
        assert "seq" not in ndeath

        # bdSeq: Int64 in NBIRTH, equal to the NDEATH's (the only metric there).
        nbirth = stream[0][2]
        metrics = {m["name"]: m for m in nbirth["metrics"]}
        assert metrics["bdSeq"]["type"] == "Int64" and isinstance(metrics["bdSeq"]["value"], int)
        assert [(m["name"], m["type"]) for m in ndeath["metrics"]] == [("bdSeq", "Int64")]
        assert ndeath["metrics"][0]["value"] == metrics["bdSeq"]["value"]

        # Node Control/Rebirth: Boolean false, no alias.
        rebirth = metrics[conventions.REBIRTH_METRIC]
        assert rebirth["type"] == "Boolean" and rebirth["value"] is False
        assert "alias" not in rebirth

        # Every birth metric Tahu saw equals what our codec saw: name, alias, datatype.
        for kind, device, payload in stream:
            if kind not in ("NBIRTH", "DBIRTH"):
                continue
            assert isinstance(payload["timestamp"], int)
            for m in payload["metrics"]:
                alias, datatype = observer.declared[(group, node, device, m["name"])]
                assert m.get("alias") == alias, m
                assert datatype is not None and m["type"] == datatype.name, m
                assert isinstance(m["timestamp"], int), m
        aliases = [
            m["alias"]
            for kind, _, p in stream
            if kind in ("NBIRTH", "DBIRTH")
            for m in p["metrics"]
            if "alias" in m
        ]
        assert len(aliases) == len(set(aliases)), "an alias is used twice"
        # Node metrics other than bdSeq and the Rebirth control have aliases.
        for name, m in metrics.items():
            assert name in ("bdSeq", conventions.REBIRTH_METRIC) or "alias" in m, m

        # Device births: every sensor, Double, with engUnit and hot properties.
        for device in NODES[node]:
            payload = next(p for k, d, p in stream if k == "DBIRTH" and d == device.id)
            got = {
                m["name"]: (m["type"], m["properties"]["engUnit"], m["properties"]["hot"])
                for m in payload["metrics"]
            }
            assert got == {
                tag: (
                    "Double",
                    {"type": "String", "value": UNITS[tag]},
                    {"type": "Boolean", "value": tags.TAGS[tag].hot},
                )
                for tag in device.tags
            }


@pytest.mark.tck("tck-id-payloads-metric-datatype-not-req")
def test_spec_default_alias_only_data_needs_the_birth_which_tahu_does_not_apply(
    tmp_path: Path, mosquitto: Mosquitto, node_peer: NodePeerFactory
) -> None:
    """Default config: DATA without datatype (spec SHOULD NOT send it). Tahu JS's stateless
    decoder then returns no type and a null value: why ``datatype_in_data`` exists."""
    messages, observer = _run_edges(
        tmp_path, mosquitto, node_peer, datatype_in_data=False, seconds=1
    )
    data = [
        m for msg in messages if _kind(msg["topic"]) == "DDATA" for m in msg["payload"]["metrics"]
    ]
    assert data and observer.snapshot()
    assert all(m.get("type") is None and m["value"] is None for m in data), data[:3]
    assert all(isinstance(m["alias"], int) and isinstance(m["timestamp"], int) for m in data)
