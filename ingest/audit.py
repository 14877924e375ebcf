"""The audit archive writer: every received message, raw, durable before any acknowledgement.

The host calls :meth:`AuditArchive.append` for every message it receives (on the event loop:
a framed record into an in-memory buffer, a few microseconds) and awaits
:meth:`AuditArchive.commit` in each flush cycle *before* it acknowledges anything: commit
takes the buffer, writes it to the open segment, feeds it to the segment's SHA-256 and fsyncs,
on the archive's own thread (group commit: one fsync per flush cycle, not per message). A
failed commit keeps the bytes and is retried by the next one; the host acknowledges nothing
until a commit succeeds, so the edges keep their data meanwhile.

Segments are sealed (footer with the digest, fsync) and a new one begun (its header carrying
that digest, file and directory fsynced) when the open one exceeds ``segment_max_bytes`` or
``segment_max_age_s``, and on close. A chain left open by a crash is sealed at the next start,
after cutting off a torn last record (bytes whose write or fsync never completed, so never
acknowledged). One writer per chain, enforced by an exclusive ``flock`` on ``LOCK``.

The format is ``core.audit``; ``python -m cold verify`` walks the chain.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from core import audit
from ingest.config import IngestConfig

log = logging.getLogger(__name__)


class AuditError(Exception):
    """The archive could not be written (the host then acknowledges nothing)."""


class AuditArchive:
    """The writer of one hash chain (one per ingest worker)."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_max_bytes: int = 64 * 1024 * 1024,
        segment_max_age_s: float = 3600.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = directory
        self._max_bytes = segment_max_bytes
        self._max_age_ns = int(segment_max_age_s * 1e9)
        self._clock = clock_ns
        self._buffer = bytearray()
        #: Taken from the buffer, not yet durable (archive thread only): bytes and
        #: (records, first received, last received).
        self._unwritten: list[tuple[bytes, tuple[int, int, int]]] = []
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._fd: int | None = None
        self._prev_digest = audit.ZERO_DIGEST
        self._lockfile: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._index = -1
        self._size = 0
        self._created = 0
        self._records = 0
        self._first = 0
        self._last = 0
        self._pending_records = 0
        self._pending_first = 0
        self._pending_last = 0
        self.appended = 0
        self.failures = 0
        self._warned_at = 0.0
        self.committed_records = 0

    def __repr__(self) -> str:
        return f"AuditArchive({str(self.directory)!r}, segment={self._index})"

    # -- event loop side -----------------------------------------------------------------

    def append(self, topic: str, payload: bytes) -> None:
        """Frame one received message into the buffer (made durable by the next commit)."""
        now = self._clock()
        self._buffer += audit.encode_record(now, topic, payload)
        if not self._pending_records:
            self._pending_first = now
        self._pending_records += 1
        self._pending_last = now
        self.appended += 1

    async def commit(self) -> None:
        """Make everything appended so far durable (raises :class:`AuditError`)."""
        if not self._buffer and not self._unwritten:
            return
        chunk = bytes(self._buffer)
        meta = (self._pending_records, self._pending_first, self._pending_last)
        self._buffer.clear()
        self._pending_records = 0
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._write, chunk, meta)

    async def durable(self) -> bool:
        """:meth:`commit`, False (warned, counted) when it failed: then acknowledge nothing."""
        try:
            await self.commit()
        except AuditError as exc:
            self.failures += 1
            now = time.monotonic()
            if self.failures == 1 or now - self._warned_at >= 30:
                self._warned_at = now
                log.warning("audit archive not durable, acknowledging nothing: %s", exc)
            return False
        if self.failures:
            log.info("audit archive writable again after %d failed commits", self.failures)
            self.failures = 0
        return True

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._open)

    async def close(self) -> None:
        """Commit what is left, seal the open segment, release the chain."""
        loop = asyncio.get_running_loop()
        try:
            await self.commit()
        except AuditError as exc:
            # Never acknowledged, so the edges still hold these messages and send them again.
            log.warning("audit archive: last messages not archived at close: %s", exc)
        finally:
            try:
                await loop.run_in_executor(self._thread, self._close)
            finally:
                self._thread.shutdown(wait=True)

    # -- archive thread ------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lockfile = open(self.directory / "LOCK", "ab")  # noqa: SIM115
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if self._lockfile is not None:
                self._lockfile.close()
                self._lockfile = None
            raise AuditError(f"cannot open audit chain {self.directory}: {exc}") from exc
        files = audit.segment_files(self.directory)
        prev = audit.ZERO_DIGEST
        if files:
            index, path = files[-1]
            prev = self._recover(index, path)
            self._index = index
        self._prev_digest = prev
        self._start_segment(self._index + 1, prev)
        log.info("audit archive %s: segment %d open", self.directory, self._index)

    def _recover(self, index: int, path: Path) -> bytes:
        """The digest of the chain's last segment; seal it first if a crash left it open."""
        data = path.read_bytes()
        info = audit.parse_segment(path.name, data)
        if info.digest is not None:
            return info.digest
        keep = data[: info.valid_end]
        if info.torn_tail:
            log.warning(
                "audit segment %s: cutting %d bytes of a torn last record (never acknowledged)",
                path.name,
                len(data) - info.valid_end,
            )
        footer = audit.encode_footer_prefix(
            info.records, info.first_received_ns or 0, info.last_received_ns or 0
        )
        digest = hashlib.sha256(keep + footer).digest()
        with open(path, "r+b") as f:
            f.truncate(info.valid_end)
            f.seek(info.valid_end)
            f.write(footer + digest)
            f.flush()
            os.fsync(f.fileno())
        log.info(
            "audit segment %s sealed after an unclean stop (%d records)", path.name, info.records
        )
        return digest

    def _start_segment(self, index: int, prev: bytes) -> None:
        path = self.directory / audit.segment_name(index)
        header = audit.encode_header(index, self._clock(), prev)
        # A file of this index can only be left by a failed earlier attempt: overwrite it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, header)
            os.fsync(fd)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._hash = hashlib.sha256(header)
        self._index = index
        self._size = len(header)
        self._created = self._clock()
        self._records = 0

    def _seal(self) -> None:
        fd = self._fd
        if fd is None:
            return
        footer = audit.encode_footer_prefix(self._records, self._first, self._last)
        digest_hash = self._hash.copy()
        digest_hash.update(footer)
        digest = digest_hash.digest()
        self._append_durably(footer + digest)
        os.close(fd)
        self._fd = None
        self._prev_digest = digest
        log.info("audit segment %d sealed: %d records", self._index, self._records)

    def _append_durably(self, data: bytes) -> None:
        """Write at the end of the open segment and fsync; on failure cut back to the last
        durable size, so that a retry never leaves a half record behind."""
        fd = self._fd
        assert fd is not None
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, self._size)
                os.lseek(fd, self._size, os.SEEK_SET)
            except OSError:
                log.warning("audit segment %d: cannot cut back a failed write", self._index)
            raise
        self._size += len(data)

    def _write(self, chunk: bytes, meta: tuple[int, int, int]) -> None:
        with self._lock:
            if chunk:
                self._unwritten.append((chunk, meta))
            try:
                self._write_unwritten()
            except OSError as exc:
                raise AuditError(f"audit archive {self.directory}: {exc}") from exc

    def _write_unwritten(self) -> None:
        if self._fd is None:
            self._start_segment(self._index + 1, self._prev_digest)
        while self._unwritten:
            chunk, (records, first, last) = self._unwritten[0]
            self._append_durably(chunk)
            self._hash.update(chunk)
            if not self._records:
                self._first = first
            self._records += records
            self._last = last
            self.committed_records += records
            self._unwritten.pop(0)
            if self._size >= self._max_bytes or self._clock() - self._created >= self._max_age_ns:
                self._seal()
                self._start_segment(self._index + 1, self._prev_digest)

    def _close(self) -> None:
        with self._lock:
            try:
                if not self._unwritten:  # never seal over bytes that are not written
                    self._seal()
            finally:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                if self._lockfile is not None:
                    self._lockfile.close()
                    self._lockfile = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def archive_from_config(cfg: IngestConfig) -> AuditArchive | None:
    """The worker's archive chain, or None when ``[audit] directory`` is unset."""
    settings = cfg.audit
    if settings.directory is None:
        return None
    chain = f"{cfg.ingest.primary_host_id}-{cfg.ingest.worker}"
    return AuditArchive(
        settings.directory / chain,
        segment_max_bytes=settings.segment_max_bytes,
        segment_max_age_s=settings.segment_max_age_s,
    )
