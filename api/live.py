"""Live hot values: the API as a Sparkplug consumer of the broker, fanned out per site.

The API subscribes to births and data (``spBv1.0/+/{N,D}{BIRTH,DATA}/...``) like any
Sparkplug host application that is not the Primary Host: it never sends STATE or commands.
Births give each node's alias map and which metrics are hot; live (not historical) numeric
values of hot metrics go to the subscribers of their site as soon as the message arrives, so
a sample reaches a client one publish interval plus a broker hop after it was taken, without
polling QuestDB. A node whose birth this consumer missed (it started later) is learnt at its
next birth (a reconnect, or the Primary Host's rebirth request); until then its alias-only
data is counted as ``unknown_alias`` and skipped.

Each subscriber has a bounded queue; a slow client loses the oldest values (counted), it
never slows the feed. Streams held open are capped per API key and per tenant
(``max_streams_per_key``, ``max_streams_per_tenant``): one customer cannot hold an unbounded
number of queues and connections of a process all tenants share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator

import aiomqtt
import msgspec

from core import conventions
from core.sparkplug import (
    DataType,
    MessageType,
    Metric,
    SparkplugError,
    Topic,
    decode_payload,
    decompress_payload,
    is_compressed,
    parse_topic,
)

log = logging.getLogger(__name__)

SUBSCRIPTIONS = (
    "spBv1.0/+/NBIRTH/+",
    "spBv1.0/+/DBIRTH/+/+",
    "spBv1.0/+/NDATA/+",
    "spBv1.0/+/DDATA/+/+",
)


class LiveValue(msgspec.Struct, frozen=True):
    """One hot sample: ``ts`` is the edge's sample time (UTC ms since the epoch)."""

    site: str
    node: str
    device: str
    metric: str
    value: float
    ts: int


class StreamLimitError(Exception):
    """A key or tenant already holds as many live streams as it may."""


class _MetricInfo(msgspec.Struct, frozen=True):
    device: str
    name: str
    hot: bool


class _Node:
    def __init__(self) -> None:
        self.by_alias: dict[int, _MetricInfo] = {}
        self.by_name: dict[tuple[str, str], _MetricInfo] = {}
        self.datatypes: dict[int, DataType] = {}

    def learn(self, device: str, metrics: list[Metric]) -> None:
        for m in metrics:
            if m.name is None:
                continue
            prop = (m.properties or {}).get(conventions.PROP_HOT)
            info = _MetricInfo(device, m.name, bool(prop.value) if prop is not None else False)
            self.by_name[(device, m.name)] = info
            if m.alias is not None:
                self.by_alias[m.alias] = info
                if m.datatype is not None:
                    self.datatypes[m.alias] = m.datatype


class LiveFeed:
    """Consumes the broker and hands hot values to per-site subscribers."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "derrick-api-live",
        queue_size: int = 1000,
        max_streams_per_key: int = 4,
        max_streams_per_tenant: int = 20,
    ) -> None:
        self._host, self._port = host, port
        self._max_per_key, self._max_per_tenant = max_streams_per_key, max_streams_per_tenant
        self._streams: Counter[str] = Counter()  # "key:<id>", "tenant:<id>" -> open streams
        self._username, self._password = username, password
        self._client_id = client_id
        self._queue_size = queue_size
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._subscribers: dict[str, set[asyncio.Queue[LiveValue]]] = {}
        self.counters: Counter[str] = Counter()
        self.connected = asyncio.Event()

    def __repr__(self) -> str:
        return f"<LiveFeed {self._host}:{self._port} user={self._username!r}>"

    def refusal(self, key_id: str, tenant: str) -> str | None:
        """Why one more stream of this key (tenant) is refused, or None."""
        if self._streams[f"key:{key_id}"] >= self._max_per_key:
            return (
                f"this API key already holds {self._max_per_key} live stream(s), its limit; "
                "close one first"
            )
        if self._streams[f"tenant:{tenant}"] >= self._max_per_tenant:
            return (
                f"tenant {tenant} already holds {self._max_per_tenant} live stream(s) over all "
                "its keys, its limit; close one first"
            )
        return None

    @contextlib.asynccontextmanager
    async def subscribe(
        self, site: str, *, key_id: str = "", tenant: str = ""
    ) -> AsyncIterator[asyncio.Queue[LiveValue]]:
        """A queue of the site's hot values while the context lasts, counted against the
        key's and the tenant's stream limits (:class:`StreamLimitError` when one is full:
        the route checks :meth:`refusal` first, this closes the race between two requests)."""
        why = self.refusal(key_id, tenant)
        if why is not None:
            self.counters["streams_refused"] += 1
            raise StreamLimitError(why)
        owners = (f"key:{key_id}", f"tenant:{tenant}")
        self._streams.update(owners)
        queue: asyncio.Queue[LiveValue] = asyncio.Queue(self._queue_size)
        self._subscribers.setdefault(site, set()).add(queue)
        try:
            yield queue
        finally:
            self._subscribers[site].discard(queue)
            if not self._subscribers[site]:
                del self._subscribers[site]
            for owner in owners:
                self._streams[owner] -= 1
                if not self._streams[owner]:
                    del self._streams[owner]

    async def run(self) -> None:
        """Consume until cancelled; reconnect with backoff (1 s doubling to 30 s)."""
        backoff = 1.0
        while True:
            try:
                async with aiomqtt.Client(
                    self._host,
                    self._port,
                    identifier=self._client_id,
                    username=self._username,
                    password=self._password,
                    clean_session=True,
                ) as client:
                    for topic in SUBSCRIPTIONS:
                        await client.subscribe(topic, qos=0)
                    self.connected.set()
                    log.info("live feed connected to %s:%s", self._host, self._port)
                    backoff = 1.0
                    async for message in client.messages:
                        self.handle(str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                log.warning("live feed lost the broker (%s); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def handle(self, topic_text: str, raw: bytes) -> None:
        """One MQTT message (pure apart from the subscriber queues); never raises."""
        try:
            topic = parse_topic(topic_text)
            if not isinstance(topic, Topic):
                return
            key = (topic.group_id, topic.edge_node_id)
            kind = topic.message_type
            node_state = _Node() if kind is MessageType.NBIRTH else self._nodes.get(key)
            if node_state is None:
                self.counters["before_birth"] += 1
                return
            types = node_state.datatypes
            payload = decode_payload(raw, types)
            if is_compressed(payload):
                payload = decompress_payload(payload, types)
        except SparkplugError as exc:
            self.counters["bad_message"] += 1
            log.warning("live feed: bad message on %s: %s (%r)", topic_text, exc, raw[:64])
            return
        device = topic.device_id or ""
        if kind is MessageType.NBIRTH:
            self._nodes[key] = node_state
            node_state.learn("", payload.metrics)
            return
        if kind is MessageType.DBIRTH:
            node_state.learn(device, payload.metrics)
            return
        queues = self._subscribers.get(topic.group_id)
        if not queues:
            return
        for m in payload.metrics:
            if m.is_historical or m.is_null:
                continue
            info = (
                node_state.by_alias.get(m.alias)
                if m.name is None and m.alias is not None
                else node_state.by_name.get((device, m.name or ""))
            )
            if info is None:
                self.counters["unknown_alias"] += 1
                continue
            value = m.value
            if not info.hot or isinstance(value, str) or not isinstance(value, int | float):
                continue
            ts = m.timestamp if m.timestamp is not None else payload.timestamp or 0
            site, node = key
            live = LiveValue(site, node, device, info.name, float(value), ts)
            for q in queues:
                if q.full():
                    q.get_nowait()
                    self.counters["dropped_slow_client"] += 1
                q.put_nowait(live)
