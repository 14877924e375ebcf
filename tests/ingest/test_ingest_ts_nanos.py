"""The ``tsNanos`` metric property: the ingest stores a legacy reading at its exact
nanosecond, and dead-letters a property it cannot trust. Pure: edge session → processor."""

from __future__ import annotations

from core import conventions
from core.sparkplug import DataType, Metric, Payload, PropertyValue, encode_payload
from core.sparkplug.session import EdgeNodeSession, MetricDef
from ingest.pipeline import MessageProcessor

NOW_MS = 1_700_100_000_000
T0_NS = 1_700_000_030_123_456_789


def born() -> tuple[EdgeNodeSession, MessageProcessor]:
    session = EdgeNodeSession(
        group_id="s017",
        edge_node_id="s017-a042",
        metrics=[
            MetricDef(1, "", conventions.ACKED_BATCH_METRIC, DataType.UInt64, writable=True),
            MetricDef(7, "daq", "WOB", DataType.Double, "klbf", True),
        ],
        clock=lambda: NOW_MS,
    )
    processor = MessageProcessor(
        primary_host_id="derrick", clock=lambda: NOW_MS, max_payload_bytes=1_000_000
    )
    session.will(0)
    for out in (session.nbirth({1: 0}), session.dbirth("daq", {})):
        assert not processor.process(str(out.topic), out.payload).dead_letters
    return session, processor


def test_ts_nanos_gives_the_exact_nanosecond_and_whole_ms_metrics_are_unchanged() -> None:
    session, processor = born()
    out = session.data(
        "daq",
        [(7, T0_NS // 10**6, 41.7, T0_NS % 10**6), (7, T0_NS // 10**6 + 1, 42.0, 0)],
        historical=True,
        batch=3,
    )
    result = processor.process(str(out.topic), out.payload)
    assert not result.dead_letters
    assert [(r.ts_ms * 10**6 + r.ns, r.value, r.historical) for r in result.numeric] == [
        (T0_NS, 41.7, True),
        (T0_NS - 456_789 + 10**6, 42.0, True),
    ]
    assert result.batches == [3]


def test_a_ts_nanos_of_the_wrong_type_or_range_is_dead_lettered_and_the_rest_stored() -> None:
    _, processor = born()
    bad = [
        PropertyValue(DataType.UInt32, 1_000_000),
        PropertyValue(DataType.String, "5"),
        PropertyValue(DataType.Int64, 5),
    ]
    metrics = [
        Metric(alias=7, timestamp=T0_NS // 10**6, value=float(i), properties={"tsNanos": p})
        for i, p in enumerate(bad)
    ]
    metrics.append(Metric(alias=7, timestamp=T0_NS // 10**6, value=9.0))
    payload = encode_payload(
        Payload(timestamp=NOW_MS, seq=2, metrics=metrics), {7: DataType.Double}
    )
    result = processor.process("spBv1.0/s017/DDATA/s017-a042/daq", payload)
    assert [r.value for r in result.numeric] == [9.0]
    (dead,) = result.dead_letters
    assert dead.reason == "bad-metric"
    assert dead.detail.count("tsNanos") == 3
    assert "metric 0 (WOB): tsNanos UInt32 1000000 is not a UInt32 in 0..999999" in dead.detail
