"""The durable store-and-forward queue, against a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.queue import PendingSample, QueueError, StoreAndForwardQueue


@pytest.fixture
def queue(tmp_path: Path) -> StoreAndForwardQueue:
    q = StoreAndForwardQueue(tmp_path / "q.db", max_bytes=50_000_000)
    q.open()
    yield q
    q.close()


def _samples(alias: int, n: int, t0: int = 1_700_000_000_000) -> list[PendingSample]:
    return [PendingSample(alias, t0 + i, float(i)) for i in range(n)]


def test_wal_and_full_sync_are_in_force(queue: StoreAndForwardQueue) -> None:
    assert queue.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # 2 = FULL: a commit is fsynced, so it survives a power cut.
    assert queue.db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_bdseq_starts_at_zero_increments_and_wraps(tmp_path: Path) -> None:
    q = StoreAndForwardQueue(tmp_path / "q.db", max_bytes=10_000_000)
    q.open()
    assert [q.next_bdseq() for _ in range(3)] == [0, 1, 2]
    q.close()
    q.open()  # persisted across restarts
    assert q.next_bdseq() == 3
    for _ in range(252):
        q.next_bdseq()
    assert q.next_bdseq() == 0  # 255 wraps to 0
    q.close()


def test_aliases_are_stable_and_never_reused(tmp_path: Path) -> None:
    q = StoreAndForwardQueue(tmp_path / "q.db", max_bytes=10_000_000)
    q.open()
    a = q.register_metric("daq", "WOB", 10)
    b = q.register_metric("daq", "RPM", 10)
    q.close()
    q.open()
    assert q.register_metric("daq", "WOB", 10) == a
    assert q.register_metric("daq", "RPM", 10) == b
    assert q.register_metric("opc", "WOB", 10) not in (a, b)
    q.close()


def test_commit_survives_reopen_and_ack_is_cumulative(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = StoreAndForwardQueue(path, max_bytes=10_000_000)
    q.open()
    b1 = q.commit({"daq": _samples(1, 5), "opc": _samples(2, 3)}, now_ms=1)
    b2 = q.commit({"daq": _samples(1, 4, t0=1_700_000_100_000)}, now_ms=2)
    assert [b.id for b in b1] == [1, 2] and [b.id for b in b2] == [3]
    q.close()

    q.open()
    due = q.due(now_ms=10, resend_after_ms=1000, max_samples=1000)
    assert [b.id for b in due] == [1, 2, 3]
    assert [s.value for s in due[0].samples] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert q.ack(2) == 8
    assert q.stats().samples == 4 and q.acked_batch == 2
    assert q.ack(1) == 0  # an older acknowledgement changes nothing
    with pytest.raises(QueueError, match="beyond the newest batch"):
        q.ack(99)
    q.ack(3)
    q.close()
    q.open()
    # Batch ids are never reused, even after the table emptied.
    assert q.commit({"daq": _samples(1, 1)}, now_ms=3)[0].id == 4
    q.close()


def test_sent_batches_wait_for_the_ack_timeout_with_backoff(queue: StoreAndForwardQueue) -> None:
    queue.commit({"daq": _samples(1, 2)}, now_ms=0)
    queue.mark_sent([1], now_ms=1000)
    assert queue.due(now_ms=1500, resend_after_ms=1000, max_samples=10) == []
    assert [b.id for b in queue.due(now_ms=2000, resend_after_ms=1000, max_samples=10)] == [1]
    queue.mark_sent([1], now_ms=2000)  # second send: waits twice as long
    assert queue.due(now_ms=3500, resend_after_ms=1000, max_samples=10) == []
    assert len(queue.due(now_ms=4000, resend_after_ms=1000, max_samples=10)) == 1
    queue.mark_all_unsent()  # a new session: everything is due at once
    assert len(queue.due(now_ms=2001, resend_after_ms=1000, max_samples=10)) == 1


def test_due_respects_the_sample_budget_but_always_makes_progress(
    queue: StoreAndForwardQueue,
) -> None:
    for i in range(5):
        queue.commit({"daq": _samples(1, 10, t0=1_700_000_000_000 + i * 100)}, now_ms=i)
    assert len(queue.due(now_ms=0, resend_after_ms=1, max_samples=25)) == 2
    assert len(queue.due(now_ms=0, resend_after_ms=1, max_samples=1)) == 1


def test_size_cap_evicts_oldest_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    q = StoreAndForwardQueue(tmp_path / "q.db", max_bytes=1_000_000)
    q.open()
    for i in range(40):
        q.commit({"daq": _samples(1, 1000, t0=1_700_000_000_000 + i * 10_000)}, now_ms=i)
    stats = q.stats()
    assert stats.used_bytes <= 1_000_000
    assert stats.evicted_samples > 0
    assert stats.oldest_batch is not None and stats.oldest_batch > 1
    assert stats.newest_batch == 40
    assert "evicted" in caplog.text
    q.close()


def test_a_second_connection_sees_only_committed_data(
    queue: StoreAndForwardQueue, tmp_path: Path
) -> None:
    queue.commit({"daq": _samples(1, 3)}, now_ms=0)
    other = sqlite3.connect(tmp_path / "q.db")
    assert other.execute("SELECT count(*) FROM sample").fetchone()[0] == 3
    other.close()
