"""A passive Sparkplug subscriber for tests and benchmarks: what went over the wire.

It subscribes to ``spBv1.0/#`` on a broker (paho, on its own network thread), keeps every
node's and device's birth certificate, and turns each data message into rows
``(ts_ms, site, node, device, metric, value)`` with our codec, the way any Sparkplug host
would. Tests compare these rows with what QuestDB stored.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core import conventions
from core.sparkplug import (
    DataType,
    MessageType,
    Topic,
    decode_payload,
    decompress_payload,
    parse_topic,
)

Row = tuple[int, str, str, str, str, float]


class SparkplugObserver:
    """Collects the data rows published on a broker."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        topic_filter: str = "spBv1.0/#",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"observer-{time.monotonic_ns()}"
        )
        self._client.on_connect = self._on_connect
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_message = self._on_message
        self._host, self._port, self._filter = host, port, topic_filter
        self._births: dict[tuple[str, str], dict[int, tuple[str, str, DataType]]] = {}
        self.rows: set[Row] = set()
        #: The Derrick batch number each row arrived in (the last one, if re-sent).
        self.row_batch: dict[Row, int | None] = {}
        #: Every metric a birth declared: (group, node, device, name) -> (alias, datatype).
        self.declared: dict[tuple[str, str, str, str], tuple[int | None, DataType | None]] = {}
        self.counts: Counter[str] = Counter()
        #: NBIRTHs seen per (group, node), DBIRTHs per (group, node, device).
        self.node_births: Counter[tuple[str, str]] = Counter()
        self.device_births: Counter[tuple[str, str, str]] = Counter()
        #: When the last DBIRTH of each (group, node, device) arrived (epoch ms).
        self.device_birth_ms: dict[tuple[str, str, str], int] = {}
        self.errors: list[str] = []
        #: Highest Derrick batch number seen per (group, node).
        self.max_batch: dict[tuple[str, str], int] = {}
        #: (receive time, metric timestamp) in epoch ms for live (non-historical) data metrics.
        self.live_delays: list[tuple[int, int]] = []
        #: (receive time, payload timestamp = when the edge published) of live data messages.
        self.live_transport: list[tuple[int, int]] = []
        #: Receive times (epoch ms) of data messages per (group, node), and of NDEATHs.
        self.data_times: dict[tuple[str, str], list[int]] = {}
        self.death_times: dict[tuple[str, str], list[int]] = {}
        #: Data metrics per (group, node, device) and ``is_historical`` flag.
        self.flags: Counter[tuple[str, str, str, bool]] = Counter()
        #: Data metrics whose ``Quality`` property is not good (192), null or not:
        #: (ts_ms, group, node, device, metric) -> quality.
        self.not_good: dict[tuple[int | None, str, str, str, str], int] = {}

    def __enter__(self) -> SparkplugObserver:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("observer could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(self._filter, qos=0)
        self._connected.set()

    def snapshot(self) -> set[Row]:
        with self._lock:
            return set(self.rows)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handle(msg.topic, bytes(msg.payload))
        except Exception as exc:  # recorded and asserted on by the test
            self.errors.append(f"{msg.topic}: {exc!r}")

    def _handle(self, topic_text: str, payload: bytes) -> None:
        topic = parse_topic(topic_text)
        if not isinstance(topic, Topic):
            return
        key = (topic.group_id, topic.edge_node_id)
        kind = topic.message_type
        with self._lock:
            self.counts[kind.value] += 1
            aliases = self._births.setdefault(key, {})
            if kind in (MessageType.NBIRTH, MessageType.DBIRTH):
                if kind is MessageType.NBIRTH:
                    aliases.clear()
                    self.node_births[key] += 1
                device = topic.device_id or ""
                if kind is MessageType.DBIRTH:
                    self.device_births[(*key, device)] += 1
                    self.device_birth_ms[(*key, device)] = time.time_ns() // 1_000_000
                for m in decode_payload(payload).metrics:
                    if m.name is not None:
                        self.declared[(*key, device, m.name)] = (m.alias, m.datatype)
                    if m.alias is not None and m.name is not None and m.datatype is not None:
                        aliases[m.alias] = (device, m.name, m.datatype)
                return
            received = time.time_ns() // 1_000_000
            if kind is MessageType.NDEATH:
                self.death_times.setdefault(key, []).append(received)
            if kind not in (MessageType.NDATA, MessageType.DDATA):
                return
            self.data_times.setdefault(key, []).append(received)
            types = {a: dt for a, (_, _, dt) in aliases.items()}
            decoded = decompress_payload(decode_payload(payload, types), types)
            if decoded.batch is not None:
                self.max_batch[key] = max(self.max_batch.get(key, 0), decoded.batch)
            if decoded.metrics and not decoded.metrics[0].is_historical and decoded.timestamp:
                self.live_transport.append((received, decoded.timestamp))
            for m in decoded.metrics:
                if m.alias not in aliases:
                    self.errors.append(f"{topic_text}: unknown alias {m.alias}")
                    continue
                device, name, _ = aliases[m.alias]
                self.flags[(*key, device, m.is_historical)] += 1
                prop = (m.properties or {}).get(conventions.PROP_QUALITY)
                quality = prop.value if prop is not None else None
                if isinstance(quality, int) and quality != conventions.QUALITY_GOOD:
                    self.not_good[(m.timestamp, *key, device, name)] = quality
                if not m.is_historical and m.timestamp is not None and device:
                    self.live_delays.append((received, m.timestamp))
                if m.is_null or not isinstance(m.value, int | float) or m.timestamp is None:
                    continue
                row = (
                    m.timestamp,
                    topic.group_id,
                    topic.edge_node_id,
                    device,
                    name,
                    float(m.value),
                )
                self.rows.add(row)
                self.row_batch[row] = decoded.batch
