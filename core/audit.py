"""The audit archive format: append-only segments of raw Sparkplug messages, hash-chained.

One *chain* per ingest worker: a directory of segment files ``<index:012d>.seg``, index 0, 1,
2, … Each segment is::

    header  b"DRKAUDIT" | version u16 | 0 u16 | index u64 | created_ns u64 | prev_digest 32 B
    record* b"R" | body_len u32 | crc32(body) u32 | body
            body = received_ns u64 | topic_len u16 | topic (UTF-8) | payload (raw bytes)
    footer  b"S" | records u64 | first_received_ns u64 | last_received_ns u64 | digest 32 B

(all integers little-endian). ``digest`` is the SHA-256 of every byte of the segment before
it (header, records, and the footer's first 25 bytes). ``prev_digest`` of segment *n* is the
digest of segment *n − 1* (zeros for segment 0): changing, removing or reordering any sealed
segment breaks the chain at that point. A segment without a footer is *open*: only the last
segment of a chain may be, and its records are then checked by their CRCs alone.

The module is pure apart from reading segment files (``verify_chain``, ``iter_records``); the
writer that appends, fsyncs and rotates lives in ``ingest.audit``.

Errors: :class:`AuditFormatError` (a segment that cannot be parsed, with its name and offset).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import msgspec

MAGIC: Final = b"DRKAUDIT"
VERSION: Final = 1
SUFFIX: Final = ".seg"
_HEADER: Final = struct.Struct("<8sHHQQ32s")
_RECORD: Final = struct.Struct("<cII")
_BODY: Final = struct.Struct("<QH")
_FOOTER: Final = struct.Struct("<cQQQ")
HEADER_SIZE: Final = _HEADER.size
FOOTER_SIZE: Final = _FOOTER.size + 32
ZERO_DIGEST: Final = bytes(32)
RECORD_TAG: Final = b"R"
SEAL_TAG: Final = b"S"


class AuditFormatError(Exception):
    """A segment that does not follow the format (names the segment and the byte offset)."""


def segment_name(index: int) -> str:
    return f"{index:012d}{SUFFIX}"


def encode_header(index: int, created_ns: int, prev_digest: bytes) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, 0, index, created_ns, prev_digest)


def encode_record(received_ns: int, topic: str, payload: bytes) -> bytes:
    """One framed record. The per-message cost of the archive is this function."""
    t = topic.encode()
    body = _BODY.pack(received_ns, len(t)) + t + payload
    return _RECORD.pack(RECORD_TAG, len(body), zlib.crc32(body)) + body


def encode_footer_prefix(records: int, first_ns: int, last_ns: int) -> bytes:
    """The footer without its digest (the digest covers these bytes too)."""
    return _FOOTER.pack(SEAL_TAG, records, first_ns, last_ns)


class Record(msgspec.Struct, frozen=True, gc=False):
    received_ns: int
    topic: str
    payload: bytes


class SegmentInfo(msgspec.Struct, frozen=True):
    """What one segment holds, as parsed."""

    name: str
    index: int
    created_ns: int
    prev_digest: bytes
    records: int
    first_received_ns: int | None
    last_received_ns: int | None
    #: The footer's digest (sealed segments); None for an open segment.
    digest: bytes | None
    #: Bytes of whole records after the header (an open segment may end in a torn record).
    valid_end: int
    torn_tail: bool


def parse_segment(name: str, data: bytes, *, records: list[Record] | None = None) -> SegmentInfo:
    """Parse one segment (raises :class:`AuditFormatError`); collect records if asked."""
    if len(data) < HEADER_SIZE:
        raise AuditFormatError(f"{name}: {len(data)} bytes, shorter than a header")
    magic, version, _, index, created_ns, prev = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise AuditFormatError(f"{name}: bad magic {magic!r} at offset 0")
    if version != VERSION:
        raise AuditFormatError(f"{name}: unknown version {version}")
    view = memoryview(data)
    pos = HEADER_SIZE
    count = 0
    first: int | None = None
    last: int | None = None
    while pos < len(data):
        tag = data[pos : pos + 1]
        if tag == SEAL_TAG:
            if len(data) - pos != FOOTER_SIZE:
                raise AuditFormatError(f"{name}: footer at offset {pos} is not the last bytes")
            _, n, f_ns, l_ns = _FOOTER.unpack_from(data, pos)
            digest = bytes(view[pos + _FOOTER.size :])
            if n != count or (count and (f_ns != first or l_ns != last)):
                raise AuditFormatError(f"{name}: footer at offset {pos} disagrees with records")
            actual = hashlib.sha256(view[: pos + _FOOTER.size]).digest()
            if actual != digest:
                raise AuditFormatError(f"{name}: digest mismatch (content changed)")
            return SegmentInfo(
                name, index, created_ns, prev, count, first, last, digest, pos, False
            )
        if tag != RECORD_TAG:
            raise AuditFormatError(f"{name}: bad record tag {tag!r} at offset {pos}")
        if pos + _RECORD.size > len(data):
            break  # torn record header
        _, size, crc = _RECORD.unpack_from(data, pos)
        start = pos + _RECORD.size
        if start + size > len(data):
            break  # torn record body
        body = view[start : start + size]
        if zlib.crc32(body) != crc or size < _BODY.size:
            raise AuditFormatError(f"{name}: record {count} at offset {pos} fails its CRC")
        received, tlen = _BODY.unpack_from(body, 0)
        if records is not None:
            topic = bytes(body[_BODY.size : _BODY.size + tlen]).decode(errors="replace")
            records.append(Record(received, topic, bytes(body[_BODY.size + tlen :])))
        first = received if first is None else first
        last = received
        count += 1
        pos = start + size
    return SegmentInfo(
        name, index, created_ns, prev, count, first, last, None, pos, pos < len(data)
    )


class ChainReport(msgspec.Struct, frozen=True):
    """The outcome of walking one chain: ``ok`` or the first broken or missing segment."""

    directory: str
    ok: bool
    segments: int
    records: int
    #: Name of the first segment that is broken or missing (``None`` when ``ok``).
    first_broken: str | None = None
    reason: str | None = None
    #: The last sealed segment's index and digest (hex): anchor it elsewhere to detect a
    #: removed tail.
    head_index: int | None = None
    head_digest: str | None = None
    open_segment: str | None = None


def segment_files(directory: Path) -> list[tuple[int, Path]]:
    """Segment files of a chain, by the index in their name (other files are ignored)."""
    out: list[tuple[int, Path]] = []
    for p in directory.iterdir():
        if p.suffix == SUFFIX and p.stem.isdigit():
            out.append((int(p.stem), p))
    out.sort()
    return out


def verify_chain(
    directory: Path,
    *,
    anchors: dict[int, str] | None = None,
    since: tuple[int, str] | None = None,
) -> ChainReport:
    """Walk a chain from segment 0: names, indexes, CRCs, digests and the links between them.

    ``anchors`` (index → digest hex recorded elsewhere, e.g. by the nightly job) also catch a
    removed or rewritten tail, which a chain alone cannot show. ``since`` (an anchor verified
    before) starts the walk there: that segment's digest is checked, earlier ones are not read.
    """
    files = segment_files(directory)
    prev = ZERO_DIGEST
    expected = 0
    records = 0
    head: tuple[int, str] | None = None
    open_name: str | None = None
    d = str(directory)

    def broken(name: str, reason: str, n: int) -> ChainReport:
        return ChainReport(d, False, n, records, name, reason, *(head or (None, None)))

    if since is not None:
        index, digest = since
        name = segment_name(index)
        try:
            info = parse_segment(name, (directory / name).read_bytes())
        except FileNotFoundError:
            return broken(name, "anchored segment is missing", 0)
        except AuditFormatError as exc:
            return broken(name, str(exc), 0)
        if info.digest is None or info.digest.hex() != digest:
            return broken(name, "digest differs from its anchor", 0)
        prev, expected, head = info.digest, index + 1, (index, digest)
        files = [(i, p) for i, p in files if i > index]

    for n, (index, path) in enumerate(files):
        name = path.name
        if index != expected:
            return broken(segment_name(expected), f"missing (next present is {name})", n)
        if open_name is not None:
            return broken(open_name, "open (unsealed) segment is not the last one", n)
        try:
            info = parse_segment(name, path.read_bytes())
        except AuditFormatError as exc:
            return broken(name, str(exc), n)
        if info.index != index:
            return broken(name, f"holds segment {info.index} (moved or reordered)", n)
        if info.prev_digest != prev:
            return broken(name, "previous-segment digest does not match (chain broken)", n)
        if info.torn_tail:
            open_name = name
        records += info.records
        if info.digest is None:
            open_name = name
        else:
            prev = info.digest
            head = (index, info.digest.hex())
        expected += 1
    for index, digest in sorted((anchors or {}).items()):
        if index >= expected:
            return broken(segment_name(index), "anchored segment is missing", len(files))
        if head is not None and index <= head[0]:
            data = (directory / segment_name(index)).read_bytes()
            if parse_segment(segment_name(index), data).digest != bytes.fromhex(digest):
                return broken(segment_name(index), "digest differs from its anchor", len(files))
    h_index, h_digest = head or (None, None)
    return ChainReport(d, True, len(files), records, None, None, h_index, h_digest, open_name)


def iter_records(
    directory: Path, *, received_from_ns: int | None = None
) -> Iterator[tuple[SegmentInfo, list[Record]]]:
    """Records of a chain, segment by segment in order; segments that ended before
    ``received_from_ns`` are skipped without parsing records (births are then not seen:
    callers that need them pass ``None``)."""
    for _, path in segment_files(directory):
        data = path.read_bytes()
        if received_from_ns is not None:
            info = parse_segment(path.name, data)
            if info.last_received_ns is not None and info.last_received_ns < received_from_ns:
                continue
        recs: list[Record] = []
        info = parse_segment(path.name, data, records=recs)
        yield info, recs


def chains(root: Path) -> list[Path]:
    """The chain directories under an archive root (one per ingest worker)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and any(segment_files(p)))
