"""The Primary Host's MQTT connection: gmqtt, one client per connection, our own reconnects.

Why gmqtt and not aiomqtt (paho) like the edge: the worker's receive path is its hottest
loop. gmqtt is an asyncio ``Protocol``: one ``data_received`` call parses every packet the
socket delivered, and each message goes straight to :attr:`HostConnection.on_message`.
paho reads one packet per readiness event (three ``recv`` calls each) and aiomqtt wraps it
in a ``Message``. Measured alone (bench ``subscriber``): 18 µs of CPU a message through
aiomqtt, 4 µs through gmqtt; end to end the worker went from ~70 to ~39 µs a message
(docs/benchmarks.md).

What the Primary Host needs, made explicit here rather than left to the library:

- **A clean session every time, our own backoff.** gmqtt reconnects by itself, and with
  ``clean_session=False``; a Sparkplug host connects clean every time
  (tck-id-message-flow-phid-sparkplug-clean-session-311) and re-publishes its STATE birth.
  :class:`_Client` overrides gmqtt's public ``reconnect`` so that a lost connection only
  *reports* the loss; the host then makes a new :class:`HostConnection` (new Will
  timestamp, clean session, subscriptions, birth).
- **Subscriptions confirmed** (SUBACK) before the birth is published, as with aiomqtt
  (tck-id-host-topic-phid-birth-sub-required).
- **Errors as one exception type**, :class:`MqttError`: refused or failed connects, a
  connect that gets no CONNACK in time, publishing on a lost connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import gmqtt
from gmqtt.mqtt.constants import MQTTv311

log = logging.getLogger(__name__)

#: gmqtt logs every SUBACK at INFO, and refused or lost connections at WARNING and ERROR,
#: which the host reports itself (with the reason, and what it does next). Its CRITICAL
#: lines (a packet it cannot parse, skipped) still show.
logging.getLogger("gmqtt").setLevel(logging.CRITICAL)

#: A connect that has no CONNACK by then failed (a broker that accepts TCP and hangs).
CONNECT_TIMEOUT_S: Final = 30.0

MessageHandler = Callable[[str, bytes, bool], None]


class MqttError(Exception):
    """The connection failed, was refused or was lost."""


class _Client(gmqtt.Client):  # type: ignore[misc]
    """gmqtt's client with its automatic reconnection replaced by a report of the loss."""

    def __init__(self, *args: Any, on_lost: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_lost = on_lost

    async def reconnect(self, delay: bool = False) -> None:
        self._on_lost()


class HostConnection:
    """One MQTT connection of the Primary Host: connect, subscribe, publish, until lost."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None,
        password: str | None,
        keepalive_s: int,
        will: tuple[str, bytes],
        on_message: MessageHandler,
    ) -> None:
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self._lost = asyncio.Event()
        #: The broker closed the connection (or it dropped): set by gmqtt's disconnect callback.
        self._peer_closed = asyncio.Event()
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        will_topic, will_payload = will
        self._client = _Client(
            client_id,
            clean_session=True,
            will_message=gmqtt.Message(will_topic, will_payload, qos=1, retain=True),
            on_lost=self._lost.set,
        )
        if username is not None:
            self._client.set_auth_credentials(username, password)
        handler = on_message

        def deliver(_c: object, topic: str | bytes, payload: bytes, _q: int, props: Any) -> int:
            # gmqtt hands over a topic that is not UTF-8 as bytes: keep it, undecodable
            # parts as surrogates, so that the topic check dead-letters it.
            if not isinstance(topic, str):
                topic = topic.decode("utf-8", "surrogateescape")
            handler(topic, payload, bool(props.get("retain")))
            return 0

        self._client.on_message = deliver
        self._client.on_subscribe = self._on_suback
        self._client.on_disconnect = lambda *_: self._on_peer_closed()

    def __repr__(self) -> str:  # never the password
        return f"HostConnection({self._host}:{self._port})"

    @property
    def connected(self) -> bool:
        return not self._lost.is_set() and bool(self._client.is_connected)

    async def connect(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._client.connect(
                    self._host, self._port, keepalive=self._keepalive, version=MQTTv311
                )
        except (OSError, TimeoutError, gmqtt.MQTTConnectError) as exc:
            await self.close()
            raise MqttError(f"cannot connect to {self._host}:{self._port}: {exc!r}") from exc
        if self._lost.is_set():
            raise MqttError(f"connection to {self._host}:{self._port} lost while connecting")

    async def subscribe(self, topic: str, qos: int) -> None:
        """Subscribe and wait for the broker's SUBACK; a refused subscription is an error."""
        self._check()
        mid = self._client.subscribe(topic, qos=qos)
        future = self._subacks[mid] = asyncio.get_running_loop().create_future()
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({future, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            self._subacks.pop(mid, None)
        if not future.done():
            raise MqttError(f"connection lost before the SUBACK of {topic}")
        if any(granted >= 0x80 for granted in future.result()):
            raise MqttError(f"broker refused the subscription to {topic}")

    def _on_suback(self, _c: object, mid: int, granted: tuple[int, ...], _p: object) -> None:
        future = self._subacks.get(mid)
        if future is not None and not future.done():
            future.set_result(tuple(granted))

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Queue a message on the connection (written in order, by the event loop)."""
        self._check()
        self._client.publish(topic, payload, qos=qos, retain=retain)

    async def wait_lost(self) -> None:
        await self._lost.wait()

    def _on_peer_closed(self) -> None:
        self._lost.set()
        self._peer_closed.set()

    async def close(self, *, linger_s: float = 2.0) -> None:
        """A normal disconnect: the broker does not publish the Will.

        DISCONNECT, then a half-close, then wait (at most ``linger_s``) for the broker to
        close its side. Closing our socket at once while the broker's last packets (our own
        STATE echoed back, live data) sit unread makes the kernel reset the connection; the
        broker then drops the DISCONNECT with it and publishes the Will (seen with gmqtt's
        own ``disconnect``, in about half of the graceful stops of the STATE test). gmqtt has
        no public handle on its connection: this is the one place that reaches into it.
        """
        was_up = self.connected
        self._lost.set()
        connection = getattr(self._client, "_connection", None)
        transport = getattr(connection, "_transport", None)
        if was_up and connection is not None and transport is not None:
            try:
                connection.send_disconnect()
                if transport.can_write_eof():
                    transport.write_eof()
                async with asyncio.timeout(linger_s):
                    await self._peer_closed.wait()
            except (OSError, TimeoutError) as exc:
                log.debug("disconnect: broker did not close within %.1fs: %r", linger_s, exc)
        try:
            await self._client.disconnect()  # closes what is left; a no-op write if closed
        except Exception as exc:  # already gone: nothing to close
            log.debug("disconnect: %r", exc)

    def _check(self) -> None:
        if not self.connected:
            raise MqttError(f"not connected to {self._host}:{self._port}")
