"""An ASGI app under uvicorn in a thread of the test process, on a free loopback port (for
clients that need a real HTTP server: subprocesses, Ansible plugins, SSE readers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from harness.ports import LOOPBACK, allocate_port


@contextmanager
def serve_in_thread(
    app: Any,
    *,
    name: str = "api-uvicorn",
    ready: Callable[[], bool] = lambda: True,
    timeout_s: float = 30.0,
) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL once uvicorn has started and
    ``ready()`` holds (fails, naming ``name``, when that takes longer than ``timeout_s``)."""
    port = allocate_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port, log_config=None))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not (server.started and ready()):
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"{name}: the server did not start within {timeout_s:.0f} s")
            time.sleep(0.05)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
