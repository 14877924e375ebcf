"""The edge agent: samples sensors, commits every reading durably, publishes Sparkplug B.

Tasks (one ``TaskGroup``, each named):

- ``sampler:<device>``: reads a polled device's sensors at the current mode's rate into
  memory; for a subscribed device (OPC UA, CSV replay) runs the source, which pushes its
  readings (source timestamps, quality) and follows the mode's sampling interval;
- ``publisher``: every ``publish.interval_ms`` commits what was sampled (one SQLite
  transaction, one fsync), publishes the new batches live, then re-sends unacknowledged
  batches as historical data within the replay share of the link;
- ``mqtt``: the connection loop: walks the server list with backoff, registers the NDEATH
  Will, waits for the Primary Host's STATE, sends births, handles commands (rebirth,
  acknowledgement, alarm mode).

All SQLite work runs on one dedicated thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiomqtt

from core import conventions, tags
from core.sparkplug import (
    DataType,
    MessageType,
    SparkplugError,
    StateTopic,
    Topic,
    decode_payload,
    decode_state,
)
from core.sparkplug.session import EdgeNodeSession, MetricDef, Outgoing
from edge.config import (
    AgentConfig,
    CsvDevice,
    DeviceConfig,
    MqttServer,
    OpcUaDevice,
    SimulatorDevice,
)
from edge.queue import Batch, PendingSample, QueueError, StoreAndForwardQueue
from edge.sampling import Deadband, SamplingPolicy
from edge.sources.base import (
    QUALITY_GOOD,
    PolledSource,
    Reading,
    SimulatorSource,
    SourceUnavailable,
    SubscribedSource,
)
from edge.status import AgentStatus, write_status

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
T = TypeVar("T")

_NODE_METRICS: tuple[tuple[str, DataType, bool], ...] = (
    (conventions.ACKED_BATCH_METRIC, DataType.UInt64, True),
    (conventions.OLDEST_BATCH_METRIC, DataType.UInt64, False),
    (conventions.ALARM_COMMAND_METRIC, DataType.Boolean, True),
    (conventions.QUEUE_DEPTH_METRIC, DataType.UInt64, False),
    (conventions.QUEUE_OLDEST_AGE_METRIC, DataType.UInt64, False),
    (conventions.REPLAY_BACKLOG_METRIC, DataType.UInt64, False),
    (conventions.EVICTIONS_METRIC, DataType.UInt64, False),
    (conventions.SAMPLING_MODE_METRIC, DataType.String, False),
    (conventions.AGENT_VERSION_METRIC, DataType.String, False),
    (conventions.QUEUE_ID_METRIC, DataType.UInt64, False),
)


#: Estimated bytes of one historical metric on the wire (alias, timestamp, double, flag).
_REPLAY_BYTES_PER_SAMPLE = 20


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _HostOffline(Exception):
    """The Primary Host declared itself offline: leave this server."""


class EdgeAgent:
    """One edge node: its sources, its durable queue and its Sparkplug session."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        password: str | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self._cfg = cfg
        self._password = password
        self._clock = clock
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-queue")
        self._queue = StoreAndForwardQueue(
            cfg.queue.path, max_bytes=cfg.queue.max_bytes, fsync=cfg.queue.fsync
        )
        self._policy = SamplingPolicy(cfg)
        #: Readings not yet committed, per device; "" holds the node's own metrics (NDATA).
        self._pending: dict[str, list[PendingSample]] = {d.id: [] for d in cfg.devices}
        self._pending[""] = []
        self._historical_devices = {
            d.id for d in cfg.devices if isinstance(d, CsvDevice) and d.historical
        }
        #: Values a subscribed source delivered that were not good (quality != 192).
        self.not_good_readings = 0
        self._current: dict[int, object] = {}
        self._client: aiomqtt.Client | None = None
        self._live = False
        self._pub_lock = asyncio.Lock()
        self._mode_changed = asyncio.Event()
        self._host_ts: dict[int, int] = {}
        self._replay_tokens = 0.0
        self._session: EdgeNodeSession | None = None
        self._node_published: dict[int, object] = {}
        self._devices_online: set[str] = {""}  # the node itself is always there
        self._ack_to_apply = 0
        self._ack_applied = 0
        self._last_ack_ms: int | None = None
        self._connected_since_ms: int | None = None
        self.published_samples = 0
        #: The last status written (``edge.metrics`` reads it at scrape time).
        self.status: AgentStatus | None = None

    def __repr__(self) -> str:
        return f"EdgeAgent(node={self._cfg.node.appliance!r})"

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_thread, lambda: fn(*args, **kwargs))

    # -- start ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        await self._db(self._queue.open)
        try:
            self._session = await self._db(self._build_session)
            log.info(
                "edge node %s/%s starting: %d devices, %d sensors, queue %s",
                self._cfg.node.site,
                self._cfg.node.appliance,
                len(self._cfg.devices),
                self._cfg.sensor_count(),
                self._cfg.queue.path,
            )
            async with asyncio.TaskGroup() as tg:
                for device in self._cfg.devices:
                    runner = (
                        self._subscribe_loop(device)
                        if isinstance(device, OpcUaDevice | CsvDevice)
                        else self._sample_loop(device.id)
                    )
                    tg.create_task(runner, name=f"sampler:{device.id}")
                tg.create_task(self._publish_loop(), name="publisher")
                tg.create_task(self._replay_loop(), name="replayer")
                tg.create_task(self._mqtt_loop(), name="mqtt")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._final_commit())
            await self._db(self._queue.close)
            self._db_thread.shutdown(wait=True)

    def _build_session(self) -> EdgeNodeSession:
        defs: list[MetricDef] = []
        for name, datatype, writable in _NODE_METRICS:
            alias = self._queue.register_metric("", name, int(datatype))
            defs.append(MetricDef(alias, "", name, datatype, writable=writable))
        for device in self._cfg.devices:
            for sensor in device.sensors:
                alias = self._queue.register_metric(device.id, sensor.tag, int(DataType.Double))
                hot = sensor.hot if sensor.hot is not None else tags.TAGS[sensor.tag].hot
                defs.append(
                    MetricDef(alias, device.id, sensor.tag, DataType.Double, sensor.unit, hot)
                )
        return EdgeNodeSession(
            group_id=self._cfg.node.site,
            edge_node_id=self._cfg.node.appliance,
            metrics=defs,
            clock=self._clock,
            datatype_in_data=self._cfg.publish.datatype_in_data,
        )

    @property
    def session(self) -> EdgeNodeSession:
        if self._session is None:
            raise RuntimeError("agent not started")
        return self._session

    # -- sampling ------------------------------------------------------------------------

    def subscribed_source(self, device: OpcUaDevice | CsvDevice) -> SubscribedSource:
        # Imported here: asyncua takes seconds of CPU to import, which agents without an OPC
        # UA device (most of the fleet) should not pay at every start.
        if isinstance(device, OpcUaDevice):
            from edge.sources.opcua import OpcUaSource  # noqa: PLC0415

            return OpcUaSource(device, publishing_interval_ms=self._cfg.publish.interval_ms)
        from edge.sources.csv_replay import CsvReplaySource  # noqa: PLC0415

        return CsvReplaySource(device)

    async def _subscribe_loop(self, device: OpcUaDevice | CsvDevice) -> None:
        source = self.subscribed_source(device)
        await source.run(_DeviceSink(self, device))
        log.info("device %s: %r finished", device.id, source)

    def _deliver(
        self, device: DeviceConfig, deadband: Deadband, readings: Sequence[Reading]
    ) -> None:
        """Readings a subscribed source pushed: alarm rules, deadband, pending samples."""
        pending = self._pending[device.id]
        good = {
            r.tag: r.value for r in readings if r.quality == QUALITY_GOOD and r.value is not None
        }
        if good and self._policy.observe(good, readings[-1].ts_ms / 1000):
            self._mode_changed.set()
        for r in readings:
            metric = self.session.metric(device.id, r.tag)
            if r.quality != QUALITY_GOOD:
                self.not_good_readings += 1
            elif r.value is not None and not deadband.keep(r.tag, r.value, r.ts_ms / 1000):
                continue
            hot = bool(metric.hot)
            pending.append(PendingSample(metric.alias, r.ts_ms, r.value, hot, quality=r.quality))

    async def _sample_loop(self, device_id: str) -> None:
        device = next(d for d in self._cfg.devices if d.id == device_id)
        assert isinstance(device, SimulatorDevice)
        source: PolledSource = SimulatorSource(device.seed, device.fault_file)
        sensor_tags = [s.tag for s in device.sensors]
        hot = {
            s.tag: (s.hot if s.hot is not None else tags.TAGS[s.tag].hot) for s in device.sensors
        }
        aliases = {s.tag: self.session.metric(device_id, s.tag).alias for s in device.sensors}
        deadband = Deadband({s.tag: s.deadband for s in device.sensors}, self._cfg.max_silence_s)
        pending = self._pending[device_id]
        last_ms = 0
        while True:
            now_ms = self._clock()
            if now_ms <= last_ms:
                # Woken within the millisecond of the last read (a mode change sets the event
                # every sampler waits on): a reading's time is its identity in QuestDB (dedup
                # keys), so a second read at the same time would replace the first there.
                await asyncio.sleep((last_ms + 1 - now_ms) / 1000)
                now_ms = max(self._clock(), last_ms + 1)
            last_ms = now_ms
            now = now_ms / 1000
            try:
                values = source.read(sensor_tags, now)
            except SourceUnavailable as exc:
                if device_id in self._devices_online:
                    log.warning("device %s unavailable: %s", device_id, exc)
                    await self._device_state(device_id, online=False)
                await asyncio.sleep(min(5.0, self._policy.interval_s(now)))
                continue
            if device_id not in self._devices_online:
                await self._device_state(device_id, online=True)
            if self._policy.observe(values, now):
                self._mode_changed.set()
            for tag, value in values.items():
                if deadband.keep(tag, value, now):
                    pending.append(PendingSample(aliases[tag], now_ms, value, hot[tag]))
            interval = self._policy.interval_s(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mode_changed.wait(), interval)
                self._mode_changed.clear()

    async def _device_state(self, device_id: str, *, online: bool) -> None:
        """A device went away (DDEATH) or came back (DBIRTH with its current values)."""
        async with self._pub_lock:
            if online:
                self._devices_online.add(device_id)
            else:
                self._devices_online.discard(device_id)
            client = self._client
            if client is None or not self._live:
                return
            if online:
                # Data committed while it was away follows its DBIRTH: commit it first.
                out = self.session.dbirth(device_id, self._current)
                log.info("device %s back: DBIRTH", device_id)
            else:
                out = self.session.ddeath(device_id)
                log.info("device %s gone: DDEATH", device_id)
            try:
                await client.publish(str(out.topic), out.payload, qos=0, retain=False)
            except aiomqtt.MqttError as exc:
                log.info("device state not published: %s", exc)

    # -- committing and publishing -------------------------------------------------------

    def _take_pending(self) -> dict[str, list[PendingSample]]:
        taken = {}
        for device, samples in self._pending.items():
            if samples:
                taken[device] = samples[:]
                samples.clear()
        return taken

    async def _commit(self) -> list[Batch]:
        taken = self._take_pending()
        if not taken:
            return []
        live = {d: s for d, s in taken.items() if d not in self._historical_devices}
        replayed = {d: s for d, s in taken.items() if d in self._historical_devices}
        batches: list[Batch] = []
        limit = self._cfg.publish.max_metrics_per_message
        for part, historical in ((live, False), (replayed, True)):
            # A batch travels as one message: at most ``limit`` samples per batch.
            start = 0
            while chunk := {d: v[start : start + limit] for d, v in part.items() if v[start:]}:
                batches += await self._db(
                    self._queue.commit, chunk, now_ms=self._clock(), historical=historical
                )
                start += limit
        for samples in taken.values():
            for s in samples:
                self._current[s.alias] = s.value
        return batches

    async def _final_commit(self) -> None:
        await self._commit()

    async def _publish_loop(self) -> None:
        """Every interval, on an absolute schedule: commit, then publish the new batches live."""
        loop = asyncio.get_running_loop()
        interval = self._cfg.publish.interval_ms / 1000
        status_every = max(1, round(self._cfg.publish.status_interval_ms / 1000 / interval))
        tick = 0
        next_tick = loop.time()
        while True:
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            if loop.time() - next_tick > interval:
                next_tick = loop.time()  # fell behind (a long commit): do not burst to catch up
            tick += 1
            if tick % status_every == 0:
                await self._status()
            new = await self._commit()
            if self._live:
                now = self._clock()
                live = [b for b in new if now - b.created_ms <= self._cfg.publish.live_window_ms]
                await self._send_batches(live, historical=False)
            await self._apply_ack()

    async def _apply_ack(self) -> None:
        """Drop what the Primary Host acknowledged since the last interval (one transaction)."""
        upto = self._ack_to_apply
        if upto <= self._ack_applied:
            return
        self._ack_applied = upto
        try:
            removed = await self._db(self._queue.ack, upto)
        except QueueError as exc:
            log.warning("refused acknowledgement %s: %s", upto, exc)
            return
        self._last_ack_ms = self._clock()
        log.debug("acknowledged through batch %d: %d samples", upto, removed)

    async def _replay_loop(self) -> None:
        """Re-send unacknowledged batches (historical) within the link's replay share.

        Its own task, so that loading and compressing large historical batches never delays
        live data; only batches older than the live window are taken (newer ones are the live
        publisher's), oldest first.
        """
        pub = self._cfg.publish
        interval = pub.interval_ms / 1000
        budget = pub.link_bytes_per_s * pub.replay_share * interval
        while True:
            await asyncio.sleep(interval)
            # A token bucket that never holds more than one interval's share: replay never
            # bursts ahead of live data; what a large batch overspends is paid back first.
            self._replay_tokens = min(self._replay_tokens + budget, budget)
            if not self._live or self._replay_tokens <= 0:
                continue
            now = self._clock()
            due = await self._db(
                self._queue.due,
                now_ms=now,
                resend_after_ms=pub.ack_timeout_ms,
                max_samples=max(1, int(self._replay_tokens / _REPLAY_BYTES_PER_SAMPLE)),
                devices=frozenset(self._devices_online),
                created_before_ms=now - pub.live_window_ms,
            )
            if due:
                self._replay_tokens -= await self._send_batches(due, historical=True)

    async def _send_batches(self, batches: list[Batch], *, historical: bool) -> int:
        """Publish batches, one data message each, oldest first; returns bytes sent.

        A batch larger than the message limit is split; every part carries the batch number
        (the host acknowledges it once, when all its rows are committed).
        """
        if not batches:
            return 0
        compress_hist = self._cfg.publish.compress_historical
        compress_live = self._cfg.publish.compress_live
        sent_bytes = 0
        sent_ids: list[int] = []
        for batch in batches:
            if batch.device not in self._devices_online:
                continue  # after its DDEATH: sent again once the device is back
            samples = [(s.alias, s.ts_ms, s.value, s.ns, s.quality) for s in batch.samples]
            compress = compress_hist if historical or batch.historical else compress_live
            # One batch at a time under the lock: live data can slip in between replayed ones.
            async with self._pub_lock:
                client = self._client
                if client is None or not self._live:
                    break
                try:
                    # One batch, one message: the host acknowledges a batch number once it
                    # stored that message, so a batch must never be split over messages.
                    out = self.session.data(
                        batch.device,
                        samples,
                        historical=historical or batch.historical,
                        batch=batch.id,
                        compress=compress,
                    )
                    await client.publish(str(out.topic), out.payload, qos=0, retain=False)
                    sent_bytes += len(out.payload)
                except aiomqtt.MqttError as exc:
                    log.info("publish failed, batches stay queued: %s", exc)
                    break
            sent_ids.append(batch.id)
            self.published_samples += len(samples)
        if sent_ids:
            await self._db(self._queue.mark_sent, sent_ids, now_ms=self._clock())
        return sent_bytes

    # -- status ----------------------------------------------------------------------------

    async def _status(self) -> None:
        """Queue changed node metrics (sent as NDATA) and write the status file for ``health``."""
        stats = await self._db(self._queue.stats)
        now = self._clock()
        values = self._node_values(stats)
        changed = [a for a, v in values.items() if self._node_published.get(a) != v]
        if changed and self._live:
            # Node metrics travel like readings: queued, batched, acknowledged (NDATA).
            pending = self._pending[""]
            pending.extend(PendingSample(a, now, values[a]) for a in changed)
            self._node_published.update(values)
        status = AgentStatus(
            pid=os.getpid(),
            appliance=self._cfg.node.appliance,
            version=AGENT_VERSION,
            updated_ms=now,
            live=self._live,
            connected_since_ms=self._connected_since_ms,
            last_ack_ms=self._last_ack_ms,
            mode=self._policy.mode(now / 1000),
            queue=stats,
        )
        self.status = status
        await self._db(write_status, self._cfg.queue.path, status)

    # -- MQTT session --------------------------------------------------------------------

    async def _mqtt_loop(self) -> None:
        servers = self._cfg.mqtt.servers
        index = 0
        delay = self._cfg.mqtt.reconnect_min_s
        while True:
            server = servers[index]
            try:
                await self._connect_and_serve(index, server)
                delay = self._cfg.mqtt.reconnect_min_s
            except _HostOffline:
                log.info("primary host offline: left %s:%d", server.host, server.port)
                index = (index + 1) % len(servers)
                delay = self._cfg.mqtt.reconnect_min_s
            except aiomqtt.MqttError as exc:
                log.info("MQTT %s:%d unavailable: %s", server.host, server.port, exc)
                index = (index + 1) % len(servers)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._cfg.mqtt.reconnect_max_s)

    async def _connect_and_serve(self, index: int, server: MqttServer) -> None:
        session = self.session
        bdseq = await self._db(self._queue.next_bdseq)
        will = session.will(bdseq)
        ncmd = session.topic(MessageType.NCMD)
        state_topic = StateTopic(self._cfg.mqtt.primary_host_id)
        client = aiomqtt.Client(
            server.host,
            server.port,
            identifier=self._cfg.node.appliance,
            username=self._cfg.mqtt.username,
            password=self._password,
            clean_session=True,
            keepalive=self._cfg.mqtt.keepalive_s,
            timeout=self._cfg.mqtt.connect_timeout_s,
            will=aiomqtt.Will(str(will.topic), will.payload, qos=1, retain=False),
            protocol=aiomqtt.ProtocolVersion.V311,
        )
        async with client:
            self._client = client
            try:
                await client.subscribe(str(ncmd), qos=1)
                for device in session.devices:
                    await client.subscribe(str(session.topic(MessageType.DCMD, device)), qos=1)
                if self._cfg.mqtt.wait_for_primary_host:
                    await client.subscribe(str(state_topic), qos=1)
                else:
                    await self._birth()
                async for message in client.messages:
                    await self._on_message(index, str(message.topic), bytes(message.payload))
            except _HostOffline:
                await self._leave(client)
                raise
            finally:
                self._live = False
                self._client = None
                self._connected_since_ms = None

    async def _leave(self, client: aiomqtt.Client) -> None:
        death = self.session.ndeath()
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(str(death.topic), death.payload, qos=1, retain=False)

    async def stop_gracefully(self) -> None:
        """Publish NDEATH before an intentional disconnect (Sparkplug 3.0, MQTT 3.1.1).

        Under the publish lock, with live publishing stopped first: a data message sent
        after the NDEATH would reach the host for a dead node (it stays queued here, but the
        host rightly refuses it as data before a birth)."""
        async with self._pub_lock:
            self._live = False
            client = self._client
            if client is not None and self._session is not None and self._session.bdseq is not None:
                await self._leave(client)

    async def _birth(self) -> None:
        client = self._client
        if client is None:
            return
        async with self._pub_lock:
            self._live = False
            stats = await self._db(self._queue.stats)
            values = self._node_values(stats)
            births: list[Outgoing] = [self.session.nbirth(values)]
            births.extend(
                self.session.dbirth(d, self._current)
                for d in self.session.devices
                if d in self._devices_online
            )
            for out in births:
                await client.publish(str(out.topic), out.payload, qos=0, retain=False)
            await self._db(self._queue.mark_all_unsent)
            self._replay_tokens = 0.0
            self._node_published = dict(values)
            self._connected_since_ms = self._clock()
            self._live = True
        log.info(
            "born: bdSeq %s, %d unacknowledged batches to replay",
            self.session.bdseq,
            stats.batches,
        )

    def _node_values(self, stats: Any) -> dict[int, object]:
        s = self.session
        now = self._clock()
        by_name = {
            conventions.ACKED_BATCH_METRIC: stats.acked_batch,
            conventions.OLDEST_BATCH_METRIC: stats.oldest_batch or 0,
            conventions.ALARM_COMMAND_METRIC: self._policy.commanded_alarm,
            conventions.QUEUE_DEPTH_METRIC: stats.samples,
            conventions.QUEUE_OLDEST_AGE_METRIC: (
                0 if stats.oldest_created_ms is None else max(0, now - stats.oldest_created_ms)
            ),
            conventions.REPLAY_BACKLOG_METRIC: stats.batches,
            conventions.EVICTIONS_METRIC: stats.evicted_samples,
            conventions.SAMPLING_MODE_METRIC: self._policy.mode(now / 1000),
            conventions.AGENT_VERSION_METRIC: AGENT_VERSION,
            conventions.QUEUE_ID_METRIC: stats.queue_id,
        }
        return {s.metric("", name).alias: value for name, value in by_name.items()}

    async def _on_message(self, index: int, topic: str, payload: bytes) -> None:
        state_topic = str(StateTopic(self._cfg.mqtt.primary_host_id))
        if topic == state_topic:
            await self._on_state(index, payload)
            return
        try:
            parsed = Topic.parse(topic)
            datatypes = {m.alias: m.datatype for m in self.session.node_metrics()}
            command = decode_payload(payload, datatypes)
        except SparkplugError as exc:
            log.warning("ignored command on %s: %s (payload %r)", topic, exc, payload[:64])
            return
        if parsed.message_type is not MessageType.NCMD:
            log.info("ignored %s: no writable device metrics", topic)
            return
        for metric in command.metrics:
            name = metric.name
            if name is None and metric.alias is not None:
                name = self.session.definition(metric.alias).name
            if name == conventions.REBIRTH_METRIC and metric.value is True:
                log.info("rebirth requested")
                await self._birth()
            elif name == conventions.ACKED_BATCH_METRIC and isinstance(metric.value, int):
                # Applied by the publisher once per interval: deleting acknowledged batches
                # is one transaction however many acknowledgements arrived meanwhile.
                self._ack_to_apply = max(self._ack_to_apply, metric.value)
            elif name == conventions.ALARM_COMMAND_METRIC and isinstance(metric.value, bool):
                self._policy.commanded_alarm = metric.value
                self._mode_changed.set()
                log.info("alarm mode %s by command", "on" if metric.value else "off")
            else:
                log.warning("ignored NCMD metric %r = %r", name, metric.value)

    async def _on_state(self, index: int, payload: bytes) -> None:
        try:
            state = decode_state(payload)
        except SparkplugError as exc:
            log.warning("ignored malformed STATE: %s (payload %r)", exc, payload[:64])
            return
        last = self._host_ts.get(index, -1)
        if state.timestamp < last:
            log.info("ignored stale STATE (timestamp %d < %d)", state.timestamp, last)
            return
        self._host_ts[index] = state.timestamp
        if state.online:
            if not self._live:
                await self._birth()
        elif self._live:
            raise _HostOffline


class _DeviceSink:
    """Where a subscribed source of one device delivers: the agent's pending samples."""

    def __init__(self, agent: EdgeAgent, device: OpcUaDevice | CsvDevice) -> None:
        self._agent = agent
        self._device = device
        self._deadband = Deadband(
            {s.tag: s.deadband for s in device.sensors}, agent._cfg.max_silence_s
        )

    def deliver(self, readings: Sequence[Reading]) -> None:
        if readings:
            self._agent._deliver(self._device, self._deadband, readings)

    async def online(self, up: bool) -> None:
        if up != (self._device.id in self._agent._devices_online):
            if not up:
                log.warning("device %s unavailable", self._device.id)
            await self._agent._device_state(self._device.id, online=up)

    def interval_s(self) -> float:
        return self._agent._policy.interval_s(self._agent._clock() / 1000)
