"""An OPC UA server as a source: a subscription with one monitored item (data change) per
sensor, its sampling interval following the agent's normal/alarm mode.

- Values arrive with the server's ``SourceTimestamp`` (the server's, then our clock, if
  absent) and its ``StatusCode``, mapped to Sparkplug quality: Good 192, Uncertain 500
  (stale), Bad 0 (the value, if any, is kept but the ingest does not store it as a reading).
- The monitored items ask the server to sample every ``interval_s()`` of the agent's current
  mode; a mode change modifies every item in one ModifyMonitoredItems request. Each item's
  queue holds what the server samples within one publishing interval (discard oldest).
- Every sample is reported (data change trigger StatusValueTimestamp), not only changes: a
  constant value keeps arriving at the mode's rate, as from a local channel.
- The publishing interval is the agent's commit interval (``publish.interval_ms``).
- The server's state (``Server/ServerStatus/State``) is read every ``watchdog_s``: a state
  other than Running, a failed read or a lost subscription means the server is gone: the
  agent publishes DDEATH; we reconnect with exponential backoff (``reconnect_min_s`` ..
  ``reconnect_max_s``), subscribe again and the agent publishes DBIRTH.

What OPC UA cannot promise across a server restart: notifications queued in the server's
session but not yet published when it stopped are lost with it (a new server has no
session to republish from), and value changes while it is down were never sampled. After a
reconnect the first notification of each item is the server's current value (possibly one
we already have: QuestDB deduplicates it by source timestamp).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError

from edge.config import OpcUaDevice
from edge.sources.base import (
    QUALITY_BAD,
    QUALITY_GOOD,
    QUALITY_STALE,
    Reading,
    ReadingSink,
    SourceUnavailable,
)

log = logging.getLogger(__name__)


class _ServerDropNoise(logging.Filter):
    """asyncua's own reports of what this module handles (a server going away, a revised
    session timeout) become DEBUG: an operator sees our one WARNING ("device ... unavailable")
    and INFO lines, not an ERROR with a traceback for an expected drop."""

    EXPECTED = (
        "Publish iteration crashed",
        "close_session was called but connection is closed",
        "close_secure_channel was called but connection is closed",
        "Requested session timeout to be",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(self.EXPECTED):
            if not log.isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info = record.exc_text = None
        return True


_NOISE = _ServerDropNoise()
for _name in ("asyncua.client.client", "asyncua.client.ua_client.UaClient",
              "asyncua.client.ua_session.UaSession"):  # fmt: skip
    logging.getLogger(_name).addFilter(_NOISE)

#: Fastest sampling interval we ask a server for.
MIN_SAMPLING_MS = 10.0


def quality_of(status: ua.StatusCode | None) -> int:
    """Sparkplug quality of an OPC UA status code."""
    if status is None or status.is_good():
        return QUALITY_GOOD
    if status.is_uncertain():
        return QUALITY_STALE
    return QUALITY_BAD


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(when: datetime | None) -> int | None:
    """Epoch milliseconds (floor, exact integer arithmetic) of an OPC UA DateTime."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MS


def reading_of(tag: str, dv: ua.DataValue, now_ms: int) -> Reading:
    """A Reading from a DataValue: source timestamp, quality, a float value or None."""
    quality = quality_of(dv.StatusCode)
    ts = epoch_ms(dv.SourceTimestamp) or epoch_ms(dv.ServerTimestamp) or now_ms
    raw = dv.Value.Value if dv.Value is not None else None
    value: float | None
    if isinstance(raw, bool | int | float) and math.isfinite(float(raw)):
        value = float(raw)
    else:
        value = None
        quality = QUALITY_BAD if quality == QUALITY_GOOD else quality
    return Reading(tag, value, ts, quality)


class _Handler:
    """asyncua subscription callbacks, on the event loop."""

    def __init__(self, tags: dict[ua.NodeId, str], sink: ReadingSink) -> None:
        self._tags = tags
        self._sink = sink
        self.lost = asyncio.Event()
        self.received = 0

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        tag = self._tags.get(node.nodeid)
        if tag is None:
            return
        self.received += 1
        reading = reading_of(tag, data.monitored_item.Value, time.time_ns() // 1_000_000)
        self._sink.deliver((reading,))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        log.info("OPC UA subscription status %s", status.Status)
        if not status.Status.is_good():
            self.lost.set()


async def opcua_client(device: OpcUaDevice) -> Client:
    """A not yet connected client for ``device``: endpoint, timeouts, application URI and,
    for ``SignAndEncrypt``, Basic256Sha256 with the configured certificates."""
    client = Client(
        device.endpoint, timeout=device.request_timeout_s, watchdog_intervall=device.watchdog_s
    )
    client.application_uri = device.application_uri
    client.name = "Derrick edge agent"
    if device.security == "SignAndEncrypt":
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(device.certificate),
            private_key=str(device.private_key),
            server_certificate=str(device.server_certificate),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    return client


class OpcUaSource:
    """One OPC UA server: see the module docstring."""

    def __init__(self, device: OpcUaDevice, *, publishing_interval_ms: int) -> None:
        self._device = device
        self._publishing_ms = float(publishing_interval_ms)
        self._node_ids = {s.tag: ua.NodeId.from_string(s.node_id or "") for s in device.sensors}
        #: (client handle, server handle) of each monitored item of the current session.
        self._items: list[tuple[int, int]] = []
        self.sampling_ms: float | None = None
        self.connects = 0

    def __repr__(self) -> str:
        return f"OpcUaSource({self._device.endpoint!r})"

    async def run(self, sink: ReadingSink) -> None:
        delay = self._device.reconnect_min_s
        while True:
            up = False

            async def came_up() -> None:
                nonlocal up
                up = True
                await sink.online(True)

            try:
                await self._session(sink, came_up)
            except (SourceUnavailable, OSError, TimeoutError, UaError) as exc:
                log.info("OPC UA %s unavailable: %s", self._device.endpoint, exc)
            if up:
                delay = self._device.reconnect_min_s
                await sink.online(False)
            await asyncio.sleep(delay)
            if not up:
                delay = min(delay * 2, self._device.reconnect_max_s)

    async def _session(self, sink: ReadingSink, came_up: Callable[[], Awaitable[None]]) -> None:
        dev = self._device
        client = await opcua_client(dev)
        tags = {nid: tag for tag, nid in self._node_ids.items()}
        handler = _Handler(tags, sink)
        await client.connect(auto_reconnect=False)
        try:
            state = await client.nodes.server_state.read_value()
            if state != ua.ServerState.Running:
                raise SourceUnavailable(f"server state {state!r}")
            sub = await client.create_subscription(self._publishing_ms, handler)
            sampling = self._sampling_ms(sink)
            nodes: list[Node] = [client.get_node(nid) for nid in self._node_ids.values()]
            # Every sample, not only changed values (trigger StatusValueTimestamp): the agent's
            # rates and deadband decide what is kept, as for local channels.
            # subscribe_data_change takes no filter: the items are built here and created
            # with asyncua's public low-level create_monitored_items (our client handles).
            requests = [
                self._item_request(client_handle, node, sampling)
                for client_handle, node in enumerate(nodes, start=1)
            ]
            results = await sub.create_monitored_items(requests)
            self._items = [
                (client_handle, result)
                for client_handle, result in enumerate(results, start=1)
                if isinstance(result, int)
            ]
            for tag, result in zip(self._node_ids, results, strict=True):
                if not isinstance(result, int):
                    log.warning("OPC UA %s: cannot monitor %s: %s", dev.endpoint, tag, result)
            self.sampling_ms = sampling
            self.connects += 1
            log.info(
                "OPC UA %s: %d monitored items, sampling %.0f ms, publishing %.0f ms",
                dev.endpoint,
                len(self._items),
                sampling,
                self._publishing_ms,
            )
            await came_up()
            await self._watch(client, sub, handler, sink)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(min(dev.request_timeout_s, 5.0)):
                    await client.disconnect()

    async def _watch(
        self, client: Client, sub: Subscription, handler: _Handler, sink: ReadingSink
    ) -> None:
        """Follow the agent's mode and the server's state until the server goes away."""
        dev = self._device
        next_check = time.monotonic() + dev.watchdog_s
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the task's
            # cancellation when the inner wait finishes at the same moment (the agent would
            # then not stop on SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await handler.lost.wait()
            if handler.lost.is_set():
                raise SourceUnavailable("subscription lost")
            wanted = self._sampling_ms(sink)
            if wanted != self.sampling_ms:
                await self._modify(sub, wanted)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + dev.watchdog_s
                async with asyncio.timeout(dev.request_timeout_s):
                    state = await client.nodes.server_state.read_value()
                if state != ua.ServerState.Running:
                    raise SourceUnavailable(f"server state {state!r}")

    def _sampling_ms(self, sink: ReadingSink) -> float:
        return max(MIN_SAMPLING_MS, round(sink.interval_s() * 1000.0, 1))

    def _queue_size(self, sampling_ms: float) -> int:
        return max(1, math.ceil(self._publishing_ms / sampling_ms) * 2)

    def _parameters(self, client_handle: int, sampling_ms: float) -> ua.MonitoringParameters:
        return ua.MonitoringParameters(
            ClientHandle=client_handle,
            SamplingInterval=sampling_ms,
            QueueSize=self._queue_size(sampling_ms),
            DiscardOldest=True,
            Filter=ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp),
        )

    def _item_request(
        self, client_handle: int, node: Node, sampling_ms: float
    ) -> ua.MonitoredItemCreateRequest:
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=node.nodeid, AttributeId=AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=self._parameters(client_handle, sampling_ms),
        )

    async def _modify(self, sub: Subscription, sampling_ms: float) -> None:
        """One ModifyMonitoredItems request for every item (a mode change)."""
        params = ua.ModifyMonitoredItemsParameters()
        params.SubscriptionId = sub.subscription_id
        for client_handle, server_handle in self._items:
            request = ua.MonitoredItemModifyRequest()
            request.MonitoredItemId = server_handle
            request.RequestedParameters = self._parameters(client_handle, sampling_ms)
            params.ItemsToModify.append(request)
        results = await sub.server.modify_monitored_items(params)
        revised = {r.RevisedSamplingInterval for r in results}
        log.info(
            "OPC UA %s: sampling %.0f ms requested (server revised: %s)",
            self._device.endpoint,
            sampling_ms,
            ", ".join(f"{r:.0f}" for r in sorted(revised)),
        )
        self.sampling_ms = sampling_ms
