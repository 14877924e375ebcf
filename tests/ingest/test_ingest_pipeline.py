"""The pure half of the Primary Host, in memory: births, aliases, seq, deaths, rows."""

from __future__ import annotations

import pytest

from core import conventions
from core.sparkplug import DataType, Metric, Payload, PropertyValue, encode_payload
from ingest.nodes import NodeState, RebirthLimiter
from ingest.pipeline import MessageProcessor

NOW = 1_800_000_000_000
G, E = "s001", "s001-a001"


def processor() -> MessageProcessor:
    return MessageProcessor(primary_host_id="derrick", clock=lambda: NOW, max_payload_bytes=1 << 20)


def nbirth(bdseq: int, *, acked: int = 0, oldest: int = 0, seq: int = 0) -> bytes:
    return encode_payload(
        Payload(
            timestamp=NOW,
            seq=seq,
            metrics=[
                Metric(name="bdSeq", datatype=DataType.Int64, value=bdseq),
                Metric(name=conventions.REBIRTH_METRIC, datatype=DataType.Boolean, value=False),
                Metric(
                    name=conventions.ACKED_BATCH_METRIC,
                    alias=1,
                    datatype=DataType.UInt64,
                    value=acked,
                ),
                Metric(
                    name=conventions.OLDEST_BATCH_METRIC,
                    alias=2,
                    datatype=DataType.UInt64,
                    value=oldest,
                ),
            ],
        )
    )


def dbirth(seq: int) -> bytes:
    hot = {"engUnit": PropertyValue(DataType.String, "klbf"),
           "hot": PropertyValue(DataType.Boolean, True)}  # fmt: skip
    return encode_payload(
        Payload(
            timestamp=NOW,
            seq=seq,
            metrics=[
                Metric(name="WOB", alias=10, datatype=DataType.Double, value=1.0, properties=hot),
                Metric(name="MODE", alias=11, datatype=DataType.String, value="x"),
                Metric(name="COUNT", alias=12, datatype=DataType.Int32, value=-1),
            ],
        )
    )


def ddata(seq: int, metrics: list[Metric], batch: int | None = None) -> bytes:
    types = {10: DataType.Double, 11: DataType.String, 12: DataType.Int32, 99: DataType.Double}
    return encode_payload(Payload(timestamp=NOW, seq=seq, metrics=metrics, batch=batch), types)


def born() -> MessageProcessor:
    p = processor()
    p.process(f"spBv1.0/{G}/NBIRTH/{E}", nbirth(3, acked=7, oldest=8))
    p.process(f"spBv1.0/{G}/DBIRTH/{E}/daq", dbirth(1))
    return p


def test_births_declare_aliases_units_hot_flags_and_the_ack_frontier() -> None:
    p = processor()
    out = p.process(f"spBv1.0/{G}/NBIRTH/{E}", nbirth(3, acked=7, oldest=8))
    node = out.node
    assert node is not None and node.born and node.bdseq == 3
    assert node.frontier.value == 7 and node.acked_alias == 1
    out = p.process(f"spBv1.0/{G}/DBIRTH/{E}/daq", dbirth(1))
    wob = node.aliases[10]
    assert (wob.device, wob.name, wob.unit, wob.hot) == ("daq", "WOB", "klbf", True)
    assert {(c.metric, c.datatype, c.unit, c.hot) for c in out.catalogue} == {
        ("WOB", "Double", "klbf", True), ("MODE", "String", None, False),
        ("COUNT", "Int32", None, False),
    }  # fmt: skip


def test_frontier_skips_batches_the_node_evicted() -> None:
    p = processor()
    out = p.process(f"spBv1.0/{G}/NBIRTH/{E}", nbirth(0, acked=7, oldest=20))
    assert out.node is not None and out.node.frontier.value == 19


def test_data_becomes_rows_with_types_and_batches() -> None:
    p = born()
    out = p.process(
        f"spBv1.0/{G}/DDATA/{E}/daq",
        ddata(
            2,
            [
                Metric(alias=10, timestamp=NOW - 5, value=41.5),
                Metric(alias=11, timestamp=NOW - 5, value="tripping"),
                Metric(alias=12, timestamp=NOW - 4, value=-12, is_historical=True),
                Metric(alias=10, timestamp=NOW - 3, is_null=True),
            ],
            batch=9,
        ),
    )
    assert not out.dead_letters and out.rebirth is None and out.batches == [9]
    assert [(r.metric, r.value, r.hot, r.historical) for r in out.numeric] == [
        ("WOB", 41.5, True, False), ("COUNT", -12.0, False, True),
    ]  # fmt: skip
    assert [(r.metric, r.value, r.datatype) for r in out.events] == [("MODE", "tripping", "String")]


@pytest.mark.tck(
    "tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline"
)
def test_ndeath_with_the_births_bdseq_takes_the_node_offline_a_stale_one_does_not() -> None:
    p = born()
    stale = encode_payload(
        Payload(metrics=[Metric(name="bdSeq", datatype=DataType.Int64, value=2)])
    )
    out = p.process(f"spBv1.0/{G}/NDEATH/{E}", stale)
    assert out.node is not None and out.node.born
    death = encode_payload(
        Payload(metrics=[Metric(name="bdSeq", datatype=DataType.Int64, value=3)])
    )
    out = p.process(f"spBv1.0/{G}/NDEATH/{E}", death)
    assert out.node is not None and not out.node.born


def test_data_before_birth_asks_for_rebirth_and_is_not_acknowledged() -> None:
    p = processor()
    out = p.process(
        f"spBv1.0/{G}/DDATA/{E}/daq", ddata(1, [Metric(alias=10, timestamp=NOW, value=1.0)], 5)
    )
    assert out.rebirth and out.dead_letters[0].reason == "before-birth" and not out.batches


def test_unknown_alias_asks_for_rebirth_and_holds_back_the_acknowledgement() -> None:
    p = born()
    out = p.process(
        f"spBv1.0/{G}/DDATA/{E}/daq",
        ddata(
            2,
            [
                Metric(alias=10, timestamp=NOW, value=1.0),
                Metric(alias=99, timestamp=NOW, value=2.0),
            ],
            9,
        ),
    )
    assert out.rebirth == "unknown alias" and out.batches == []
    assert [r.value for r in out.numeric] == [1.0]  # the rest is stored (dedup on re-send)


def test_bad_timestamps_and_types_are_dead_lettered_but_the_batch_is_acknowledged() -> None:
    p = born()
    out = p.process(
        f"spBv1.0/{G}/DDATA/{E}/daq",
        ddata(
            2,
            [
                Metric(alias=10, timestamp=1_000, value=1.0),
                Metric(alias=10, timestamp=NOW + 2 * 86_400_000, value=2.0),
                Metric(alias=10, timestamp=NOW, value=3.0),
            ],
            batch=8,
        ),
    )
    assert [r.value for r in out.numeric] == [3.0] and out.batches == [8]
    assert out.dead_letters[0].reason == "bad-metric"
    assert out.dead_letters[0].detail.count("out of range") == 2


def test_metrics_of_another_device_are_not_taken_for_this_one() -> None:
    p = born()
    out = p.process(
        f"spBv1.0/{G}/DDATA/{E}/other", ddata(2, [Metric(alias=10, timestamp=NOW, value=1.0)])
    )
    assert out.rebirth == "unknown alias" and not out.numeric


def test_own_state_and_commands_are_recognised() -> None:
    p = processor()
    assert p.process("spBv1.0/STATE/derrick", b'{"online":false,"timestamp":1}').state is False
    assert p.process("spBv1.0/STATE/other", b'{"online":false,"timestamp":1}').state is None
    assert p.process(f"spBv1.0/{G}/NCMD/{E}", b"\x00\x01").dead_letters == []


def test_rebirth_requests_are_limited_per_node_and_across_the_fleet() -> None:
    limiter = RebirthLimiter(cooldown_ms=30_000, rate_per_s=2)
    a, b, c = (NodeState(G, f"{G}-a00{i}") for i in (1, 2, 3))
    assert limiter.allow(a, 0) and not limiter.allow(a, 1000)  # cooldown per node
    assert limiter.allow(b, 0) and not limiter.allow(c, 0)  # fleet bucket of 2 is empty
    assert limiter.allow(c, 600)  # refilled at 2/s
    assert limiter.allow(a, 31_000) and limiter.throttled == 1


def wob(
    seq: int, batch: int | None, n: int = 1, ts: int = NOW - 5, historical: bool = False
) -> bytes:
    metrics = [
        Metric(alias=10, timestamp=ts + i, value=float(i), is_historical=historical)
        for i in range(n)
    ]
    return ddata(seq, metrics, batch)


def test_node_quota_holds_back_batches_and_dead_letters_unbatched_data() -> None:
    now = [NOW]
    p = MessageProcessor(
        primary_host_id="derrick",
        clock=lambda: now[0],
        max_payload_bytes=1 << 20,
        node_quota=(10.0, 20),
    )
    p.process(f"spBv1.0/{G}/NBIRTH/{E}", nbirth(3, acked=7, oldest=8))
    p.process(f"spBv1.0/{G}/DBIRTH/{E}/daq", dbirth(1))
    topic = f"spBv1.0/{G}/DDATA/{E}/daq"
    ok = p.process(topic, wob(2, 8, n=15))
    assert len(ok.numeric) == 15 and ok.batches == [8] and ok.over_quota == 0
    held = p.process(topic, wob(3, 9, n=10, ts=NOW))  # 5 tokens left: held back
    assert held.numeric == [] and held.batches == [] and held.over_quota == 10
    assert held.dead_letters == []
    unbatched = p.process(topic, wob(4, None, n=10, ts=NOW))
    assert unbatched.numeric == [] and [d.reason for d in unbatched.dead_letters] == ["quota"]
    assert "quota of 10 metrics/s (burst 20)" in unbatched.dead_letters[0].detail
    # the held-back batch comes back as historical (a re-send): not counted, stored
    again = p.process(topic, wob(5, 9, n=10, ts=NOW, historical=True))
    assert len(again.numeric) == 10 and again.batches == [9]
    now[0] += 1000  # 10 more tokens
    # a message larger than the burst passes when the bucket is full, then owes
    now[0] += 10_000
    big = p.process(topic, wob(6, 10, n=50, ts=NOW + 100))
    assert len(big.numeric) == 50
    assert p.process(topic, wob(7, 11, n=1, ts=NOW + 200)).over_quota == 1
