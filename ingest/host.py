"""The Sparkplug Primary Host: STATE, node sessions, storage and end-to-end acknowledgement.

Tasks (one ``TaskGroup``): ``mqtt`` (connection loop: STATE Will and birth, subscriptions),
``follow-ups`` (the MQTT replies a message calls for: rebirth requests, re-asserting STATE)
and ``flusher`` (every ``flush_interval_ms``: hand the current row set to
the writer thread, then acknowledge the batches QuestDB accepted, and ask nodes whose seq gap
outlived the reorder timeout to rebirth).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg

from core import conventions
from core.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Payload,
    StatePayload,
    StateTopic,
    Topic,
    edge_node_filter,
    encode_payload,
    encode_state,
)
from core.tables import TableSet
from ingest.audit import archive_from_config
from ingest.config import IngestConfig
from ingest.kpi_node import KpiEdgeNode
from ingest.mqtt import HostConnection, MqttError
from ingest.nodes import NodeState, RebirthLimiter
from ingest.pipeline import MessageProcessor, Outcome
from ingest.writer import QuestDBWriter, RowSet, WriterError

log = logging.getLogger(__name__)
T = TypeVar("T")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _batch_key(node: NodeState) -> tuple[str, str, int]:
    """Where a message's batches are counted: the node and its current batch numbering."""
    return (node.group_id, node.edge_node_id, node.generation)


def create_tables(pg_dsn: str, tables: TableSet, *, attempts: int = 5) -> None:
    """Create Derrick's QuestDB tables if missing (DDL over PGWire).

    Workers sharing a table prefix start together (systemd starts ``derrick-ingest@1..N`` at
    once): QuestDB can refuse a ``CREATE ... IF NOT EXISTS`` that races another worker's
    (seen: "query references multiple tables" for a materialized view whose base table was
    being created). Every statement is idempotent, so the whole list is tried again.
    """
    for attempt in range(1, attempts + 1):
        try:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                for sql in tables.create_statements():
                    conn.execute(sql.encode())
            return
        except psycopg.DatabaseError as exc:
            if attempt == attempts:
                raise
            log.warning("creating the tables failed (attempt %d of %d), again: %s",
                        attempt, attempts, exc)  # fmt: skip
            time.sleep(0.2 * attempt)


class PrimaryHost:
    """One ingest worker acting as (a share of) the Sparkplug Primary Host."""

    def __init__(
        self,
        cfg: IngestConfig,
        *,
        ilp_conf: str,
        pg_dsn: str | None,
        password: str | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self._cfg = cfg
        self._settings = cfg.ingest
        self._pg_dsn = pg_dsn
        self._password = password
        self._clock = clock
        self._tables = TableSet(cfg.questdb.table_prefix)
        self._writer = QuestDBWriter(ilp_conf, self._tables)
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="questdb")
        self.processor = MessageProcessor(
            primary_host_id=self._settings.primary_host_id,
            clock=clock,
            max_payload_bytes=self._settings.max_payload_bytes,
            node_quota=(
                (self._settings.node_quota_metrics_per_s, self._settings.node_quota_burst)
                if self._settings.node_quota_metrics_per_s > 0
                else None
            ),
        )
        self._state_topic = StateTopic(self._settings.primary_host_id)
        self.audit = archive_from_config(cfg)  # None unless [audit] directory is set
        self._client: HostConnection | None = None
        self._current: RowSet | None = None
        self._failed: list[RowSet] = []
        #: Nodes whose frontier moved past the last ack sent to them.
        self._ack_due: set[tuple[str, str]] = set()
        self._rebirths = RebirthLimiter(
            cooldown_ms=self._settings.rebirth_cooldown_s * 1000,
            rate_per_s=self._settings.rebirth_rate_per_s,
        )
        self.counters: Counter[str] = Counter()
        self.online = asyncio.Event()
        #: Replies messages call for (rebirth requests, STATE re-assertion), sent by the
        #: ``follow-ups`` task: message handling itself never awaits.
        self._followups: deque[tuple[NodeState | None, str]] = deque()
        self._followup_ready = asyncio.Event()
        self._stopping = False
        self._failures_in_row = 0
        self._retry_delay = 0.0
        self._retry_at = 0.0
        self._warned_at = 0.0
        self.kpi = (
            KpiEdgeNode(
                cfg.mqtt, cfg.kpi, worker=self._settings.worker, password=password, clock=clock
            )
            if cfg.kpi.enabled
            else None
        )

    def __repr__(self) -> str:
        return (
            f"PrimaryHost(id={self._settings.primary_host_id!r}, worker={self._settings.worker!r})"
        )

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, fn, *args)

    async def run(self) -> None:
        if self._cfg.questdb.create_tables and self._pg_dsn:
            await asyncio.to_thread(create_tables, self._pg_dsn, self._tables)
        await self._in_writer(self._writer.open)
        self._current = await self._in_writer(self._writer.new_row_set)
        if self.audit is not None:
            await self.audit.open()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._mqtt_loop(), name="mqtt")
                tg.create_task(self._followup_loop(), name="follow-ups")
                tg.create_task(self._flush_loop(), name="flusher")
                if self.kpi is not None:
                    tg.create_task(self.kpi.run(ready=self.online), name="kpi-node")
        finally:
            await self._in_writer(self._writer.close)
            self._writer_thread.shutdown(wait=True)
            if self.audit is not None:
                await self.audit.close()

    # -- MQTT ----------------------------------------------------------------------------

    async def _mqtt_loop(self) -> None:
        delay = self._cfg.mqtt.reconnect_min_s
        while True:
            try:
                await self._serve()
            except MqttError as exc:
                if self._stopping:  # our own graceful disconnect: no reconnecting
                    return
                log.warning("MQTT connection lost: %s; reconnecting in %.1fs", exc, delay)
            self.online.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._cfg.mqtt.reconnect_max_s)

    async def _serve(self) -> None:
        connect_ts = self._clock()
        state = str(self._state_topic)
        client = HostConnection(
            host=self._cfg.mqtt.host,
            port=self._cfg.mqtt.port,
            client_id=f"{self._settings.primary_host_id}-{self._settings.worker}",
            username=self._cfg.mqtt.username,
            password=self._password,
            keepalive_s=self._cfg.mqtt.keepalive_s,
            will=(state, encode_state(StatePayload(online=False, timestamp=connect_ts))),
            on_message=self._dispatch,
        )
        await client.connect()
        self._client = client
        try:
            await client.subscribe(state, qos=1)
            share = self._settings.shared_group
            for group in self._settings.groups:
                topic = f"spBv1.0/{group}/#"
                await client.subscribe(f"$share/{share}/{topic}" if share else topic, qos=0)
            if self.kpi is not None and "+" not in self._settings.groups:
                kpi = self.kpi.session
                await client.subscribe(edge_node_filter(kpi.group_id, kpi.edge_node_id), qos=0)
            client.publish(
                state,
                encode_state(StatePayload(online=True, timestamp=connect_ts)),
                qos=1,
                retain=True,
            )
            self.online.set()
            log.info("primary host %s online", self._settings.primary_host_id)
            await client.wait_lost()
            raise MqttError(f"connection to {self._cfg.mqtt.host}:{self._cfg.mqtt.port} lost")
        finally:
            self._client = None
            await client.close()

    async def stop_gracefully(self) -> None:
        """Publish STATE offline (QoS 1, retained), then disconnect: the DISCONNECT follows
        the STATE on the same connection, and the socket is closed once both are written."""
        self._stopping = True
        client = self._client
        if client is not None:
            payload = encode_state(StatePayload(online=False, timestamp=self._clock()))
            with contextlib.suppress(MqttError):
                client.publish(str(self._state_topic), payload, qos=1, retain=True)
            await client.close()

    def _dispatch(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            self.on_message(topic, payload, retained=retained)
        except Exception:
            # A bug, not bad input (bad input becomes a dead letter): never let it break
            # the connection, never swallow it silently.
            self.counters["handler_errors"] += 1
            log.exception("message on %s not handled", topic)

    def on_message(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        """Handle one message: decode, node state, rows into the current row set.
        Synchronous and free of I/O; the replies it calls for go to the follow-up task."""
        self.counters["messages"] += 1
        if self.audit is not None:
            self.audit.append(topic, payload)
        outcome = self.processor.process(topic, payload)
        # A retained offline STATE delivered on subscribe predates our own birth (which
        # replaces it); a live one means someone declared us offline: re-assert at once.
        if outcome.state is False and not retained:
            self._follow_up(None, "reassert")
        for dead in outcome.dead_letters:
            self.counters[f"dead_letters.{dead.reason}"] += 1
            log.warning(
                "dead letter (%s) on %s: %s; payload %r",
                dead.reason,
                topic,
                dead.detail[:200],
                dead.payload[:64],
            )
        if outcome.over_quota and outcome.node is not None:
            self._over_quota(outcome.node, outcome.over_quota)
        self._store(outcome)
        if self.kpi is not None and outcome.numeric:
            self.kpi.observe(outcome.numeric)
        if outcome.rebirth and outcome.node is not None:
            self._follow_up(outcome.node, outcome.rebirth)

    def _over_quota(self, node: NodeState, metrics: int) -> None:
        self.counters["quota_deferred_messages"] += 1
        self.counters["quota_deferred_metrics"] += metrics
        now = self._clock()
        if node.quota_warned_ms is None or now - node.quota_warned_ms >= 30_000:
            node.quota_warned_ms = now
            log.warning(
                "node %s/%s is over its quota of %g metrics/s: a batch of %d metrics deferred "
                "(not acknowledged: the node sends it again); counted in "
                "derrick_ingest_quota_deferred_metrics_total",
                node.group_id,
                node.edge_node_id,
                self._settings.node_quota_metrics_per_s,
                metrics,
            )

    def _follow_up(self, node: NodeState | None, reason: str) -> None:
        self._followups.append((node, reason))
        self._followup_ready.set()

    async def _followup_loop(self) -> None:
        while True:
            await self._followup_ready.wait()
            self._followup_ready.clear()
            while self._followups:
                node, reason = self._followups.popleft()
                try:
                    if node is None:
                        await self._reassert_online()
                    else:
                        await self._request_rebirth(node, reason)
                except MqttError as exc:
                    log.info("follow-up (%s) not sent: %s", reason, exc)

    def _store(self, outcome: Outcome) -> None:
        rows = self._current
        assert rows is not None
        pending = self.pending_rows()
        for dead in outcome.dead_letters:
            rows.add_dead_letter(dead)
        if outcome.catalogue:
            rows.add_catalogue(outcome.catalogue)
        if not (outcome.numeric or outcome.events):
            if outcome.batches and outcome.node is not None:
                rows.batches[_batch_key(outcome.node)].extend(outcome.batches)
            return
        if pending >= self._settings.max_pending_rows:
            # QuestDB is not keeping up: shed, and do not acknowledge. The edge keeps these
            # samples and sends them again; memory here stays bounded.
            self.counters["shed_messages"] += 1
            return
        if outcome.not_good:
            self.counters["not_good_quality"] += outcome.not_good
        if outcome.numeric:
            rows.add_numeric(outcome.numeric)
            self.counters["metrics"] += len(outcome.numeric)
        if outcome.events:
            rows.add_events(outcome.events)
            self.counters["metrics"] += len(outcome.events)
        if outcome.batches and outcome.node is not None:
            rows.batches[_batch_key(outcome.node)].extend(outcome.batches)

    async def _reassert_online(self) -> None:
        client = self._client
        if client is None or self._stopping:
            return
        log.warning("saw own STATE offline: re-asserting online")
        payload = encode_state(StatePayload(online=True, timestamp=self._clock()))
        client.publish(str(self._state_topic), payload, qos=1, retain=True)

    async def _request_rebirth(self, node: NodeState, reason: str) -> None:
        now = self._clock()
        client = self._client
        if client is None:
            return
        if not self._rebirths.allow(node, now):
            self.counters["rebirth_throttled"] = self._rebirths.throttled
            return
        self.counters["rebirth_requests"] += 1
        log.info("asking %s/%s to rebirth: %s", node.group_id, node.edge_node_id, reason)
        payload = Payload(
            timestamp=now,
            metrics=[
                Metric(
                    name=conventions.REBIRTH_METRIC,
                    timestamp=now,
                    datatype=DataType.Boolean,
                    value=True,
                )
            ],
        )
        topic = Topic(MessageType.NCMD, node.group_id, node.edge_node_id)
        client.publish(str(topic), encode_payload(payload), qos=0, retain=False)

    # -- flushing and acknowledging ------------------------------------------------------

    async def _flush_loop(self) -> None:
        interval = self._settings.flush_interval_ms / 1000
        # Gaps are a matter of seconds: walking every node on each flush would cost more
        # than the check is worth with thousands of nodes.
        gap_every = min(1.0, self._settings.reorder_timeout_ms / 2000)
        gaps_checked = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            await self.flush()
            await self._send_acks()  # those held back by ack_interval_ms
            if time.monotonic() - gaps_checked >= gap_every:
                gaps_checked = time.monotonic()
                await self._check_gaps()

    def pending_rows(self) -> int:
        """Rows held in memory, not yet accepted by QuestDB (bounded by ``max_pending_rows``
        plus one message's worth: a message is shed when the bound is reached)."""
        current = self._current
        return (current.rows if current is not None else 0) + sum(r.rows for r in self._failed)

    async def flush(self) -> bool:
        """Flush everything pending; acknowledge what QuestDB accepted. True if all went."""
        current = self._current
        assert current is not None
        if current.rows or current.batches:
            self._failed.append(current)
            self._current = await self._in_writer(self._writer.new_row_set)
        if self.audit is not None and not await self.audit.durable():
            return False  # every message archived (fsynced) before anything is acknowledged
        now = time.monotonic()
        if self._failed and now < self._retry_at:
            return False  # QuestDB failed recently: back off, keep the rows, acknowledge nothing
        while self._failed:
            rows = self._failed[0]
            try:
                await self._in_writer(self._writer.flush, rows)
            except WriterError as exc:
                self.counters["flush_failures"] += 1
                self._failures_in_row += 1
                self._retry_delay = min(max(self._retry_delay * 2, 0.2), 5.0)
                self._retry_at = time.monotonic() + self._retry_delay
                if self._failures_in_row == 1 or now - self._warned_at >= 30:
                    self._warned_at = now
                    log.warning(
                        "flush failed (%d in a row), not acknowledging, retrying with backoff; "
                        "%d rows held: %s",
                        self._failures_in_row,
                        sum(r.rows for r in self._failed),
                        exc,
                    )
                return False
            if self._failures_in_row:
                log.info("QuestDB accepts rows again after %d failures", self._failures_in_row)
                self._failures_in_row = 0
                self._retry_delay = 0.0
            self._failed.pop(0)
            if rows.rows:
                log.debug("committed %d rows", rows.rows)
            await self._acknowledge(rows)
        return True

    async def _acknowledge(self, rows: RowSet) -> None:
        """Advance the frontiers of the nodes whose batches QuestDB accepted; send the acks
        that are due."""
        for (group, edge, generation), batches in rows.batches.items():
            node = self.processor.nodes.get((group, edge))
            if node is None:
                continue
            node.commit(generation, batches)
            if node.frontier.value > node.acked_sent:
                self._ack_due.add((group, edge))
        await self._send_acks()

    async def _send_acks(self) -> None:
        """At most one ack per node per ``ack_interval_ms``: acks are cumulative, so a later
        one covers every batch before it, and fewer NCMDs leave the worker more time for
        data (one publish per message costs about as much as storing the message)."""
        client = self._client
        if client is None or not self._ack_due:
            return
        now = self._clock()
        interval = self._settings.ack_interval_ms
        for key in list(self._ack_due):
            node = self.processor.nodes.get(key)
            if node is None or node.frontier.value <= node.acked_sent:
                self._ack_due.discard(key)
                continue
            if node.last_ack_ms is not None and now - node.last_ack_ms < interval:
                continue
            group, edge = key
            value = node.frontier.value
            metric = (
                Metric(alias=node.acked_alias, timestamp=now, value=value)
                if node.acked_alias is not None
                else Metric(
                    name=conventions.ACKED_BATCH_METRIC,
                    timestamp=now,
                    datatype=DataType.UInt64,
                    value=value,
                )
            )
            payload = Payload(timestamp=now, metrics=[metric])
            topic = Topic(MessageType.NCMD, group, edge)
            try:
                alias = node.acked_alias
                data = encode_payload(payload, None if alias is None else {alias: DataType.UInt64})
                client.publish(str(topic), data, qos=0, retain=False)
            except MqttError as exc:
                log.info("acknowledgement to %s/%s not sent: %s", group, edge, exc)
                continue
            node.acked_sent = value
            node.last_ack_ms = now
            self._ack_due.discard(key)
            self.counters["acks"] += 1

    async def _check_gaps(self) -> None:
        now = self._clock()
        timeout = self._settings.reorder_timeout_ms
        for node in list(self.processor.nodes.values()):
            if node.born and node.gap_expired(now, timeout):
                node.missing.clear()
                await self._request_rebirth(node, "seq gap outlived the reorder timeout")
