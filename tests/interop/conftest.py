"""Independent Sparkplug peers for interoperability tests: Eclipse Tahu JS under Node.js.

The peers live in ``tests/interop/node/`` (``package.json`` + ``package-lock.json``, exact
versions; ``scripts/bootstrap.sh`` runs ``npm ci`` there). Each script runs as a
:class:`harness.process.ManagedProcess` (own process group, never orphaned) and prints JSON
lines to stdout, which lands in its log file; :class:`NodePeer` reads them back.

A missing ``node`` or ``node_modules`` fails the test (run ``./derrick bootstrap``); it is
never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.process import ManagedProcess

NODE_DIR = Path(__file__).resolve().parent / "node"

JsonLine = dict[str, Any]


def plain(value: Any) -> Any:
    """Undo the peers' JSON tagging: ``{"$long": "…"}`` → int, ``{"$bytes": hex}`` → bytes."""
    if isinstance(value, dict):
        if set(value) == {"$long"}:
            return int(value["$long"])
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        if set(value) == {"$float"}:
            return float(value["$float"])
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class NodePeer:
    """One peer script; :meth:`lines` are the JSON lines it printed so far."""

    def __init__(self, node: str, script: str, args: list[str], log_path: Path) -> None:
        self.process = ManagedProcess(
            f"peer-{log_path.stem}",
            [node, str(NODE_DIR / script), *args],
            log_path=log_path,
            cwd=NODE_DIR,
        )

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop(timeout=10)

    def lines(self) -> list[JsonLine]:
        if not self.process.log_path.exists():
            return []
        out: list[JsonLine] = []
        for raw in self.process.log_path.read_text(encoding="utf-8").splitlines():
            if raw.startswith("{") and raw.endswith("}"):
                out.append(plain(json.loads(raw)))
        return out

    def log_tail(self) -> str:
        return self.process.log_path.read_text(encoding="utf-8")[-3000:]

    def wait_for(self, predicate: Callable[[JsonLine], bool], timeout: float) -> JsonLine:
        """The first printed line matching ``predicate``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if predicate(line):
                    return line
            if not self.process.running:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.process.name}: no expected line; log:\n{self.log_tail()}")


def _node_binary() -> str:
    node = os.environ.get("DERRICK_NODE") or shutil.which("node")
    if node is None:
        raise RuntimeError("node not found: run ./derrick bootstrap (installs nodejs, npm)")
    if not (NODE_DIR / "node_modules" / "sparkplug-payload").is_dir():
        raise RuntimeError(f"{NODE_DIR}/node_modules missing: run ./derrick bootstrap (npm ci)")
    return node


@pytest.fixture
def node_peer(tmp_path: Path) -> Iterator[Callable[[str, list[str]], NodePeer]]:
    """Makes started :class:`NodePeer` processes; stops them all when the test ends."""
    node = _node_binary()
    peers: list[NodePeer] = []

    def make(script: str, args: list[str]) -> NodePeer:
        log_path = tmp_path / "peers" / f"{len(peers)}-{Path(script).stem}.log"
        peer = NodePeer(node, script, args, log_path)
        peers.append(peer)
        peer.start()
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            peer.stop()
