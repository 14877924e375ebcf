"""The alert evaluator: rules from PostgreSQL, samples from the broker, alerts into
PostgreSQL.

It is a Sparkplug consumer like any SCADA host (it is not the Primary Host): it subscribes to
births, deaths and data, resolves aliases (:class:`core.livestream.LiveSampleReader`) and
feeds every live numeric value to the :class:`core.alerting.AlertEngine` as the message
arrives; a transition is written at once (:class:`alerts.store.AlertStore`). The latency of
an alert is therefore one broker hop plus one PostgreSQL transaction after the edge
published the sample.

Restart without loss or duplicates:

- the engine is seeded with the alerts open in PostgreSQL (it neither opens them again nor
  forgets to close them); opening and closing are idempotent in SQL;
- it subscribes first, then replays from QuestDB the live samples stored since its
  checkpoint, at most ``catchup_max_s``, at start and after every reconnection to the
  broker (what was published while its own link was down never reaches it live); the
  live messages that overlap the replay are dropped by the engine (per rule and scope, a
  sample must be newer than the last one judged). The checkpoint is the newest sample
  time handled, saved every tick, and moved in the same transaction as every alert change
  to that change's sample time: a replay starts after the last transition written, so it
  never applies one twice;
- the no-data clock of every appliance of a site with no-data rules starts from the newest
  sample QuestDB holds for it (looked up once per site, within ``catchup_max_s``): a node
  that fell silent before the evaluator started still opens its no-data alerts;
- a node whose birth it missed (alias-only data) is asked for a rebirth (NCMD
  ``Node Control/Rebirth``, at most once per ``rebirth_interval_s`` per node).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiomqtt
import psycopg
from psycopg_pool import AsyncConnectionPool

from alerts.config import AlertsConfig
from alerts.store import AlertStore
from core import conventions
from core.alerting import AlertEngine, NoData, Sample, Transition
from core.ids import IdError, site_of
from core.livestream import SUBSCRIPTIONS, LiveSampleReader
from core.queries import last_seen_of_site, live_samples_of_site
from core.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Payload,
    SparkplugError,
    Topic,
    encode_payload,
)
from core.tables import TableSet

log = logging.getLogger(__name__)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class AlertEvaluator:
    def __init__(
        self,
        cfg: AlertsConfig,
        store: AlertStore,
        *,
        questdb: AsyncConnectionPool[Any] | None,
        mqtt_password: str | None = None,
        clock: Callable[[], int] = _wall_ms,
    ) -> None:
        self._cfg = cfg
        self._store = store
        self._questdb = questdb
        self._password = mqtt_password
        self._clock = clock
        self._tables = TableSet(cfg.questdb.table_prefix)
        self.engine = AlertEngine()
        self.reader = LiveSampleReader(cfg.questdb.kpi_group)
        self._newest = 0  # newest sample time handled (ms)
        self._saved = 0
        self._rebirth_asked: dict[tuple[str, str], float] = {}
        self._last_seen_known: set[str] = set()  # sites whose no-data clocks were seeded
        self.ready = asyncio.Event()  # subscribed and caught up
        # One writer at a time: a reload's snapshot of the open alerts must not be overtaken
        # by a transition the engine applies while the snapshot is read (it would revive a
        # closed scope, or close an open one, in the engine's memory).
        self._lock = asyncio.Lock()
        self.applied = 0
        self.counters: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<AlertEvaluator {self._cfg.evaluator.name}>"

    async def reload(self) -> None:
        async with self._lock:
            self.engine.sync(await self._store.rules(), await self._store.open_scopes())
        await self._seed_last_seen()

    async def _seed_last_seen(self) -> None:
        """Start the no-data clocks of the sites that gained no-data rules from QuestDB's
        newest sample per appliance; a failed lookup is retried at the next reload."""
        sites = {r.site for r in self.engine.rules if isinstance(r.condition, NoData)}
        todo = sorted(sites - self._last_seen_known)
        if not todo or self._questdb is None:
            return
        start = self._clock() - self._cfg.evaluator.catchup_max_s * 1000
        day = _naive(start).replace(hour=0, minute=0, second=0, microsecond=0)
        sql = last_seen_of_site(self._tables)
        try:
            async with self._questdb.connection() as conn:
                for site in todo:
                    cur = await conn.execute(sql, {"site": site, "since": day})
                    found = {n: _ms(ts) for n, ts in await cur.fetchall() if ts is not None}
                    for node, ms in found.items():
                        if ms >= start:
                            self.engine.seen(site, node, ms)
                    self._last_seen_known.add(site)
                    log.info("no-data clocks of %s from QuestDB: %s", site, found or "no data")
        except psycopg.Error as exc:
            log.warning("alerts: last samples of %s not read from QuestDB: %s", todo, exc)

    async def _apply(self, transitions: list[Transition]) -> None:
        for t in transitions:
            if await self._store.apply(t, self._cfg.evaluator.name) is not None:
                self.applied += 1

    async def observe(self, sample: Sample) -> None:
        async with self._lock:
            await self._apply(self.engine.observe(sample))
            # only once its transitions are stored: the checkpoint (saved by the housekeeping
            # task) must never pass a transition a crash would then lose
            self._newest = max(self._newest, sample.ts)

    # -- catch-up from QuestDB -----------------------------------------------------------

    async def catch_up(self) -> int:
        """Replay stored live samples since the checkpoint; the number replayed."""
        since = await self._store.checkpoint(self._cfg.evaluator.name)
        if since is None or self._questdb is None:
            return 0
        now = self._clock()
        start = max(since, now - self._cfg.evaluator.catchup_max_s * 1000)
        sites = sorted({r.site for r in self.engine.rules})
        samples: list[Sample] = []
        sql = live_samples_of_site(self._tables)
        params = {"start": _naive(start), "end": _naive(now)}
        kpi = self._cfg.questdb.kpi_group
        async with self._questdb.connection() as conn:
            for site in [*sites, kpi]:
                cur = await conn.execute(sql, {**params, "site": site})
                for node, device, metric, value, ts in await cur.fetchall():
                    ms = _ms(ts)
                    if site != kpi:
                        samples.append(Sample(site, node, device, metric, float(value), ms))
                        continue
                    try:
                        owner = site_of(device)
                    except IdError:
                        continue
                    if owner in sites:
                        samples.append(Sample(owner, device, "kpi", metric, float(value), ms))
        samples.sort(key=lambda s: s.ts)
        for sample in samples:
            await self.observe(sample)
        log.info("caught up: %d stored samples since the checkpoint replayed", len(samples))
        return len(samples)

    async def _catch_up_or_go_live(self) -> None:
        """A catch-up that cannot read QuestDB is skipped, not fatal: live alerting matters
        most when something is failing, and an evaluator exiting for QuestDB's sake would
        leave every site without alerts until QuestDB is back. What was published while the
        evaluator was away is then not judged (it stays stored)."""
        try:
            await self.catch_up()
        except psycopg.Error as exc:
            self.counters["catch_up_failures"] += 1
            log.error(
                "alerts: catch-up from QuestDB failed (%s): evaluating the live stream only; "
                "samples published while the evaluator was away are not judged",
                exc,
            )

    # -- the live stream -----------------------------------------------------------------

    async def _handle(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        try:
            decoded = self.reader.handle(topic, payload)
        except SparkplugError as exc:
            log.warning("alerts: bad message on %s: %s (%r)", topic, exc, payload[:64])
            return
        for sample in decoded.samples:
            await self.observe(sample)
        if decoded.dead is not None:
            site, node = decoded.dead
            async with self._lock:
                await self._apply(self.engine.node_dead(site, node, decoded.ts or self._clock()))
        if decoded.unknown_node is not None and self._cfg.evaluator.request_rebirth:
            await self._ask_rebirth(client, decoded.unknown_node)

    async def _ask_rebirth(self, client: aiomqtt.Client, topic: Topic) -> None:
        key = (topic.group_id, topic.edge_node_id)
        now = time.monotonic()
        if now - self._rebirth_asked.get(key, -1e9) < self._cfg.evaluator.rebirth_interval_s:
            return
        self._rebirth_asked[key] = now
        ncmd = Topic(MessageType.NCMD, topic.group_id, topic.edge_node_id)
        body = Payload(
            timestamp=self._clock(),
            metrics=[
                Metric(name=conventions.REBIRTH_METRIC, datatype=DataType.Boolean, value=True)
            ],
        )
        await client.publish(str(ncmd), encode_payload(body), qos=0)
        log.info("asked %s/%s for a rebirth (data before its birth)", *key)

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            await self._handle(client, str(message.topic), bytes(message.payload))

    async def _housekeeping(self) -> None:
        cfg = self._cfg.evaluator
        next_reload = time.monotonic() + cfg.reload_interval_ms / 1000
        while True:
            await asyncio.sleep(cfg.tick_interval_ms / 1000)
            async with self._lock:
                await self._apply(self.engine.tick(self._clock()))
            if self._newest > self._saved:
                await self._store.save_checkpoint(cfg.name, self._newest)
                self._saved = self._newest
            if time.monotonic() >= next_reload:
                await self.reload()
                next_reload = time.monotonic() + cfg.reload_interval_ms / 1000

    async def run(self) -> None:
        """Evaluate until cancelled; reconnect to the broker with backoff (1 s to 30 s)."""
        mqtt = self._cfg.mqtt
        await self.reload()
        backoff = 1.0
        while True:
            try:
                async with aiomqtt.Client(
                    mqtt.host,
                    mqtt.port,
                    identifier=mqtt.client_id,
                    username=mqtt.username,
                    password=self._password,
                    clean_session=True,
                ) as client:
                    for topic in SUBSCRIPTIONS:
                        await client.subscribe(topic, qos=0)
                    log.info("alert evaluator subscribed at %s:%s", mqtt.host, mqtt.port)
                    # at start and after every reconnection: what was published while
                    # the evaluator was away is in QuestDB (stored by ingest), never live
                    await self._catch_up_or_go_live()
                    self.ready.set()
                    backoff = 1.0
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._consume(client), name="alerts-consume")
                        tasks.create_task(self._housekeeping(), name="alerts-housekeeping")
            except* aiomqtt.MqttError as group:
                self.ready.clear()
                log.warning(
                    "alert evaluator lost the broker (%s); retrying in %.0f s",
                    group.exceptions[0],
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


def _ms(ts: dt.datetime) -> int:
    """A naive UTC datetime from QuestDB's PGWire as epoch milliseconds."""
    return int(ts.replace(tzinfo=dt.UTC).timestamp() * 1000)


def _naive(ms: int) -> dt.datetime:
    """A UTC instant as QuestDB's PGWire wants it bound (naive, UTC)."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(tzinfo=None)
