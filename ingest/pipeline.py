"""The pure half of the Primary Host: from (topic, payload bytes) to rows and actions.

No sockets, no database: :class:`MessageProcessor` decodes a message, checks it against the
node's birth certificate, and returns what to write (numeric rows, event rows, catalogue
rows), what to dead-letter (with the reason) and what to do (ask for a rebirth, which
batches the rows belong to). Unit-tested in memory; the host (``ingest.host``) does the I/O.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Callable
from typing import Final

import msgspec

from core import conventions
from core.ratelimit import TokenBucket
from core.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Payload,
    PayloadDecodeError,
    SparkplugError,
    StateTopic,
    Topic,
    decode_payload,
    decode_state,
    decompress_payload,
    parse_topic,
)
from ingest.nodes import MetricInfo, NodeState

log = logging.getLogger(__name__)

#: Source timestamps before this (2000-01-01) are rejected.
MIN_TIMESTAMP_MS: Final = 946_684_800_000
#: Source timestamps more than this ahead of the host's clock are rejected.
MAX_FUTURE_MS: Final = 86_400_000

#: Parsed topics kept at most (cleared when full): a few per edge node and device.
_TOPIC_CACHE_SIZE: Final = 200_000

_NUMERIC: Final = frozenset(
    {
        DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64,
        DataType.UInt8, DataType.UInt16, DataType.UInt32, DataType.UInt64,
        DataType.Float, DataType.Double, DataType.Boolean, DataType.DateTime,
    }
)  # fmt: skip


class NumericRow(msgspec.Struct, frozen=True, gc=False, array_like=True):
    ts_ms: int
    site: str
    node: str
    device: str
    metric: str
    value: float
    hot: bool
    historical: bool
    #: Sub-millisecond part of the source timestamp (``tsNanos`` property), 0–999999.
    ns: int = 0


class EventRow(msgspec.Struct, frozen=True, gc=False, array_like=True):
    ts_ms: int
    site: str
    node: str
    device: str
    metric: str
    datatype: str
    value: str
    historical: bool
    #: Sub-millisecond part of the source timestamp (``tsNanos`` property), 0–999999.
    ns: int = 0


class CatalogueRow(msgspec.Struct, frozen=True, gc=False):
    site: str
    node: str
    device: str
    metric: str
    datatype: str
    unit: str | None
    hot: bool


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    reason: str
    topic: str
    detail: str
    payload: bytes

    def payload_b64(self) -> str:
        return base64.b64encode(self.payload).decode("ascii")


class Outcome(msgspec.Struct, gc=False):
    """What one message asks of the host."""

    node: NodeState | None = None
    numeric: list[NumericRow] = []
    events: list[EventRow] = []
    catalogue: list[CatalogueRow] = []
    dead_letters: list[DeadLetter] = []
    batches: list[int] = []
    rebirth: str | None = None  # the reason, when a rebirth should be requested
    state: bool | None = None  # our own STATE seen: online flag
    #: Data metrics whose Sparkplug ``Quality`` property said not good (500 stale, 0 bad):
    #: counted, not stored as readings (telemetry_raw holds measurements we can trust).
    not_good: int = 0
    #: Metrics of a batch held back by the node's quota (not stored, not acknowledged).
    over_quota: int = 0


def _json_default(obj: object) -> object:
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    raise NotImplementedError


_json = msgspec.json.Encoder(enc_hook=_json_default)


class MessageProcessor:
    """Decodes and checks messages against what each node declared in its births."""

    def __init__(
        self,
        *,
        primary_host_id: str,
        clock: Callable[[], int],
        max_payload_bytes: int,
        node_quota: tuple[float, int] | None = None,
    ) -> None:
        self._state_topic = str(StateTopic(primary_host_id))
        self._clock = clock
        self._max_payload = max_payload_bytes
        #: (metrics per second, burst) per node; None: no quota.
        self._quota = node_quota
        self.nodes: dict[tuple[str, str], NodeState] = {}
        #: Parsed topics (immutable values) by their text: each node sends on the same few.
        self._topics: dict[str, Topic | StateTopic] = {}

    def node(self, group: str, edge: str) -> NodeState:
        key = (group, edge)
        state = self.nodes.get(key)
        if state is None:
            state = self.nodes[key] = NodeState(group, edge)
        return state

    def process(self, topic_text: str, payload: bytes) -> Outcome:
        if len(payload) > self._max_payload:
            return self._dead("oversized", topic_text, f"{len(payload)} bytes", payload)
        topic = self._topics.get(topic_text)
        if topic is None:
            try:
                topic = parse_topic(topic_text)
            except SparkplugError as exc:
                return self._dead("topic", topic_text, str(exc), payload)
            if len(self._topics) >= _TOPIC_CACHE_SIZE:
                self._topics.clear()
            self._topics[topic_text] = topic
        if isinstance(topic, StateTopic):
            return self._state(topic_text, payload)
        kind = topic.message_type
        if kind in (MessageType.NCMD, MessageType.DCMD):
            return Outcome()
        node = self.node(topic.group_id, topic.edge_node_id)
        try:
            types = node.datatypes() if kind.value.endswith("DATA") else None
            decoded = decompress_payload(decode_payload(payload, types), types)
        except PayloadDecodeError as exc:
            out = self._dead("malformed", topic_text, str(exc), payload)
            out.node = node
            out.rebirth = "malformed payload" if kind is not MessageType.NDEATH else None
            return out
        except SparkplugError as exc:
            out = self._dead("bad-value", topic_text, str(exc), payload)
            out.node = node
            return out
        if kind is MessageType.NBIRTH:
            return self._nbirth(node, topic, decoded, payload, topic_text)
        if kind is MessageType.DBIRTH:
            return self._dbirth(node, topic, decoded, payload, topic_text)
        if kind is MessageType.NDEATH:
            return self._ndeath(node, decoded)
        if kind is MessageType.DDEATH:
            node.check_seq(decoded.seq, self._clock())
            node.devices_online.discard(topic.device_id or "")
            return Outcome(node=node)
        return self._data(node, topic, decoded, payload, topic_text)

    # -- message kinds -------------------------------------------------------------------

    def _state(self, topic_text: str, payload: bytes) -> Outcome:
        if topic_text != self._state_topic:
            return Outcome()
        try:
            state = decode_state(payload)
        except SparkplugError as exc:
            return self._dead("malformed", topic_text, str(exc), payload)
        return Outcome(state=state.online)

    def _birth_metrics(
        self, device: str, metrics: list[Metric]
    ) -> tuple[dict[int, MetricInfo], list[MetricInfo]]:
        """The birth's metrics: those with an alias by alias, and those without one."""
        infos: dict[int, MetricInfo] = {}
        unaliased: list[MetricInfo] = []
        for m in metrics:
            if m.name is None or m.datatype is None:
                continue
            props = m.properties or {}
            unit = props.get(conventions.PROP_ENG_UNIT)
            hot = props.get(conventions.PROP_HOT)
            info = MetricInfo(
                device=device,
                name=m.name,
                datatype=m.datatype,
                unit=str(unit.value) if unit is not None and unit.value is not None else None,
                hot=bool(hot.value) if hot is not None else False,
            )
            if m.alias is None:
                unaliased.append(info)
            else:
                infos[m.alias] = info
        return infos, unaliased

    def _catalogue(
        self, node: NodeState, infos: dict[int, MetricInfo], unaliased: list[MetricInfo]
    ) -> list[CatalogueRow]:
        return [
            CatalogueRow(
                node.group_id, node.edge_node_id, i.device, i.name, i.datatype.name, i.unit, i.hot
            )
            for i in (*infos.values(), *unaliased)
        ]

    def _nbirth(
        self, node: NodeState, topic: Topic, p: Payload, raw: bytes, topic_text: str
    ) -> Outcome:
        bdseq = next((m.value for m in p.metrics if m.name == "bdSeq"), None)
        infos, unaliased = self._birth_metrics("", p.metrics)
        node.on_nbirth(bdseq if isinstance(bdseq, int) else None, p.seq, infos, unaliased)
        acked = oldest = queue_id = None
        for m in p.metrics:
            if m.name == conventions.ACKED_BATCH_METRIC and isinstance(m.value, int):
                acked = m.value
                node.acked_alias = m.alias
            elif m.name == conventions.OLDEST_BATCH_METRIC and isinstance(m.value, int):
                oldest = m.value
            elif m.name == conventions.QUEUE_ID_METRIC and isinstance(m.value, int):
                queue_id = m.value
        node.adopt_acknowledged(acked, oldest, queue_id)
        log.info(
            "NBIRTH %s/%s bdSeq %s, %d metrics",
            node.group_id,
            node.edge_node_id,
            bdseq,
            len(infos) + len(unaliased),
        )
        return Outcome(node=node, catalogue=self._catalogue(node, infos, unaliased))

    def _dbirth(
        self, node: NodeState, topic: Topic, p: Payload, raw: bytes, topic_text: str
    ) -> Outcome:
        if not node.born:
            out = self._dead("before-birth", topic_text, "DBIRTH before NBIRTH", raw)
            out.node, out.rebirth = node, "DBIRTH before NBIRTH"
            return out
        node.check_seq(p.seq, self._clock())
        device = topic.device_id or ""
        infos, unaliased = self._birth_metrics(device, p.metrics)
        node.on_dbirth(device, infos, unaliased)
        log.info(
            "DBIRTH %s/%s/%s, %d metrics",
            node.group_id,
            node.edge_node_id,
            device,
            len(infos) + len(unaliased),
        )
        return Outcome(node=node, catalogue=self._catalogue(node, infos, unaliased))

    def _ndeath(self, node: NodeState, p: Payload) -> Outcome:
        bdseq = next((m.value for m in p.metrics if m.name == "bdSeq"), None)
        if node.born and bdseq == node.bdseq:
            node.on_death()
            log.info("NDEATH %s/%s bdSeq %s", node.group_id, node.edge_node_id, bdseq)
        else:
            log.debug("stale NDEATH %s/%s (bdSeq %s)", node.group_id, node.edge_node_id, bdseq)
        return Outcome(node=node)

    def _data(
        self, node: NodeState, topic: Topic, p: Payload, raw: bytes, topic_text: str
    ) -> Outcome:
        if not node.born:
            out = self._dead("before-birth", topic_text, "data before NBIRTH", raw)
            out.node, out.rebirth = node, "data before birth"
            return out
        now = self._clock()
        out = Outcome(node=node, batches=[] if p.batch is None else [p.batch])
        if not node.check_seq(p.seq, now):
            log.debug("seq gap at %s (got %s)", topic_text, p.seq)
        device = topic.device_id or ""
        site, edge = node.group_id, node.edge_node_id
        bad: list[str] = []
        default_ts = p.timestamp
        for index, m in enumerate(p.metrics):
            info = node.aliases.get(m.alias) if m.alias is not None else None
            if info is None and m.name is not None:
                info = node.by_name.get((device, m.name))
            if info is None or info.device != device:
                bad.append(f"metric {index}: unknown alias {m.alias} / name {m.name!r}")
                out.rebirth = "unknown alias"
                continue
            if m.datatype is not None and m.datatype != info.datatype:
                bad.append(
                    f"metric {index} ({info.name}): datatype {m.datatype.name}, "
                    f"birth says {info.datatype.name}"
                )
                continue
            ts = m.timestamp if m.timestamp is not None else default_ts
            if ts is None or ts < MIN_TIMESTAMP_MS or ts > now + MAX_FUTURE_MS:
                bad.append(f"metric {index} ({info.name}): timestamp {ts} out of range")
                continue
            ns = 0
            if m.properties is not None and conventions.PROP_TS_NANOS in m.properties:
                prop = m.properties[conventions.PROP_TS_NANOS]
                if (
                    prop.type is not DataType.UInt32
                    or not isinstance(prop.value, int)
                    or not 0 <= prop.value < 1_000_000
                ):
                    bad.append(
                        f"metric {index} ({info.name}): {conventions.PROP_TS_NANOS} "
                        f"{prop.type.name} {prop.value!r} is not a UInt32 in 0..999999"
                    )
                    continue
                ns = prop.value
            if m.properties is not None and conventions.PROP_QUALITY in m.properties:
                quality = m.properties[conventions.PROP_QUALITY].value
                if quality != conventions.QUALITY_GOOD:
                    out.not_good += 1
                    continue
            if m.is_null:
                continue
            value = m.value
            if info.datatype in _NUMERIC:
                if not isinstance(value, int | float):
                    bad.append(
                        f"metric {index} ({info.name}): "
                        f"{type(value).__name__} for {info.datatype.name}"
                    )
                    continue
                out.numeric.append(
                    NumericRow(
                        ts,
                        site,
                        edge,
                        device,
                        info.name,
                        float(value),
                        info.hot,
                        m.is_historical,
                        ns,
                    )
                )
            else:
                text = (
                    value
                    if isinstance(value, str)
                    else _json.encode(msgspec.to_builtins(value, enc_hook=_json_default)).decode()
                )
                out.events.append(
                    EventRow(
                        ts,
                        site,
                        edge,
                        device,
                        info.name,
                        info.datatype.name,
                        text,
                        m.is_historical,
                        ns,
                    )
                )
        if self._quota is not None and not self._within_quota(node, out):
            if p.batch is None:
                rate, burst = self._quota
                return Outcome(
                    node=node,
                    dead_letters=[
                        DeadLetter(
                            "quota",
                            topic_text,
                            f"{len(out.numeric) + len(out.events)} metrics over the node's "
                            f"quota of {rate:g} metrics/s (burst {burst})",
                            raw,
                        )
                    ],
                )
            return Outcome(node=node, over_quota=len(out.numeric) + len(out.events))
        if bad:
            out.dead_letters.append(
                DeadLetter("bad-metric", topic_text, "; ".join(bad)[:2000], raw)
            )
            if out.rebirth is not None:
                # Unknown aliases: the birth we hold is not the node's. Do not acknowledge;
                # the node re-sends the batch after its rebirth and nothing is lost.
                out.batches = []
            # Otherwise the rest of the message is stored and its batches acknowledged; the
            # rejected metrics stay, with the raw payload, in the dead-letter table.
        return out

    def _within_quota(self, node: NodeState, out: Outcome) -> bool:
        # Live data only: historical data (replays, re-sends) is paced by the node itself
        # (its link share), and a batch held back here comes back as historical, so the
        # quota moves a runaway node's excess onto that paced path instead of refusing it.
        count = sum(1 for r in out.numeric if not r.historical)
        count += sum(1 for e in out.events if not e.historical)
        if not count:
            return True
        if node.quota is None:
            assert self._quota is not None
            rate, burst = self._quota
            node.quota = TokenBucket(rate, burst, lambda: self._clock() / 1000)
        return node.quota.take(count) == 0.0

    @staticmethod
    def _dead(reason: str, topic: str, detail: str, payload: bytes) -> Outcome:
        return Outcome(dead_letters=[DeadLetter(reason, topic, detail[:2000], payload)])
