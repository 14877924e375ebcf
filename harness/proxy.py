"""A TCP proxy on loopback that limits bandwidth and can cut the link, for fault tests.

``ThrottledProxy(target_port, bytes_per_s)`` listens on a free loopback port and forwards
every connection to ``127.0.0.1:target_port``; traffic towards the target (an appliance's
uplink) passes a token bucket of ``bytes_per_s``. ``cut()`` drops every connection and
refuses new ones until ``restore()``, like a site's VPN going down.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from harness.ports import LOOPBACK
from harness.process import ManagedProcess


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

    def __init__(
        self, target_port: int, bytes_per_s: float | None = None, *, refuse_when_cut: bool = False
    ) -> None:
        self._target = target_port
        self._bucket = _Bucket(bytes_per_s) if bytes_per_s else None
        self._server = socket.create_server((LOOPBACK, 0))
        self.port: int = self._server.getsockname()[1]
        #: While cut, close the listening socket (connections are refused, as by a host that
        #: is down) instead of accepting and closing them at once (as a middlebox does).
        self._refuse_when_cut = refuse_when_cut
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
        if self._refuse_when_cut:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            with contextlib.suppress(OSError):
                self._server.close()
        self._drop_all()

    def restore(self) -> None:
        if self._refuse_when_cut and self._cut:
            self._server = socket.create_server((LOOPBACK, self.port))
            self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
            self._thread.start()
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
        server = self._server
        while not self._closed:
            try:
                client, _ = server.accept()
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


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.proxy --listen PORT --target PORT [--rate B/s]``: run a proxy in its
    own process (no GIL shared with the test); SIGUSR1 cuts the link, SIGUSR2 restores it."""
    parser = argparse.ArgumentParser(prog="python -m harness.proxy")
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--port-file", type=str, required=True)
    parser.add_argument("--refuse-when-cut", action="store_true")
    args = parser.parse_args(argv)
    proxy = ThrottledProxy(args.target, args.rate, refuse_when_cut=args.refuse_when_cut)
    signal.signal(signal.SIGUSR1, lambda *_: proxy.cut())
    signal.signal(signal.SIGUSR2, lambda *_: proxy.restore())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tmp = args.port_file + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(str(proxy.port))
    os.replace(tmp, args.port_file)
    stop.wait()
    proxy.close()
    return 0


class ProxyProcess:
    """A :class:`ThrottledProxy` in a child process (``python -m harness.proxy``)."""

    def __init__(
        self,
        base_dir: Path,
        target_port: int,
        bytes_per_s: float | None = None,
        *,
        refuse_when_cut: bool = False,
    ) -> None:
        base_dir.mkdir(parents=True, exist_ok=True)
        self._port_file = base_dir / "proxy.port"
        argv = [sys.executable, "-m", "harness.proxy", "--target", str(target_port),
                "--port-file", str(self._port_file)]  # fmt: skip
        if bytes_per_s:
            argv += ["--rate", str(bytes_per_s)]
        if refuse_when_cut:
            argv.append("--refuse-when-cut")
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.process = ManagedProcess("proxy", argv, log_path=base_dir / "proxy.log", env=env)
        self.port = 0

    def __enter__(self) -> ProxyProcess:
        self.process.start()
        deadline = time.monotonic() + 30
        while not self._port_file.exists():
            if time.monotonic() > deadline or not self.process.running:
                self.process.stop()
                raise RuntimeError(f"proxy did not start; see {self.process.log_path}")
            time.sleep(0.05)
        self.port = int(self._port_file.read_text())
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    def cut(self) -> None:
        self.process.send_signal(signal.SIGUSR1)

    def restore(self) -> None:
        self.process.send_signal(signal.SIGUSR2)


if __name__ == "__main__":
    sys.exit(main())
