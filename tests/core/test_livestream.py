"""Sparkplug messages into live samples, in memory: births teach aliases, KPIs are filed
under their appliance, deaths and data before a birth are reported."""

from __future__ import annotations

from core.alerting import Sample
from core.livestream import Decoded, LiveSampleReader
from core.sparkplug import DataType
from core.sparkplug.session import EdgeNodeSession, MetricDef, Outgoing


def node(group: str, name: str, device: str) -> EdgeNodeSession:
    defs = [
        MetricDef(1, device, "ROP", DataType.Double),
        MetricDef(2, device, "Mode", DataType.String),
    ]
    session = EdgeNodeSession(group_id=group, edge_node_id=name, metrics=defs, clock=lambda: 5)
    session.will(0)
    return session


def feed(reader: LiveSampleReader, out: Outgoing) -> Decoded:
    return reader.handle(str(out.topic), out.payload)


def test_aliases_from_births_and_unknown_nodes() -> None:
    reader = LiveSampleReader()
    n = node("s017", "s017-a042", "daq")
    early = feed(reader, n.data("daq", [(1, 10, 1.5, 0)], historical=False))
    assert early.unknown_node is not None and early.samples == []
    feed(reader, n.nbirth({}))
    feed(reader, n.dbirth("daq", {}))
    got = feed(reader, n.data("daq", [(1, 11, 2.5, 0), (2, 11, "drilling", 0)], historical=False))
    assert got.samples == [Sample("s017", "s017-a042", "daq", "ROP", 2.5, 11)]
    old = feed(reader, n.data("daq", [(1, 9, 9.0, 0)], historical=True))
    assert old.samples == []
    dead = feed(reader, n.ndeath())
    assert dead.dead == ("s017", "s017-a042")
    after = feed(reader, n.data("daq", [(1, 12, 1.0, 0)], historical=False))
    assert after.unknown_node is not None


def test_kpis_are_filed_under_their_appliance() -> None:
    reader = LiveSampleReader("derrick-cloud")
    k = node("derrick-cloud", "kpi-w0", "s017-a042")
    feed(reader, k.nbirth({}))
    feed(reader, k.dbirth("s017-a042", {}))
    got = feed(reader, k.data("s017-a042", [(1, 20, 42.0, 0)], historical=False))
    assert got.samples == [Sample("s017", "s017-a042", "kpi", "ROP", 42.0, 20)]
    assert feed(reader, k.ndeath()).dead is None
