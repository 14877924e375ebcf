"""The audit archive's hash chain: every kind of tampering is found, with the first broken
segment named; a crash leaves a chain that verifies and that the writer seals on restart.

The chains are written by the real writer (``ingest.audit.AuditArchive``) in a temp dir;
``python -m cold verify`` is run in-process on them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cold.__main__ import main as cold_main
from core import audit
from ingest.audit import AuditArchive

MESSAGES = [
    (f"spBv1.0/s001/DDATA/s001-a{i % 3:03d}/daq", bytes([i % 256]) * (20 + i)) for i in range(300)
]


def write_chain(
    directory: Path, messages: list[tuple[str, bytes]], *, commit_every: int = 10
) -> None:
    async def go() -> None:
        archive = AuditArchive(directory, segment_max_bytes=4096)
        await archive.open()
        for n, (topic, payload) in enumerate(messages, start=1):
            archive.append(topic, payload)
            if n % commit_every == 0:
                await archive.commit()
        await archive.close()

    asyncio.run(go())


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    directory = tmp_path / "audit" / "derrick-w0"
    write_chain(directory, MESSAGES)
    return directory


def records(directory: Path) -> list[tuple[str, bytes]]:
    return [(r.topic, r.payload) for _, recs in audit.iter_records(directory) for r in recs]


def test_an_intact_chain_verifies_and_holds_every_message_raw(
    chain: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = audit.verify_chain(chain)
    assert report.ok, report
    assert report.segments > 5  # small segments: the chain has many links
    assert report.records == len(MESSAGES)
    assert records(chain) == MESSAGES
    assert cold_main(["verify", "--archive", str(chain.parent)]) == 0
    assert "derrick-w0: ok" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["record", "header", "footer"])
def test_a_tampered_byte_names_its_segment(
    chain: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = chain / audit.segment_name(3)
    data = bytearray(victim.read_bytes())
    offset = {"record": audit.HEADER_SIZE + 20, "header": 30, "footer": len(data) - 5}[where]
    data[offset] ^= 0x01
    victim.write_bytes(bytes(data))
    report = audit.verify_chain(chain)
    assert not report.ok
    assert report.first_broken == audit.segment_name(3), report
    assert cold_main(["verify", "--archive", str(chain.parent)]) == 1
    assert f"BROKEN at {audit.segment_name(3)}" in capsys.readouterr().out


def test_a_deleted_segment_is_named_missing(chain: Path) -> None:
    (chain / audit.segment_name(4)).unlink()
    report = audit.verify_chain(chain)
    assert not report.ok
    assert report.first_broken == audit.segment_name(4)
    assert report.reason is not None and "missing" in report.reason


def test_a_deleted_first_segment_is_named_missing(chain: Path) -> None:
    (chain / audit.segment_name(0)).unlink()
    report = audit.verify_chain(chain)
    assert (report.ok, report.first_broken) == (False, audit.segment_name(0))


def test_two_reordered_segments_are_found_at_the_first(chain: Path) -> None:
    a, b = chain / audit.segment_name(2), chain / audit.segment_name(5)
    tmp = chain / "swap"
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)
    report = audit.verify_chain(chain)
    assert not report.ok
    assert report.first_broken == audit.segment_name(2)
    assert report.reason is not None and "holds segment 5" in report.reason


def test_reordered_contents_with_rewritten_indexes_still_break_the_chain(chain: Path) -> None:
    """Even a forger who swaps two segments and fixes their index fields cannot re-link
    them without rewriting every later digest."""
    a, b = chain / audit.segment_name(2), chain / audit.segment_name(3)
    da, db = bytearray(a.read_bytes()), bytearray(b.read_bytes())
    da[12:20], db[12:20] = db[12:20], da[12:20]  # the index fields
    a.write_bytes(bytes(db))
    b.write_bytes(bytes(da))
    report = audit.verify_chain(chain)
    assert (report.ok, report.first_broken) == (False, audit.segment_name(2))


def test_a_removed_tail_is_found_only_with_an_anchor(chain: Path, tmp_path: Path) -> None:
    report = audit.verify_chain(chain)
    assert report.ok and report.head_index is not None and report.head_digest is not None
    anchors = {chain.name: {str(report.head_index): report.head_digest}}
    (chain / audit.segment_name(report.head_index)).unlink()
    assert audit.verify_chain(chain).ok  # the chain alone cannot tell
    anchor_file = tmp_path / "anchors.json"
    anchor_file.write_text(json.dumps(anchors))
    assert cold_main(["verify", "--archive", str(chain.parent), "--anchors", str(anchor_file)]) == 1


def test_a_crash_leaves_an_open_segment_that_verifies_and_is_sealed_on_restart(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "chain"

    # A real crash: a child process commits 50 messages, buffers one more, and dies.
    script = f"""
import asyncio, os, sys
from pathlib import Path
from ingest.audit import AuditArchive
async def go():
    archive = AuditArchive(Path({str(directory)!r}))
    await archive.open()
    for i in range(50):
        archive.append({MESSAGES[0][0]!r}, bytes([i % 256]) * (20 + i))
    await archive.commit()
    archive.append("spBv1.0/s001/DDATA/x/daq", b"never committed")
    os._exit(9)
asyncio.run(go())
"""
    done = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert done.returncode == 9
    last = audit.segment_files(directory)[-1][1]
    with open(last, "ab") as f:
        f.write(audit.encode_record(1, "torn", b"half a record")[:15])  # a torn write
    report = audit.verify_chain(directory)
    assert report.ok and report.open_segment == last.name
    write_chain(directory, MESSAGES[50:60])  # restart: seals the open segment, goes on
    report = audit.verify_chain(directory)
    assert report.ok and report.open_segment is None, report
    expected = [(MESSAGES[0][0], bytes([i % 256]) * (20 + i)) for i in range(50)]
    assert records(directory) == expected + MESSAGES[50:60]


def test_a_second_writer_on_the_same_chain_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        first = AuditArchive(tmp_path / "c")
        await first.open()
        second = AuditArchive(tmp_path / "c")
        with pytest.raises(Exception, match="cannot open audit chain"):
            await second.open()
        await second.close()
        await first.close()

    asyncio.run(go())
    shutil.rmtree(tmp_path / "c")


def test_verify_since_an_anchor_reads_only_the_new_segments(chain: Path) -> None:
    full = audit.verify_chain(chain)
    assert full.head_index is not None and full.head_index > 4
    data = (chain / audit.segment_name(2)).read_bytes()
    anchor = (2, audit.parse_segment("x", data).digest.hex())  # type: ignore[union-attr]
    assert audit.verify_chain(chain, since=anchor).ok
    assert not audit.verify_chain(chain, since=(2, "00" * 32)).ok  # anchor does not match
    victim = chain / audit.segment_name(4)
    damaged = bytearray(victim.read_bytes())
    damaged[audit.HEADER_SIZE + 12] ^= 0xFF
    victim.write_bytes(bytes(damaged))
    report = audit.verify_chain(chain, since=anchor)
    assert (report.ok, report.first_broken) == (False, audit.segment_name(4))


def test_the_nightly_audit_step_records_heads_that_catch_a_removed_tail(
    chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cold.config import parse_config  # noqa: PLC0415
    from cold.nightly import NightlyJob  # noqa: PLC0415
    from cold.questdb import ColdError  # noqa: PLC0415

    config = tmp_path / "cold.toml"
    config.write_text(
        f'[archive]\naudit_directory = "{chain.parent}"\nparquet_uri = "{tmp_path / "pq"}"\n'
        f'[nightly]\nstate_directory = "{tmp_path / "state"}"\n'
    )
    job = NightlyJob(parse_config(config.read_text()), None)  # the audit step needs no QuestDB
    detail = job._step_audit(None)  # type: ignore[arg-type]
    head = audit.verify_chain(chain).head_index
    assert head is not None
    assert detail == f"derrick-w0: 300 records, head {head}"
    (chain / audit.segment_name(head)).unlink()  # the tail goes: the chain alone looks fine
    assert audit.verify_chain(chain).ok
    assert cold_main(["verify", "--config", str(config)]) == 1  # the recorded head is missing
    assert "anchored segment is missing" in capsys.readouterr().out
    with pytest.raises(ColdError, match="anchored segment is missing"):
        job._step_audit(None)  # type: ignore[arg-type]
