"""What the Primary Host knows about each edge node: births, aliases, seq, acknowledgements.

Pure state, no I/O. One :class:`NodeState` per (group, edge node), owned by the host.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from core.ratelimit import TokenBucket
from core.sparkplug import DataType


class MetricInfo(msgspec.Struct, frozen=True, gc=False):
    """A metric declared in a birth: where it lives, its name, datatype, unit and hot flag."""

    device: str  # "" for node metrics
    name: str
    datatype: DataType
    unit: str | None = None
    hot: bool = False


class AckFrontier:
    """Cumulative acknowledgement of a node's batches.

    ``value`` is the highest batch number N such that every batch ≤ N is committed.
    Committed batches above the frontier wait in a set until the gap below them fills.
    """

    def __init__(self, start: int = 0) -> None:
        self.value = start
        self._above: set[int] = set()

    def __repr__(self) -> str:
        return f"AckFrontier(value={self.value}, waiting={len(self._above)})"

    def advance_to(self, value: int) -> bool:
        """Move the frontier to at least ``value`` (the node says all up to it is settled)."""
        if value <= self.value:
            return False
        self.value = value
        self._above = {b for b in self._above if b > value}
        self._settle()
        return True

    def commit(self, batches: Iterable[int]) -> bool:
        """Record committed batches; returns True if the frontier moved."""
        before = self.value
        for b in batches:
            if b > self.value:
                self._above.add(b)
        self._settle()
        return self.value != before

    def _settle(self) -> None:
        while self.value + 1 in self._above:
            self.value += 1
            self._above.discard(self.value)

    @property
    def waiting(self) -> int:
        return len(self._above)


class NodeState:
    """One edge node's Sparkplug session as seen by the host."""

    def __init__(self, group_id: str, edge_node_id: str) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.born = False
        self.bdseq: int | None = None
        self.aliases: dict[int, MetricInfo] = {}
        #: Every metric of the births by (device, name), aliased or not (aliases are
        #: optional in Sparkplug: a node may send data by name).
        self.by_name: dict[tuple[str, str], MetricInfo] = {}
        self.devices_online: set[str] = set()
        self.expected_seq: int | None = None
        self.missing: dict[int, int] = {}
        self.last_rebirth_request_ms: int | None = None
        self.frontier = AckFrontier()
        #: The node's queue identity (``Derrick/Queue Id`` of its NBIRTH), and which numbering
        #: of its batches ``frontier`` counts: a new queue id (a reinstalled appliance,
        #: numbering from 1 again) starts a new generation; commits made under an older one
        #: are ignored, so a late commit of an old batch N cannot settle a new batch N.
        self.queue_id: int | None = None
        self.generation = 0
        self.acked_sent = 0
        self.acked_alias: int | None = None
        #: When the host last sent this node an acknowledgement (host clock, ms).
        self.last_ack_ms: int | None = None
        self._datatypes: dict[int, DataType] | None = None
        #: The node's metrics quota (made by the processor on first data, if configured).
        self.quota: TokenBucket | None = None
        #: When the host last warned that this node is over its quota (host clock, ms).
        self.quota_warned_ms: int | None = None

    def __repr__(self) -> str:
        return f"NodeState({self.group_id}/{self.edge_node_id}, born={self.born})"

    def datatypes(self) -> dict[int, DataType]:
        """Alias -> datatype for the decoder; built once per birth, not once per message."""
        if self._datatypes is None:
            self._datatypes = {alias: info.datatype for alias, info in self.aliases.items()}
        return self._datatypes

    def on_nbirth(
        self,
        bdseq: int | None,
        seq: int | None,
        metrics: dict[int, MetricInfo],
        unaliased: Iterable[MetricInfo] = (),
    ) -> None:
        self.born = True
        self.bdseq = bdseq
        self.aliases = dict(metrics)
        self._datatypes = None
        self.by_name = {(m.device, m.name): m for m in (*metrics.values(), *unaliased)}
        self.devices_online.clear()
        self.expected_seq = None if seq is None else (seq + 1) % 256
        self.missing.clear()

    def on_dbirth(
        self, device: str, metrics: dict[int, MetricInfo], unaliased: Iterable[MetricInfo] = ()
    ) -> None:
        for alias in [a for a, m in self.aliases.items() if m.device == device]:
            del self.aliases[alias]
        for key in [k for k in self.by_name if k[0] == device]:
            del self.by_name[key]
        self.aliases.update(metrics)
        self._datatypes = None
        self.by_name.update({(m.device, m.name): m for m in (*metrics.values(), *unaliased)})
        self.devices_online.add(device)

    def on_death(self) -> None:
        self.born = False
        self.devices_online.clear()
        self.expected_seq = None
        self.missing.clear()

    def adopt_acknowledged(
        self, acked: int | None, oldest: int | None, queue_id: int | None = None
    ) -> None:
        """Take the acknowledgement state an NBIRTH declares: ``acked`` (the last ack the node
        received), ``oldest`` (its oldest batch still held: everything before it is settled)
        and ``queue_id`` (its queue's identity). A queue id other than the one known means
        the batch numbers started again (a reinstalled appliance): the frontier restarts
        under a new generation. Otherwise it only moves up: a node saying less than the
        frontier lost an ack on the way, and the next ack (cumulative) covers it."""
        if queue_id is not None:
            if self.queue_id is not None and queue_id != self.queue_id:
                self.frontier = AckFrontier()
                self.generation += 1
                self.acked_sent = 0
            self.queue_id = queue_id
        if acked is not None:
            self.frontier.advance_to(acked)
            self.acked_sent = max(self.acked_sent, acked)
        if oldest is not None:
            self.frontier.advance_to(oldest - 1)

    def commit(self, generation: int, batches: Iterable[int]) -> bool:
        """Record batches QuestDB accepted, counted under ``generation``; True if the
        frontier moved."""
        return generation == self.generation and self.frontier.commit(batches)

    def check_seq(self, seq: int | None, now_ms: int) -> bool:
        """Track ``seq``; returns False when this message opened a gap.

        Messages are stored whatever their order; a missing seq is remembered with the time
        it went missing, and forgotten when it arrives late (reordering). A gap that stays
        open past the reorder timeout makes the host ask for a rebirth.
        """
        if seq is None or not 0 <= seq <= 255:
            return True
        expected = self.expected_seq
        self.expected_seq = (seq + 1) % 256 if expected is None or seq == expected else expected
        if expected is None or seq == expected:
            return True
        if seq in self.missing:
            del self.missing[seq]
            return True
        # Ahead of what we expected: everything between went missing.
        gap = (seq - expected) % 256
        for i in range(gap):
            self.missing.setdefault((expected + i) % 256, now_ms)
        self.expected_seq = (seq + 1) % 256
        return False

    def gap_expired(self, now_ms: int, timeout_ms: int) -> bool:
        return any(now_ms - since >= timeout_ms for since in self.missing.values())


class RebirthLimiter:
    """Rate limits rebirth requests: one per node per cooldown, and a fleet-wide token
    bucket, so that a broker hiccup cannot start a rebirth storm across the fleet."""

    def __init__(self, *, cooldown_ms: float, rate_per_s: float) -> None:
        self._cooldown_ms = cooldown_ms
        self._rate = rate_per_s
        self._tokens = rate_per_s
        self._last_refill_ms: int | None = None
        self.throttled = 0

    def allow(self, node: NodeState, now_ms: int) -> bool:
        """True (and the request is counted) if ``node`` may be asked to rebirth now."""
        last = node.last_rebirth_request_ms
        if last is not None and now_ms - last < self._cooldown_ms:
            return False
        if self._last_refill_ms is not None:
            elapsed_s = max(0, now_ms - self._last_refill_ms) / 1000
            self._tokens = min(self._rate, self._tokens + elapsed_s * self._rate)
        self._last_refill_ms = now_ms
        if self._tokens < 1:
            self.throttled += 1
            return False
        self._tokens -= 1
        node.last_rebirth_request_ms = now_ms
        return True
