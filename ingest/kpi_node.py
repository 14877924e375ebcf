"""The KPI edge node: KPIs computed in the ingest worker, published back as Sparkplug B.

Each ingest worker runs one cloud edge node, ``spBv1.0/<group>/…/kpi-<worker>`` (group
``derrick-cloud`` by default), on its own MQTT connection, so that any Sparkplug host (SCADA
tools, and Derrick's own Primary Host, which stores them) sees the KPIs like any other data:

- one device per appliance (device id = the appliance id), declared with a DBIRTH when the
  appliance first gets a KPI; metrics ``DrillingEfficiency``, ``ROP_MA5``, ``ROP_MA15``,
  ``WOB_MA5``, ``WOB_MA15`` (Double, ``engUnit`` and ``hot`` properties);
- an NDEATH Will with ``bdSeq`` per connection, NBIRTH (``bdSeq``, ``Node Control/Rebirth``)
  then a DBIRTH per known appliance with its current values, DDATA with aliases only, one
  ``seq`` across node and devices (:class:`core.sparkplug.session.EdgeNodeSession`);
- an NCMD ``Node Control/Rebirth`` = true makes it publish its births again.

The host calls :meth:`KpiEdgeNode.observe` with each message's live rows (on the event loop,
no I/O); the values wait in a bounded queue for the ``kpi-publish`` task, also while the node
is disconnected. KPIs are derived data: values beyond the queue are dropped and counted, a
message lost with a broken connection is not retried; the raw samples are stored regardless.

``bdSeq`` is not persisted (the worker keeps no local state): it starts from the wall clock's
seconds modulo 256, so that a restarted worker is unlikely to reuse the ``bdSeq`` of a stale
Will, and increments per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable

import aiomqtt

from core import conventions
from core.sparkplug import DataType, MessageType, SparkplugError, decode_payload
from core.sparkplug.session import EdgeNodeSession, MetricDef, Outgoing
from ingest.config import KpiSettings, MqttConfig
from ingest.kpi import KPI_UNITS, KpiEngine, KpiValue, Sample

log = logging.getLogger(__name__)

#: At most this many queued messages' KPI values go into one publishing round.
_DRAIN_MAX = 256


class KpiEdgeNode:
    """A Sparkplug edge node publishing one worker's KPIs."""

    def __init__(
        self,
        mqtt: MqttConfig,
        settings: KpiSettings,
        *,
        worker: str,
        password: str | None,
        clock: Callable[[], int],
    ) -> None:
        self._mqtt = mqtt
        self._password = password
        self._clock = clock
        self.engine = KpiEngine(freshness_ms=settings.freshness_ms)
        self.session = EdgeNodeSession(
            group_id=settings.group_id,
            edge_node_id=f"kpi-{worker}",
            metrics=[],
            clock=clock,
        )
        self._queue: asyncio.Queue[list[KpiValue]] = asyncio.Queue(maxsize=settings.queue_size)
        self._aliases: dict[tuple[str, str], int] = {}  # (appliance, KPI) -> alias
        self._current: dict[int, float] = {}  # alias -> last published value
        self._next_alias = 1
        self._bdseq = (clock() // 1000) % 256
        self._lock = asyncio.Lock()  # births and data never interleave (one seq stream)
        self.counters: Counter[str] = Counter()
        self.born = asyncio.Event()

    def __repr__(self) -> str:
        s = self.session
        return f"KpiEdgeNode({s.group_id}/{s.edge_node_id}, appliances={len(s.devices)})"

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def observe(self, rows: Iterable[Sample]) -> None:
        """Feed one message's rows (historical ones are ignored); queue the KPIs they yield."""
        values = self.engine.observe(rows)
        if not values:
            return
        try:
            self._queue.put_nowait(values)
        except asyncio.QueueFull:
            self.counters["kpi_dropped"] += len(values)

    # -- connection ----------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Connect (after ``ready`` is set, if given), birth, publish; reconnect with backoff."""
        if ready is not None:
            await ready.wait()
        delay = self._mqtt.reconnect_min_s
        while True:
            try:
                await self._serve()
            except* aiomqtt.MqttError as group:
                log.warning(
                    "KPI node %s: MQTT connection lost: %s; reconnecting in %.1fs",
                    self.session.edge_node_id,
                    group.exceptions[0],
                    delay,
                )
            self.born.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._mqtt.reconnect_max_s)

    async def _serve(self) -> None:
        session = self.session
        will = session.will(self._bdseq)
        self._bdseq = (self._bdseq + 1) % 256
        client = aiomqtt.Client(
            self._mqtt.host,
            self._mqtt.port,
            identifier=f"{session.group_id}-{session.edge_node_id}",
            username=self._mqtt.username,
            password=self._password,
            clean_session=True,
            keepalive=self._mqtt.keepalive_s,
            will=aiomqtt.Will(str(will.topic), will.payload, qos=will.qos, retain=False),
            protocol=aiomqtt.ProtocolVersion.V311,
        )
        async with client:
            await client.subscribe(str(session.topic(MessageType.NCMD)), qos=1)
            await self._birth(client)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._commands(client), name="kpi-commands")
                tg.create_task(self._publish_loop(client), name="kpi-publish")

    async def _send(self, client: aiomqtt.Client, out: Outgoing) -> None:
        await client.publish(str(out.topic), out.payload, qos=out.qos, retain=out.retain)

    async def _birth(self, client: aiomqtt.Client) -> None:
        async with self._lock:
            session = self.session
            await self._send(client, session.nbirth({}))
            for appliance in session.devices:
                await self._send(client, session.dbirth(appliance, self._current))
            self.born.set()
        log.info(
            "KPI node %s/%s born: bdSeq %s, %d appliances",
            session.group_id,
            session.edge_node_id,
            session.bdseq,
            len(session.devices),
        )

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            payload = bytes(message.payload)
            try:
                command = decode_payload(payload)
            except SparkplugError as exc:
                log.warning("KPI node: ignored command on %s: %s (%r)", topic, exc, payload[:64])
                continue
            for metric in command.metrics:
                if metric.name == conventions.REBIRTH_METRIC and metric.value is True:
                    log.info("KPI node %s: rebirth requested", self.session.edge_node_id)
                    await self._birth(client)
                else:
                    log.warning("KPI node: ignored NCMD metric %r", metric.name)

    # -- publishing ----------------------------------------------------------------------

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            values = await self._queue.get()
            for _ in range(_DRAIN_MAX):
                try:
                    values.extend(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            await self.publish(client, values)

    async def publish(self, client: aiomqtt.Client, values: list[KpiValue]) -> None:
        """DBIRTH for appliances new to this node, then one DDATA per appliance."""
        by_appliance: dict[str, list[KpiValue]] = {}
        for v in values:
            by_appliance.setdefault(v.node, []).append(v)
        async with self._lock:
            for appliance, kpis in by_appliance.items():
                if appliance not in self.session.devices:
                    self._declare(appliance)
                    await self._send(client, self.session.dbirth(appliance, self._current))
                samples = [(self._aliases[(appliance, v.kpi)], v.ts_ms, v.value, 0) for v in kpis]
                await self._send(client, self.session.data(appliance, samples, historical=False))
                for alias, _, value, _ in samples:
                    self._current[alias] = value
                self.counters["kpi_published"] += len(samples)

    def _declare(self, appliance: str) -> None:
        defs = []
        for kpi, unit in KPI_UNITS.items():
            alias = self._next_alias
            self._next_alias += 1
            self._aliases[(appliance, kpi)] = alias
            defs.append(MetricDef(alias, appliance, kpi, DataType.Double, unit, hot=True))
        self.session.add_device(appliance, defs)
        log.info("KPI node %s: appliance %s declared", self.session.edge_node_id, appliance)
