"""Free TCP ports on the loopback interface.

The kernel picks a free port when we bind port 0; we remember every port handed out in this
process so that two services started back to back never receive the same one before either
has bound it.
"""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def allocate_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` now and was not handed out before."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise OSError(f"no fresh free port found on {host}")


def allocate_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct ports from :func:`allocate_port`."""
    return [allocate_port(host) for _ in range(count)]


def is_listening(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
