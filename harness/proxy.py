"""A TCP proxy on loopback that limits bandwidth and can cut the link, for fault tests.

``ThrottledProxy(target_port, bytes_per_s)`` listens on a free loopback port and forwards
every connection to ``127.0.0.1:target_port``; traffic towards the target (an appliance's
uplink) passes a token bucket of ``bytes_per_s``. ``cut()`` drops every connection and
refuses new ones until ``restore()``, like a site's VPN going down.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from harness.ports import LOOPBACK


class _Bucket:
    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
                self._last = now
                if self._tokens >= n or self._tokens >= self._rate:
                    self._tokens -= n
                    return
                wait = (n - self._tokens) / self._rate
            time.sleep(min(wait, 0.05))


class ThrottledProxy:
    """Forwards loopback TCP to a target port through a rate limit (uplink only)."""

    def __init__(self, target_port: int, bytes_per_s: float | None = None) -> None:
        self._target = target_port
        self._bucket = _Bucket(bytes_per_s) if bytes_per_s else None
        self._server = socket.create_server((LOOPBACK, 0))
        self.port: int = self._server.getsockname()[1]
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._closed = False
        self.bytes_up = 0
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._thread.start()

    def __enter__(self) -> ThrottledProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self._cut = True
        self._drop_all()

    def restore(self) -> None:
        self._cut = False

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()
        self._drop_all()

    def _drop_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self._target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst, limit in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(src, dst, limit), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limited: bool) -> None:
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if limited and self._bucket is not None:
                    for i in range(0, len(data), 1024):
                        chunk = data[i : i + 1024]
                        self._bucket.take(len(chunk))
                        dst.sendall(chunk)
                else:
                    dst.sendall(data)
                if limited:
                    self.bytes_up += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
