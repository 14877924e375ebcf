"""The Sparkplug session state of one edge node, and the payloads it publishes.

Pure: no sockets. Its owner (the edge agent; the ingest worker's KPI edge node) feeds it
(bdSeq, current values, batches) and publishes what it returns. Sequence numbers belong to
this object, never to globals; time comes from an injected clock.

Rules kept here (Sparkplug B 3.0):

- NDEATH (the MQTT Will) carries only ``bdSeq`` (Int64) and no ``seq``; the NBIRTH of the same
  connection carries the same ``bdSeq``.
- NBIRTH resets ``seq`` to 0; every later NBIRTH/DBIRTH/NDATA/DDATA/DDEATH increments it by
  one, wrapping after 255, across the node and all its devices.
- Births carry every metric with name, alias, datatype, current value (or ``is_null``) and
  properties (engineering unit, hot flag); ``Node Control/Rebirth`` has no alias.
- Data messages carry aliases only (the datatype only if configured); a value whose source
  reported it not good carries the ``Quality`` property (Int32: 500 stale, 0 bad). A metric
  whose source timestamp has a sub-millisecond part (legacy readings stored in nanoseconds)
  carries it in the ``tsNanos`` property (UInt32, 0–999999): the exact time is
  ``timestamp`` ms + that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import msgspec

from core import conventions
from core.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Payload,
    PropertyValue,
    Topic,
    compress_payload,
    encode_payload,
)

Clock = Callable[[], int]
"""Returns the current time as epoch milliseconds."""


QUALITY_GOOD = conventions.QUALITY_GOOD

#: A data sample: (alias, timestamp ms, value, sub-ms ns) or with a 5th item, its quality.
DataSample = tuple[int, int, object, int] | tuple[int, int, object, int, int]


def _data_properties(ns: int, quality: int) -> dict[str, PropertyValue] | None:
    if not ns and quality == QUALITY_GOOD:
        return None
    props: dict[str, PropertyValue] = {}
    if ns:
        if not 0 <= ns < 1_000_000:
            raise ValueError(f"sub-millisecond part {ns} ns is outside 0..999999")
        props[conventions.PROP_TS_NANOS] = PropertyValue(DataType.UInt32, ns)
    if quality != QUALITY_GOOD:
        props[conventions.PROP_QUALITY] = PropertyValue(DataType.Int32, quality)
    return props


class MetricDef(msgspec.Struct, frozen=True):
    """A metric the node declares in a birth."""

    alias: int
    device: str  # "" for node-level metrics
    name: str
    datatype: DataType
    unit: str | None = None
    hot: bool | None = None
    writable: bool = False


class Outgoing(msgspec.Struct, frozen=True):
    """A message to publish: topic, payload bytes, QoS, retain."""

    topic: Topic
    payload: bytes
    qos: int = 0
    retain: bool = False


class EdgeNodeSession:
    """Sequence numbers, bdSeq and births of one edge node across MQTT connections."""

    def __init__(
        self,
        *,
        group_id: str,
        edge_node_id: str,
        metrics: Sequence[MetricDef],
        clock: Clock,
        datatype_in_data: bool = False,
    ) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self._clock = clock
        self._datatype_in_data = datatype_in_data
        self._defs: dict[int, MetricDef] = {}
        self._by_name: dict[tuple[str, str], MetricDef] = {}
        for m in metrics:
            if m.alias in self._defs:
                raise ValueError(f"alias {m.alias} used twice ({m.name!r})")
            self._defs[m.alias] = m
            self._by_name[(m.device, m.name)] = m
        self.devices: tuple[str, ...] = tuple(dict.fromkeys(m.device for m in metrics if m.device))
        self._types = {alias: m.datatype for alias, m in self._defs.items()}
        self._seq = 0
        self.bdseq: int | None = None

    def add_device(self, device: str, metrics: Sequence[MetricDef]) -> None:
        """Declare a device that appears after the node was born; its DBIRTH comes next."""
        if not device or device in self.devices:
            raise ValueError(f"device {device!r} is empty or already declared")
        for m in metrics:
            if m.device != device:
                raise ValueError(f"metric {m.name!r} belongs to {m.device!r}, not {device!r}")
            if m.alias in self._defs:
                raise ValueError(f"alias {m.alias} used twice ({m.name!r})")
        for m in metrics:
            self._defs[m.alias] = m
            self._by_name[(m.device, m.name)] = m
            self._types[m.alias] = m.datatype
        self.devices = (*self.devices, device)

    # -- lookup --------------------------------------------------------------------------

    def metric(self, device: str, name: str) -> MetricDef:
        return self._by_name[(device, name)]

    def definition(self, alias: int) -> MetricDef:
        return self._defs[alias]

    def node_metrics(self) -> list[MetricDef]:
        return [m for m in self._defs.values() if not m.device]

    def device_metrics(self, device: str) -> list[MetricDef]:
        return [m for m in self._defs.values() if m.device == device]

    # -- sequence ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) % 256
        return seq

    def topic(self, message_type: MessageType, device: str | None = None) -> Topic:
        return Topic(message_type, self.group_id, self.edge_node_id, device)

    # -- messages ------------------------------------------------------------------------

    def will(self, bdseq: int) -> Outgoing:
        """The NDEATH registered as the MQTT Will for a new connection with ``bdseq``."""
        self.bdseq = bdseq
        payload = Payload(
            timestamp=self._clock(),
            metrics=[Metric(name="bdSeq", datatype=DataType.Int64, value=bdseq)],
        )
        return Outgoing(self.topic(MessageType.NDEATH), encode_payload(payload), qos=1)

    def ndeath(self) -> Outgoing:
        """An explicit NDEATH before an intentional disconnect (same bdSeq as the Will)."""
        if self.bdseq is None:
            raise RuntimeError("no connection: NDEATH needs the bdSeq of the Will")
        return self.will(self.bdseq)

    def nbirth(self, values: Mapping[int, object]) -> Outgoing:
        """NBIRTH: seq 0, bdSeq, Rebirth control, and every node metric with its value."""
        if self.bdseq is None:
            raise RuntimeError("NBIRTH before a connection registered its Will")
        now = self._clock()
        self._seq = 0
        metrics = [
            Metric(name="bdSeq", datatype=DataType.Int64, value=self.bdseq, timestamp=now),
            Metric(
                name=conventions.REBIRTH_METRIC,
                datatype=DataType.Boolean,
                value=False,
                timestamp=now,
            ),
        ]
        metrics.extend(self._birth_metric(m, values.get(m.alias), now) for m in self.node_metrics())
        payload = Payload(timestamp=now, seq=self._next_seq(), metrics=metrics)
        return Outgoing(self.topic(MessageType.NBIRTH), encode_payload(payload))

    def dbirth(self, device: str, values: Mapping[int, object]) -> Outgoing:
        now = self._clock()
        metrics = [
            self._birth_metric(m, values.get(m.alias), now) for m in self.device_metrics(device)
        ]
        payload = Payload(timestamp=now, seq=self._next_seq(), metrics=metrics)
        return Outgoing(self.topic(MessageType.DBIRTH, device), encode_payload(payload))

    def ddeath(self, device: str) -> Outgoing:
        payload = Payload(timestamp=self._clock(), seq=self._next_seq())
        return Outgoing(self.topic(MessageType.DDEATH, device), encode_payload(payload))

    def data(
        self,
        device: str,
        samples: Iterable[DataSample],
        *,
        historical: bool,
        batch: int | None = None,
        compress: bool = False,
    ) -> Outgoing:
        """NDATA (``device == ""``) or DDATA of (alias, timestamp ms, value, ns[, quality])
        samples, where ``ns`` is the timestamp's sub-millisecond part (0 for nearly every
        sample) and ``quality`` the source's Sparkplug quality (``Quality`` property, sent
        only when not 192 = good). With
        ``compress`` the payload travels DEFLATE-compressed (``core.sparkplug.compression``)
        when that makes it smaller."""
        with_type = self._datatype_in_data
        defs = self._defs
        metrics = []
        for sample in samples:
            alias, ts, value, ns = sample[0], sample[1], sample[2], sample[3]
            quality = sample[4] if len(sample) == 5 else QUALITY_GOOD
            metrics.append(
                Metric(
                    alias=alias,
                    timestamp=ts,
                    datatype=defs[alias].datatype if with_type else None,
                    value=value,
                    is_null=value is None,
                    is_historical=historical,
                    properties=_data_properties(ns, quality),
                )
            )
        payload = Payload(
            timestamp=self._clock(), seq=self._next_seq(), metrics=metrics, batch=batch
        )
        kind = MessageType.DDATA if device else MessageType.NDATA
        data = encode_payload(payload, self._types)
        if compress:
            # Only when it pays: a message of a few metrics (normal-rate sampling) grows
            # under DEFLATE's header and the wrapper; a host reads either form.
            packed = compress_payload(payload, self._types)
            if len(packed) < len(data):
                data = packed
        return Outgoing(self.topic(kind, device or None), data)

    def _birth_metric(self, m: MetricDef, value: object, now: int) -> Metric:
        props: dict[str, PropertyValue] = {}
        if m.unit is not None:
            props[conventions.PROP_ENG_UNIT] = PropertyValue(DataType.String, m.unit)
        if m.hot is not None:
            props[conventions.PROP_HOT] = PropertyValue(DataType.Boolean, m.hot)
        return Metric(
            name=m.name,
            alias=m.alias,
            timestamp=now,
            datatype=m.datatype,
            value=value,
            is_null=value is None,
            properties=props or None,
        )
