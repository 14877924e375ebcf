"""The appliance's durable store-and-forward queue (SQLite, WAL, ``synchronous=FULL``).

Every sample is committed here before it is published, and leaves only when the Primary
Host's cumulative acknowledgement covers its batch. Why SQLite: it is in the Python standard
library on every appliance image, its WAL journal gives atomic multi-row commits with one
fsync per commit (we batch samples per commit to pay for it), and it survives power cuts when
``synchronous=FULL`` (``NORMAL`` in WAL mode may roll back the last commits after a power cut).
See ``docs/edge-queue.md``.

Schema:

- ``metric``: one row per (device, name), its id is the metric's Sparkplug alias, stable
  across restarts; new metrics get new ids, old ids are never reused.
- ``batch``: ``AUTOINCREMENT`` id (never reused, even when the table empties), device,
  whether it is historical, when it was created and last sent, how often.
- ``sample``: the readings, each in exactly one batch; ``ns`` is the sub-millisecond part
  (0–999999 ns) of the timestamp, non-zero only for legacy readings stored in nanoseconds.
  ``quality`` is the source's Sparkplug quality (192 good, 500 stale, 0 bad; OPC UA status).
- ``meta``: bdSeq, the acknowledged batch number, evictions.
- ``handoff``: legacy hand-off files already imported (owned by ``edge.legacy``).

Several processes may write (the agent, ``derrick-edge import-legacy``): a writer waits up to
``BUSY_TIMEOUT_S`` for another's transaction.

The class is synchronous and not thread-safe: the agent calls it from one worker thread.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Final

import msgspec

log = logging.getLogger(__name__)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS metric (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    name TEXT NOT NULL,
    datatype INTEGER NOT NULL,
    UNIQUE (device, name)
);
CREATE TABLE IF NOT EXISTS batch (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    historical INTEGER NOT NULL,
    hot INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER NOT NULL DEFAULT 0,
    sends INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sample (
    batch INTEGER NOT NULL,
    metric INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    value,
    ns INTEGER NOT NULL DEFAULT 0,
    quality INTEGER NOT NULL DEFAULT 192
);
CREATE INDEX IF NOT EXISTS sample_by_batch ON sample (batch);
"""


#: How long a writer waits for another process's transaction before failing.
BUSY_TIMEOUT_S: Final = 30.0


class QueueError(Exception):
    """The queue cannot be opened or written (disk full, corrupt file, bad input)."""


class QueueFullError(QueueError):
    """A commit that may not evict would exceed the queue's byte cap; nothing was written."""


class PendingSample(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A reading not yet committed: metric alias, source timestamp (epoch ms), value; ``ns``
    is the timestamp's sub-millisecond part (0–999999) when the source had nanoseconds."""

    alias: int
    ts_ms: int
    value: object
    hot: bool = False
    ns: int = 0
    #: Sparkplug quality of the source's value (192 good, 500 stale, 0 bad).
    quality: int = 192


class Sample(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A committed reading of a batch (``ns``: see :class:`PendingSample`)."""

    alias: int
    ts_ms: int
    value: object
    ns: int = 0
    quality: int = 192


class Batch(msgspec.Struct, frozen=True, gc=False):
    """A committed batch: the unit of publication and acknowledgement."""

    id: int
    device: str
    historical: bool
    created_ms: int
    sends: int
    samples: list[Sample]


class QueueStats(msgspec.Struct, frozen=True):
    """What the queue holds, for node metrics and the health command."""

    batches: int
    samples: int
    oldest_created_ms: int | None
    oldest_batch: int | None
    newest_batch: int | None
    acked_batch: int
    used_bytes: int
    max_bytes: int
    evicted_samples: int
    #: Random, fixed when the queue file was created: batch numbers count within it.
    queue_id: int = 0


class StoreAndForwardQueue:
    """A durable, size-capped queue of sample batches for one edge node."""

    def __init__(self, path: Path, *, max_bytes: int, fsync: bool = True) -> None:
        self._path = path
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._db: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"StoreAndForwardQueue(path={str(self._path)!r}, max_bytes={self._max_bytes})"

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'OFF'}")
            db.execute("PRAGMA foreign_keys=OFF")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(sample)")}
            if "ns" not in columns:  # a queue created before the column existed
                db.execute("ALTER TABLE sample ADD COLUMN ns INTEGER NOT NULL DEFAULT 0")
            if "quality" not in columns:
                db.execute("ALTER TABLE sample ADD COLUMN quality INTEGER NOT NULL DEFAULT 192")
            # the queue's identity: batch numbers count within it (a new file starts at 1)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('queue_id', ?) ON CONFLICT DO NOTHING",
                (secrets.randbits(62) + 1,),
            )
        except sqlite3.Error as exc:
            raise QueueError(f"cannot open queue {self._path}: {exc}") from exc
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise QueueError("queue is not open")
        return self._db

    # -- meta ----------------------------------------------------------------------------

    def _meta(self, key: str, default: int = 0) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def next_bdseq(self) -> int:
        """The bdSeq for the next MQTT CONNECT: 0 first, then +1 per connect, wrapping at 256.

        Persisted before it is used, so a crash between CONNECT and NBIRTH cannot reuse it.
        """
        with self._transaction():
            current = self._meta("bdseq", -1)
            value = (current + 1) % 256
            self._set_meta("bdseq", value)
        return value

    @property
    def acked_batch(self) -> int:
        """Highest batch number the Primary Host has acknowledged (0: none yet)."""
        return self._meta("acked")

    # -- metrics -------------------------------------------------------------------------

    def register_metric(self, device: str, name: str, datatype: int) -> int:
        """The alias of (device, name); new metrics get a new, never reused alias."""
        row = self.db.execute(
            "SELECT id, datatype FROM metric WHERE device = ? AND name = ?", (device, name)
        ).fetchone()
        if row is not None:
            if int(row[1]) != datatype:
                self.db.execute("UPDATE metric SET datatype = ? WHERE id = ?", (datatype, row[0]))
            return int(row[0])
        cur = self.db.execute(
            "INSERT INTO metric (device, name, datatype) VALUES (?, ?, ?)", (device, name, datatype)
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def metrics(self) -> list[tuple[int, str, str, int]]:
        """Every registered metric as (alias, device, name, datatype)."""
        rows = self.db.execute("SELECT id, device, name, datatype FROM metric ORDER BY id")
        return [(int(a), str(d), str(n), int(t)) for a, d, n, t in rows]

    # -- writing -------------------------------------------------------------------------

    def commit(
        self,
        samples_by_device: dict[str, Sequence[PendingSample]],
        *,
        now_ms: int,
        historical: bool = False,
        evict: bool = True,
    ) -> list[Batch]:
        """Commit samples durably, one new batch per device, in one transaction (one fsync).

        Over the byte cap the oldest batches are evicted; with ``evict=False`` the commit
        raises :class:`QueueFullError` instead (and the transaction rolls back).
        """
        batches: list[Batch] = []
        with self._transaction():
            for device, pending in samples_by_device.items():
                if not pending:
                    continue
                hot = any(s.hot for s in pending)
                cur = self.db.execute(
                    "INSERT INTO batch (device, historical, hot, samples, created_ms) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (device, int(historical), int(hot), len(pending), now_ms),
                )
                batch_id = cur.lastrowid
                assert batch_id is not None
                self.db.executemany(
                    "INSERT INTO sample (batch, metric, ts_ms, value, ns, quality) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(batch_id, s.alias, s.ts_ms, s.value, s.ns, s.quality) for s in pending],
                )
                batches.append(
                    Batch(
                        id=batch_id,
                        device=device,
                        historical=historical,
                        created_ms=now_ms,
                        sends=0,
                        samples=[
                            Sample(s.alias, s.ts_ms, s.value, s.ns, s.quality) for s in pending
                        ],
                    )
                )
            if not evict and self._used_bytes() > self._max_bytes:
                raise QueueFullError(
                    f"queue would exceed its cap of {self._max_bytes} bytes; nothing committed"
                )
            evicted = self._enforce_cap()
        if evicted:
            log.warning(
                "queue full (%d bytes cap): evicted the %d oldest samples; these readings are lost",
                self._max_bytes,
                evicted,
            )
        return batches

    def mark_sent(self, batch_ids: Iterable[int], *, now_ms: int) -> None:
        ids = [(now_ms, b) for b in batch_ids]
        if ids:
            with self._transaction():
                self.db.executemany(
                    "UPDATE batch SET sent_ms = ?, sends = sends + 1 WHERE id = ?", ids
                )

    def mark_all_unsent(self) -> None:
        """After a new MQTT session every unacknowledged batch is due again."""
        with self._transaction():
            self.db.execute("UPDATE batch SET sent_ms = 0")

    def ack(self, upto: int) -> int:
        """Drop every batch ≤ ``upto`` (cumulative acknowledgement); returns samples removed.

        An acknowledgement beyond the newest batch ever created is refused (it would
        acknowledge data the host cannot have seen).
        """
        newest = self._newest_batch_ever()
        if upto > newest:
            raise QueueError(f"acknowledgement {upto} is beyond the newest batch {newest}")
        with self._transaction():
            if upto <= self._meta("acked"):
                return 0
            removed = self.db.execute("DELETE FROM sample WHERE batch <= ?", (upto,)).rowcount
            self.db.execute("DELETE FROM batch WHERE id <= ?", (upto,))
            self._set_meta("acked", upto)
        return removed

    # -- reading -------------------------------------------------------------------------

    def due(
        self,
        *,
        now_ms: int,
        resend_after_ms: int,
        max_samples: int,
        devices: Collection[str] | None = None,
        created_before_ms: int | None = None,
    ) -> list[Batch]:
        """Unacknowledged batches due for (re)sending, oldest first, up to ``max_samples``.

        A batch is due if it was never sent in this session, or if it was sent more than
        ``resend_after_ms × 2^(sends-1)`` ago (capped at 16×) without being acknowledged.
        With ``devices``, only batches of those devices (the ones currently born); with
        ``created_before_ms``, only batches committed before then.
        """
        rows = self.db.execute(
            "SELECT id, device, historical, created_ms, sends, samples FROM batch "
            "WHERE sent_ms = 0 OR sent_ms + ? * (1 << min(max(sends - 1, 0), 4)) <= ? "
            "ORDER BY id",
            (resend_after_ms, now_ms),
        )
        chosen: list[tuple[int, str, bool, int, int]] = []
        total = 0
        for bid, device, hist, created, sends, count in rows:
            if devices is not None and device not in devices:
                continue
            if created_before_ms is not None and int(created) >= created_before_ms:
                continue
            if chosen and total + int(count) > max_samples:
                break
            chosen.append((int(bid), str(device), bool(hist), int(created), int(sends)))
            total += int(count)
        return [
            Batch(
                id=bid,
                device=device,
                historical=hist,
                created_ms=created,
                sends=sends,
                samples=self._samples(bid),
            )
            for bid, device, hist, created, sends in chosen
        ]

    def _samples(self, batch_id: int) -> list[Sample]:
        rows = self.db.execute(
            "SELECT metric, ts_ms, value, ns, quality FROM sample WHERE batch = ? ORDER BY rowid",
            (batch_id,),
        )
        return [Sample(int(a), int(t), v, int(n), int(q)) for a, t, v, n, q in rows]

    def stats(self) -> QueueStats:
        batches, samples, oldest_ms, oldest, newest = self.db.execute(
            "SELECT count(*), coalesce(sum(samples), 0), min(created_ms), min(id), max(id) "
            "FROM batch"
        ).fetchone()
        return QueueStats(
            batches=int(batches),
            samples=int(samples),
            oldest_created_ms=None if oldest_ms is None else int(oldest_ms),
            oldest_batch=None if oldest is None else int(oldest),
            newest_batch=None if newest is None else int(newest),
            acked_batch=self._meta("acked"),
            used_bytes=self._used_bytes(),
            max_bytes=self._max_bytes,
            evicted_samples=self._meta("evicted"),
            queue_id=self._meta("queue_id"),
        )

    # -- internals -----------------------------------------------------------------------

    def _newest_batch_ever(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batch'").fetchone()
        return 0 if row is None else int(row[0])

    def _used_bytes(self) -> int:
        page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page_size) * (int(pages) - int(free))

    def _enforce_cap(self) -> int:
        """Evict the oldest batches while the queue is over its byte cap (inside a txn).

        Policy: oldest data goes first, whole batches at a time, counted in ``evicted`` and
        logged; the newest batch is never evicted.
        """
        evicted = 0
        while self._used_bytes() > self._max_bytes:
            row = self.db.execute(
                "SELECT id, samples FROM batch ORDER BY id LIMIT 1 OFFSET 0"
            ).fetchone()
            newest = self.db.execute("SELECT max(id) FROM batch").fetchone()[0]
            if row is None or row[0] == newest:
                break
            self.db.execute("DELETE FROM sample WHERE batch = ?", (row[0],))
            self.db.execute("DELETE FROM batch WHERE id = ?", (row[0],))
            evicted += int(row[1])
        if evicted:
            self._set_meta("evicted", self._meta("evicted") + evicted)
        return evicted

    class _Txn:
        def __init__(self, db: sqlite3.Connection) -> None:
            self._db = db
            self._outer = False

        def __enter__(self) -> None:
            self._outer = not self._db.in_transaction
            if self._outer:
                self._db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            if not self._outer:
                return
            if exc_type is None:
                self._db.execute("COMMIT")
            else:
                self._db.execute("ROLLBACK")

    def _transaction(self) -> StoreAndForwardQueue._Txn:
        return StoreAndForwardQueue._Txn(self.db)

    def transaction(self) -> StoreAndForwardQueue._Txn:
        """Group several commits into one atomic transaction (``BEGIN IMMEDIATE``, one fsync):
        all of them are kept, or, if the block raises, none."""
        return self._transaction()
