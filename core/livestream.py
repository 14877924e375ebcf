"""Live numeric samples from Sparkplug messages, for consumers that are not the Primary Host
(pure: bytes in, values out).

:class:`LiveSampleReader` learns each node's alias map and hot flags from its births and
turns NDATA/DDATA into :class:`~core.alerting.Sample` s. Values of the cloud's KPI node
(group ``kpi_group``, one device per appliance) come out under the appliance they describe:
site = the appliance's site, appliance = the device id, device ``kpi``. Historical values
(replays), nulls and non-numeric values are skipped. Data of a node whose birth was missed
is reported as ``unknown_node``: the caller may ask for a rebirth (an NCMD any Sparkplug
host application may send). A death certificate is reported as ``dead``.
"""

from __future__ import annotations

import math
from collections import Counter

import msgspec

from core.alerting import Sample
from core.ids import IdError, site_of
from core.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Topic,
    decode_payload,
    decompress_payload,
    is_compressed,
    parse_topic,
)

SUBSCRIPTIONS = (
    "spBv1.0/+/NBIRTH/+",
    "spBv1.0/+/NDEATH/+",
    "spBv1.0/+/DBIRTH/+/+",
    "spBv1.0/+/NDATA/+",
    "spBv1.0/+/DDATA/+/+",
)


class Decoded(msgspec.Struct, frozen=True):
    """What one message meant: samples, a node death, or a node to ask for a rebirth."""

    samples: list[Sample] = []
    dead: tuple[str, str] | None = None  # (site, appliance)
    unknown_node: Topic | None = None
    ts: int = 0


class _Node:
    __slots__ = ("by_alias", "by_name", "datatypes")

    def __init__(self) -> None:
        self.by_alias: dict[int, tuple[str, str]] = {}
        self.by_name: set[tuple[str, str]] = set()
        self.datatypes: dict[int, DataType] = {}

    def learn(self, device: str, metrics: list[Metric]) -> None:
        for m in metrics:
            if m.name is None:
                continue
            self.by_name.add((device, m.name))
            if m.alias is not None:
                self.by_alias[m.alias] = (device, m.name)
                if m.datatype is not None:
                    self.datatypes[m.alias] = m.datatype


class LiveSampleReader:
    """Alias maps of the nodes seen; :meth:`handle` raises only ``SparkplugError``."""

    def __init__(self, kpi_group: str = "derrick-cloud") -> None:
        self._kpi_group = kpi_group
        self._nodes: dict[tuple[str, str], _Node] = {}
        self.counters: Counter[str] = Counter()

    def handle(self, topic_text: str, raw: bytes) -> Decoded:
        topic = parse_topic(topic_text)
        if not isinstance(topic, Topic):
            return Decoded()
        key = (topic.group_id, topic.edge_node_id)
        kind = topic.message_type
        if kind is MessageType.NDEATH:
            self._nodes.pop(key, None)
            payload = decode_payload(raw)
            if topic.group_id == self._kpi_group:
                return Decoded()
            return Decoded(dead=key, ts=payload.timestamp or 0)
        node = _Node() if kind is MessageType.NBIRTH else self._nodes.get(key)
        if node is None:
            self.counters["before_birth"] += 1
            return Decoded(unknown_node=topic)
        payload = decode_payload(raw, node.datatypes)
        if is_compressed(payload):
            payload = decompress_payload(payload, node.datatypes)
        device = topic.device_id or ""
        if kind is MessageType.NBIRTH:
            self._nodes[key] = node
            node.learn("", payload.metrics)
            return Decoded()
        if kind is MessageType.DBIRTH:
            node.learn(device, payload.metrics)
            return Decoded()
        if kind not in (MessageType.NDATA, MessageType.DDATA):
            return Decoded()
        samples: list[Sample] = []
        for m in payload.metrics:
            if m.is_historical or m.is_null:
                continue
            if m.name is None and m.alias is not None:
                found = node.by_alias.get(m.alias)
                if found is None:
                    self.counters["unknown_alias"] += 1
                    return Decoded(samples, unknown_node=topic)
                name = found[1]
            elif m.name is not None and (device, m.name) in node.by_name:
                name = m.name
            else:
                self.counters["unknown_metric"] += 1
                continue
            value = m.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            ts = m.timestamp if m.timestamp is not None else payload.timestamp or 0
            sample = self._sample(topic, device, name, float(value), ts)
            if sample is not None:
                samples.append(sample)
        return Decoded(samples)

    def _sample(self, topic: Topic, device: str, name: str, value: float, ts: int) -> Sample | None:
        if topic.group_id != self._kpi_group:
            return Sample(topic.group_id, topic.edge_node_id, device, name, value, ts)
        try:
            site = site_of(device)
        except IdError:
            self.counters["kpi_device_not_an_appliance"] += 1
            return None
        return Sample(site, device, "kpi", name, value, ts)
