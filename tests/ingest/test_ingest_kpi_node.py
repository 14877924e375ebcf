"""The KPI edge node's Sparkplug session, in memory: what it would put on the wire, decoded."""

from __future__ import annotations

import pytest

from core.sparkplug import DataType, MessageType, Payload, decode_payload, parse_topic
from core.sparkplug.topic import Topic
from ingest.config import KpiSettings, MqttConfig
from ingest.kpi import KPI_UNITS, KpiValue
from ingest.kpi_node import KpiEdgeNode

pytestmark = pytest.mark.asyncio

NOW = 1_767_225_600_000


class RecordingClient:
    """Stands in for ``aiomqtt.Client.publish``: keeps every message, decoded."""

    def __init__(self) -> None:
        self.sent: list[tuple[Topic, Payload, int, bool]] = []
        self.types: dict[int, DataType] = {}

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        parsed = parse_topic(topic)
        assert isinstance(parsed, Topic)
        decoded = decode_payload(payload, self.types)
        if parsed.message_type in (MessageType.NBIRTH, MessageType.DBIRTH):
            self.types.update(
                {m.alias: m.datatype for m in decoded.metrics if m.alias and m.datatype}
            )
        self.sent.append((parsed, decoded, qos, retain))


def node() -> KpiEdgeNode:
    return KpiEdgeNode(MqttConfig(), KpiSettings(), worker="w3", password=None, clock=lambda: NOW)


def kpi(appliance: str, name: str, ts: int, value: float) -> KpiValue:
    return KpiValue("s001", appliance, name, ts, value)


@pytest.mark.tck(
    "tck-id-topics-nbirth-seq-num",
    "tck-id-topics-nbirth-bdseq-matching",
    "tck-id-message-flow-device-birth-publish-nbirth-wait",
    "tck-id-topics-dbirth-seq",
    "tck-id-topics-dbirth-mqtt",
    "tck-id-topics-dbirth-metric-reqs",
    "tck-id-topics-ddata-seq-num",
)
async def test_births_then_a_dbirth_per_new_appliance_then_alias_only_ddata() -> None:
    kpis = node()
    client = RecordingClient()
    will = kpis.session.will(7)
    await kpis._birth(client)
    await kpis.publish(client, [kpi("s001-a001", "ROP_MA5", NOW - 10, 12.5)])
    await kpis.publish(
        client,
        [
            kpi("s001-a002", "DrillingEfficiency", NOW - 5, 80.0),
            kpi("s001-a001", "ROP_MA15", NOW - 5, 11.0),
        ],
    )
    kinds = [(t.message_type, t.device_id, p.seq) for t, p, _, _ in client.sent]
    assert kinds == [
        (MessageType.NBIRTH, None, 0),
        (MessageType.DBIRTH, "s001-a001", 1),
        (MessageType.DDATA, "s001-a001", 2),
        (MessageType.DBIRTH, "s001-a002", 3),
        (MessageType.DDATA, "s001-a002", 4),
        (MessageType.DDATA, "s001-a001", 5),
    ]
    assert all(
        t.group_id == "derrick-cloud" and t.edge_node_id == "kpi-w3" for t, *_ in client.sent
    )
    assert all(qos == 0 and not retain for _, _, qos, retain in client.sent)
    nbirth = client.sent[0][1]
    death = decode_payload(will.payload)
    assert [(m.name, m.value) for m in death.metrics] == [("bdSeq", 7)]
    assert {m.name: m.value for m in nbirth.metrics}["bdSeq"] == 7
    dbirth = client.sent[1][1]
    assert {
        m.name: m.properties["engUnit"].value for m in dbirth.metrics if m.properties
    } == KPI_UNITS
    assert all(m.datatype is DataType.Double and m.is_null for m in dbirth.metrics)
    ddata = client.sent[2][1]
    assert [(m.name, m.timestamp, m.value) for m in ddata.metrics] == [(None, NOW - 10, 12.5)]
    aliases = {m.name: m.alias for m in dbirth.metrics}
    assert ddata.metrics[0].alias == aliases["ROP_MA5"]


async def test_rebirth_repeats_every_dbirth_with_current_values() -> None:
    kpis = node()
    client = RecordingClient()
    kpis.session.will(1)
    await kpis._birth(client)
    await kpis.publish(client, [kpi("s001-a001", "WOB_MA5", NOW - 1, 21.5)])
    client.sent.clear()
    await kpis._birth(client)
    assert [(t.message_type, p.seq) for t, p, _, _ in client.sent] == [
        (MessageType.NBIRTH, 0),
        (MessageType.DBIRTH, 1),
    ]
    values = {m.name: m.value for m in client.sent[1][1].metrics if not m.is_null}
    assert values == {"WOB_MA5": 21.5}
