"""Legacy hand-off import (``edge.legacy``, ``derrick-edge import-legacy``) against real files
and a real SQLite queue: format round trip, every validation error with its line and field
and nothing queued, idempotency, atomicity, the byte cap, a concurrent writer, a large file.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import importlib.util
import json
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from core import conventions
from core.sparkplug import DataType, decode_payload
from core.sparkplug.session import EdgeNodeSession, MetricDef
from edge.__main__ import main
from edge.config import AgentConfig, parse_config
from edge.legacy import BATCH_SAMPLES, FORMAT, HandoffError, import_handoff
from edge.queue import PendingSample, QueueFullError, StoreAndForwardQueue

DOCS = Path(__file__).resolve().parents[2] / "docs"
NOW_NS = 1_700_100_000 * 10**9  # 2023-11-16, the tests' clock
T0 = 1_700_000_030_123_456_789  # 2023-11-14T22:13:50.123456789Z


def config(tmp_path: Path, *, max_bytes: int = 50_000_000) -> AgentConfig:
    return parse_config(
        f"""
[node]
site = "s017"
appliance = "s017-a042"
[mqtt]
servers = [{{host = "127.0.0.1", port = 1883}}]
[queue]
path = "{tmp_path / "queue.db"}"
max_bytes = {max_bytes}
[[devices]]
id = "daq"
sensors = [{{tag = "WOB", unit = "klbf"}}, {{tag = "SPP", unit = "psi", hot = true}}]
[[devices]]
id = "opc"
sensors = [{{tag = "RPM", unit = "rpm"}}]
"""
    )


def header(**changes: Any) -> dict[str, Any]:
    h: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "appliance": "s017-a042",
        "source_version": "v4.2",
        "precision": "ns",
    }
    h.update(changes)
    return h


def reading(tag: str = "WOB", ts_ns: int = T0, value: float = 41.7, **more: Any) -> dict[str, Any]:
    device = "opc" if tag == "RPM" else "daq"
    return {"device": device, "tag": tag, "ts_ns": ts_ns, "value": value, **more}


def write(path: Path, lines: list[Any], *, end: bool = True) -> Path:
    """Objects become JSON lines, strings are written as they are."""
    out = [json.dumps(x) if not isinstance(x, str) else x for x in lines]
    if end:
        out.append(json.dumps({"end": FORMAT, "readings": len(lines) - 1}))
    path.write_text("".join(f"{line}\n" for line in out), encoding="utf-8")
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> AgentConfig:
    return config(tmp_path)


@pytest.fixture
def queue(cfg: AgentConfig) -> Iterator[StoreAndForwardQueue]:
    q = StoreAndForwardQueue(cfg.queue.path, max_bytes=cfg.queue.max_bytes)
    q.open()
    yield q
    q.close()


def queued(q: StoreAndForwardQueue) -> list[tuple[str, str, int, float, bool]]:
    """Every queued reading as (device, tag, exact ts ns, value, historical)."""
    rows = q.db.execute(
        "SELECT m.device, m.name, s.ts_ms * 1000000 + s.ns, s.value, b.historical "
        "FROM sample s JOIN batch b ON b.id = s.batch JOIN metric m ON m.id = s.metric "
        "ORDER BY s.rowid"
    )
    return [(d, n, int(t), float(v), bool(h)) for d, n, t, v, h in rows]


def nothing_queued(q: StoreAndForwardQueue) -> bool:
    counts = [q.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("sample", "batch")]
    with contextlib.suppress(sqlite3.OperationalError):  # never created: nothing imported
        counts.append(q.db.execute("SELECT count(*) FROM handoff").fetchone()[0])
    return not any(counts)


# -- round trip ---------------------------------------------------------------------------


def test_readings_are_queued_historical_with_exact_timestamps_values_and_counts(
    tmp_path: Path, cfg: AgentConfig, queue: StoreAndForwardQueue
) -> None:
    readings = [
        reading("WOB", T0, 41.7),
        reading("SPP", T0, 2049.0, unit="psi"),
        reading("RPM", T0 + 1, 120),
        reading("WOB", T0 + 999_999, -0.0),
        reading("WOB", T0 - 123_456_789 + 10**9, 1e-300),
    ]
    path = write(tmp_path / "h.jsonl", [header(), *readings])
    result = import_handoff(path, cfg, queue, now_ns=NOW_NS)

    assert (result.readings, result.batches, result.already_imported) == (5, 2, False)
    assert result.by_device == {"daq": 4, "opc": 1}
    assert (result.first_ts_ns, result.last_ts_ns) == (T0, T0 - 123_456_789 + 10**9)
    assert (result.source_version, result.precision) == ("v4.2", "ns")
    expected = sorted(
        (r["device"], r["tag"], r["ts_ns"], float(r["value"]), True) for r in readings
    )
    assert sorted(queued(queue)) == expected
    # The batches the agent will replay: historical, one device each, ns kept per sample.
    batches = queue.due(now_ms=NOW_NS // 10**6, resend_after_ms=1000, max_samples=10_000)
    assert [(b.device, b.historical, len(b.samples)) for b in batches] == [
        ("daq", True, 4),
        ("opc", True, 1),
    ]
    assert [s.ns for s in batches[0].samples] == [456_789, 456_789, 456_789 + 999_999 - 10**6, 0]
    assert queue.metrics()[0][1:3] == ("daq", "WOB")  # registered like the agent registers


def test_the_documented_example_imports(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    q = StoreAndForwardQueue(cfg.queue.path, max_bytes=cfg.queue.max_bytes)
    q.open()
    try:
        result = import_handoff(
            DOCS / "examples" / "legacy-handoff-v4.jsonl", cfg, q, now_ns=NOW_NS
        )
        assert result.readings == 3
        assert queued(q)[0] == ("daq", "WOB", 1_700_000_030_123_456_789, 41.7, True)
    finally:
        q.close()


def load_writer() -> ModuleType:
    path = DOCS / "examples" / "legacy_handoff_writer.py"
    spec = importlib.util.spec_from_file_location("legacy_handoff_writer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_writer_is_python35_syntax() -> None:
    source = (DOCS / "examples" / "legacy_handoff_writer.py").read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 5))  # f-strings or annotations would fail here


@pytest.mark.parametrize("compress", [False, True])
def test_reference_writer_round_trips_every_legacy_precision(
    tmp_path: Path, compress: bool
) -> None:
    w = load_writer()
    cfg = config(tmp_path)
    cases = [  # (source version, precision, legacy timestamp → ts_ns, value, expected ts_ns)
        ("v1.4", "s", w.ts_ns_from_seconds(1700000030), w.v1_value(4123, 0.5, -12.5)),
        ("v2.3", "ms", w.ts_ns_from_real_seconds(1700000030.123), 41.7),
        ("v3.1", "ms", w.ts_ns_from_ms(1700000030123), 41.7),
        ("v4.2", "ns", 1700000030123456789, 41.7),
    ]
    expected_ts = [1_700_000_030 * 10**9, T0 - 456_789, T0 - 456_789, T0]
    q = StoreAndForwardQueue(cfg.queue.path, max_bytes=cfg.queue.max_bytes)
    q.open()
    try:
        for (version, precision, ts_ns, value), want in zip(cases, expected_ts, strict=True):
            path = str(tmp_path / f"{version}.jsonl")
            with w.HandoffWriter(path, "s017-a042", version, precision, compress) as out:
                out.add("daq", "SPP", ts_ns, value, "psi")
            assert not Path(path + ".tmp").exists()
            result = import_handoff(Path(path), cfg, q, now_ns=NOW_NS)
            assert (result.readings, result.precision) == (1, precision)
            assert queued(q)[-1] == ("daq", "SPP", want, float(value), True)
        assert queued(q)[0][3] == 2049.0  # 4123 × 0.5 − 12.5
    finally:
        q.close()


# -- validation: every error names its line and field, and nothing is queued -------------

RAW = '{{"device": "daq", "tag": "WOB", "ts_ns": %d, "value": {value}}}' % T0  # noqa: UP031
BAD_CASES: list[tuple[str, list[Any], bool, str]] = [
    # (id, lines after the header unless the header is replaced, add end line, expected)
    ("wrong-appliance", [header(appliance="s017-a043"), reading()], True,
     "line 1: appliance 's017-a043' is not this agent's ('s017-a042') - at `$.appliance`"),
    ("wrong-format", [header(format="cdd-export"), reading()], True, "line 1: format 'cdd-export'"),
    ("future-version", [header(version=2, extra=1), reading()], True,
     "line 1: format version 2 is not supported"),
    ("unknown-header-field", [header(site="s017"), reading()], True,
     "line 1: Object contains unknown field `site`"),
    ("bad-precision", [header(precision="us"), reading()], True, "line 1: Invalid enum value 'us'"),
    ("bad-source-version", [header(source_version="2.3"), reading()], True,
     "line 1: Expected `str` matching regex"),
    ("header-not-json", ["format=derrick", reading()], True,
     "line 1: not a derrick-legacy-handoff"),
    ("unknown-tag", [header(), reading(), reading(tag="HKLD")], True,
     "line 3: tag 'HKLD' is not a sensor of device 'daq' - at `$.tag`"),
    ("tag-of-other-device", [header(), {**reading(), "device": "opc"}], True,
     "line 2: tag 'WOB' is not a sensor of device 'opc' - at `$.tag`"),
    ("unknown-device", [header(), {**reading(), "device": "plc"}], True,
     "line 2: device 'plc' is not configured (daq, opc) - at `$.device`"),
    ("wrong-unit", [header(), reading(unit="t")], True,
     "line 2: unit 't' of WOB is not 'klbf' - at `$.unit`"),
    ("ts-before-2000", [header(), reading(ts_ns=946_684_799 * 10**9)], True,
     "line 2: timestamp 946684799000000000 ns is before 2000-01-01 or more than a day ahead"
     " - at `$.ts_ns`"),
    ("ts-in-future", [header(), reading(ts_ns=NOW_NS + 86_401 * 10**9)], True, "- at `$.ts_ns`"),
    ("ts-finer-than-precision", [header(precision="ms"), reading(ts_ns=T0)], True,
     "line 2: timestamp 1700000030123456789 ns is finer than the header's precision 'ms'"),
    ("ts-float", [header(), reading(ts_ns=1.7e18)], True,
     "line 2: Expected `int`, got `float` - at `$.ts_ns`"),
    ("ts-missing", [header(), {"device": "daq", "tag": "WOB", "value": 1.0}], True,
     "line 2: Object missing required field `ts_ns`"),
    ("value-infinite", [header(), RAW.format(value="1e999")],
     True, "line 2: Number out of range - at `$.value`"),
    ("value-nan-literal", [header(), RAW.format(value="NaN")],
     True, "line 2: malformed JSON"),
    ("value-string", [header(), reading(value="41.7")], True,
     "line 2: Expected `float`, got `str` - at `$.value`"),
    ("value-bool", [header(), reading(value=True)], True,
     "line 2: Expected `float`, got `bool` - at `$.value`"),
    ("malformed-json", [header(), reading(), '{"device": "daq", "tag": "WOB", "ts_ns": 17'], True,
     "line 3: malformed JSON"),
    ("empty-line", [header(), reading(), ""], True, "line 3: malformed JSON"),
    ("unknown-field", [header(), reading(quality=192)], True,
     "line 2: Object contains unknown field `quality`"),
    ("missing-end-line", [header(), reading(), reading()], False,
     "line 3: not the end line {'end': 'derrick-legacy-handoff', 'readings': N} "
     "(is the file truncated?)"),
    ("header-only", [header()], False, "line 2: missing end line (is the file truncated?)"),
    ("wrong-count", [header(), reading(), '{"end": "derrick-legacy-handoff", "readings": 2}'],
     False, "line 3: end line says 2 readings, the file has 1 - at `$.readings`"),
    ("empty-file", [], False, "line 1: empty file"),
    ("line-too-long", [header(), reading(device="daq" + " " * 5000)], True,
     "line 2: longer than 4096 bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "end", "expected"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_invalid_file_is_rejected_naming_line_and_field_and_nothing_is_queued(
    tmp_path: Path,
    cfg: AgentConfig,
    queue: StoreAndForwardQueue,
    lines: list[Any],
    end: bool,
    expected: str,
) -> None:
    path = write(tmp_path / "h.jsonl", lines, end=end)
    with pytest.raises(HandoffError) as caught:
        import_handoff(path, cfg, queue, now_ns=NOW_NS)
    assert expected in caught.value.problems[0], caught.value.problems
    assert str(path) in str(caught.value)
    assert nothing_queued(queue)


def test_every_bad_line_is_reported_not_only_the_first(
    tmp_path: Path, cfg: AgentConfig, queue: StoreAndForwardQueue
) -> None:
    lines = [header(), *[reading(ts_ns=T0 + i) for i in range(100)]]
    lines[10] = reading(tag="TQ")
    lines[20] = reading(value="x")
    lines += [reading(unit="lbf")] * 30
    with pytest.raises(HandoffError) as caught:
        import_handoff(write(tmp_path / "h.jsonl", lines), cfg, queue, now_ns=NOW_NS)
    assert caught.value.invalid_lines == 32
    assert len(caught.value.problems) == 20  # listed; all are counted
    assert caught.value.problems[:2] == [
        "line 11: tag 'TQ' is not a sensor of device 'daq' - at `$.tag`",
        "line 21: Expected `float`, got `str` - at `$.value`",
    ]
    assert "and 12 more" in str(caught.value)
    assert nothing_queued(queue)


def test_a_bad_line_after_several_batches_queues_nothing(
    tmp_path: Path, cfg: AgentConfig, queue: StoreAndForwardQueue
) -> None:
    n = 3 * BATCH_SAMPLES
    lines: list[Any] = [header(), *(reading(ts_ns=T0 + i) for i in range(n)), reading(value="x")]
    with pytest.raises(HandoffError, match=f"line {n + 2}: "):
        import_handoff(write(tmp_path / "h.jsonl", lines), cfg, queue, now_ns=NOW_NS)
    assert nothing_queued(queue)


def test_a_truncated_gzip_file_is_rejected(
    tmp_path: Path, cfg: AgentConfig, queue: StoreAndForwardQueue
) -> None:
    plain = write(tmp_path / "h.jsonl", [header(), *(reading(ts_ns=T0 + i) for i in range(500))])
    packed = gzip.compress(plain.read_bytes())
    cut = tmp_path / "h.jsonl.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(HandoffError, match=r"corrupt gzip data|truncated"):
        import_handoff(cut, cfg, queue, now_ns=NOW_NS)
    assert nothing_queued(queue)


# -- once, all or nothing, never evicting ----------------------------------------------------


def test_importing_the_same_content_twice_queues_it_once(
    tmp_path: Path, cfg: AgentConfig, queue: StoreAndForwardQueue
) -> None:
    path = write(tmp_path / "h.jsonl", [header(), reading(), reading("RPM", T0 + 5, 99.0)])
    first = import_handoff(path, cfg, queue, now_ns=NOW_NS)
    again = import_handoff(path, cfg, queue, now_ns=NOW_NS + 10**9)
    zipped = tmp_path / "h.jsonl.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    third = import_handoff(zipped, cfg, queue, now_ns=NOW_NS + 2 * 10**9)
    assert not first.already_imported
    assert again.already_imported and third.already_imported
    assert again.sha256 == third.sha256 == first.sha256
    assert (again.readings, again.imported_ms) == (2, NOW_NS // 10**6)
    assert len(queued(queue)) == 2
    # Even after the agent sent and the host acknowledged them, they are not queued again.
    queue.ack(queue.stats().newest_batch or 0)
    assert import_handoff(path, cfg, queue, now_ns=NOW_NS).already_imported
    assert queued(queue) == []


def test_an_import_that_would_exceed_the_cap_rolls_back_and_evicts_nothing(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    q = StoreAndForwardQueue(cfg.queue.path, max_bytes=200_000)
    q.open()
    try:
        alias = q.register_metric("daq", "WOB", int(DataType.Double))
        q.commit({"daq": [PendingSample(alias, T0 // 10**6, 1.0)]}, now_ms=NOW_NS // 10**6)
        lines = [header(), *(reading(ts_ns=T0 + i, value=i / 7) for i in range(8000))]
        with pytest.raises(QueueFullError, match="cap of 200000 bytes"):
            import_handoff(write(tmp_path / "h.jsonl", lines), cfg, q, now_ns=NOW_NS)
        assert queued(q) == [("daq", "WOB", T0 - 456_789, 1.0, False)]  # the live one stays
        assert q.stats().evicted_samples == 0
        assert q.db.execute("SELECT count(*) FROM handoff").fetchone()[0] == 0
    finally:
        q.close()


def test_import_waits_for_a_running_agents_transaction(
    tmp_path: Path, cfg: AgentConfig, queue: StoreAndForwardQueue
) -> None:
    """The agent and the import are two writers of one WAL database: neither fails."""
    agent_queue = StoreAndForwardQueue(cfg.queue.path, max_bytes=cfg.queue.max_bytes)
    agent_queue.open()
    alias = agent_queue.register_metric("daq", "WOB", int(DataType.Double))
    in_txn = threading.Event()

    def agent_commit() -> None:
        with agent_queue.transaction():
            agent_queue.commit({"daq": [PendingSample(alias, NOW_NS // 10**6, 1.5)]}, now_ms=1)
            in_txn.set()
            time.sleep(0.5)

    worker = threading.Thread(target=agent_commit)
    worker.start()
    try:
        assert in_txn.wait(5)
        path = write(tmp_path / "h.jsonl", [header(), reading()])
        started = time.monotonic()
        result = import_handoff(path, cfg, queue, now_ns=NOW_NS)
        waited = time.monotonic() - started
    finally:
        worker.join()
        agent_queue.close()
    assert result.readings == 1 and waited >= 0.3
    assert sorted(r[4] for r in queued(queue)) == [False, True]


# -- the command ----------------------------------------------------------------------------


def write_config(tmp_path: Path) -> Path:
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f"""
[node]
site = "s017"
appliance = "s017-a042"
[mqtt]
servers = [{{host = "127.0.0.1", port = 1883}}]
password_file = "{tmp_path / "not-there"}"
[queue]
path = "{tmp_path / "queue.db"}"
[[devices]]
id = "daq"
sensors = [{{tag = "WOB", unit = "klbf"}}, {{tag = "SPP", unit = "psi"}}]
""",
        encoding="utf-8",
    )
    return toml


def test_command_exit_codes_and_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = write_config(tmp_path)
    now = time.time_ns()
    good = write(tmp_path / "good.jsonl", [header(), reading(ts_ns=now - 10**9 - now % 10**9)])
    bad = write(tmp_path / "bad.jsonl", [header(), reading(tag="GAS")])

    assert main(["import-legacy", "--config", str(toml), str(good)]) == 0
    out = capsys.readouterr().out
    assert "imported 1 readings (daq 1) from v4.2 at precision ns in 1 historical batch" in out
    assert main(["import-legacy", "--config", str(toml), str(good)]) == 0
    assert "already imported (1 readings" in capsys.readouterr().out
    assert main(["import-legacy", "--config", str(toml), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "nothing queued" in err and "line 2: tag 'GAS'" in err
    assert main(["import-legacy", "--config", str(toml), str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "queue.db").unlink()
    (tmp_path / "queue.db").mkdir()  # the queue cannot be opened
    assert main(["import-legacy", "--config", str(toml), str(good)]) == 1
    assert "cannot import" in capsys.readouterr().err


# -- on the wire: tsNanos ----------------------------------------------------------------------


def test_data_messages_carry_the_sub_millisecond_part_as_ts_nanos() -> None:
    session = EdgeNodeSession(
        group_id="s017",
        edge_node_id="s017-a042",
        metrics=[MetricDef(7, "daq", "WOB", DataType.Double, "klbf")],
        clock=lambda: NOW_NS // 10**6,
    )
    out = session.data(
        "daq", [(7, T0 // 10**6, 41.7, T0 % 10**6), (7, T0 // 10**6, 1.0, 0)], historical=True
    )
    metrics = decode_payload(out.payload, {7: DataType.Double}).metrics
    assert metrics[0].timestamp == 1_700_000_030_123
    assert metrics[0].properties is not None
    prop = metrics[0].properties[conventions.PROP_TS_NANOS]
    assert (prop.type, prop.value) == (DataType.UInt32, 456_789)
    assert metrics[1].properties is None  # whole milliseconds: the metric is unchanged
    assert all(m.is_historical for m in metrics)
    with pytest.raises(ValueError, match=r"outside 0\.\.999999"):
        session.data("daq", [(7, 1, 1.0, 10**6)], historical=True)


# -- large ------------------------------------------------------------------------------------


def write_big(path: Path, n: int) -> Path:
    tags = ("WOB", "SPP", "RPM")
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps(header()) + "\n")
        for i in range(n):
            tag = tags[i % 3]
            device = "opc" if tag == "RPM" else "daq"
            f.write(
                f'{{"device":"{device}","tag":"{tag}","ts_ns":{T0 + i * 1_000_001},'
                f'"value":{i / 3!r}}}\n'
            )
        f.write(json.dumps({"end": FORMAT, "readings": n}) + "\n")
    return path


@pytest.mark.slow
def test_large_import(tmp_path: Path, cfg: AgentConfig, queue: StoreAndForwardQueue) -> None:
    n = 200_000
    path = write_big(tmp_path / "big.jsonl", n)
    started = time.perf_counter()
    result = import_handoff(path, cfg, queue, now_ns=NOW_NS)
    elapsed = time.perf_counter() - started
    print(
        f"\nimported {n} readings ({path.stat().st_size / 1e6:.1f} MB file, read twice) in "
        f"{elapsed:.2f} s ({n / elapsed:,.0f} readings/s), {result.batches} batches"
    )
    assert result.readings == n
    assert result.batches == 27 + 14  # ⌈133,334 / 5000⌉ daq + ⌈66,666 / 5000⌉ opc
    count, exact = queue.db.execute(
        "SELECT count(*), sum(ts_ms * 1000000 + ns = ?) FROM sample", (T0 + 7 * 1_000_001,)
    ).fetchone()
    assert (count, exact) == (n, 1)


def test_import_memory_is_bounded_by_the_batch_not_the_file(
    tmp_path: Path, cfg: AgentConfig, queue: StoreAndForwardQueue
) -> None:
    n = 50_000
    path = write_big(tmp_path / "big.jsonl", n)
    tracemalloc.start()
    try:
        result = import_handoff(path, cfg, queue, now_ns=NOW_NS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = path.stat().st_size
    print(f"\n{n} readings, {size / 1e6:.1f} MB file: peak Python memory {peak / 1e6:.2f} MB")
    assert result.readings == n
    # Two open batches of 5000 and one committed batch; holding every reading would take
    # more than the file's size.
    assert peak < 3_000_000 < size
