"""Sparkplug compressed payloads: round trips, sizes, and hostile input."""

from __future__ import annotations

import gzip
import zlib

import pytest

from core.sparkplug import (
    COMPRESSED_UUID,
    DataType,
    Metric,
    Payload,
    PayloadDecodeError,
    compress_payload,
    decode_payload,
    decompress_payload,
    encode_payload,
    is_compressed,
)
from core.sparkplug.compression import MAX_INFLATED_BYTES
from core.sparkplug.session import EdgeNodeSession, MetricDef

TYPES = {a: DataType.Double for a in range(1, 17)}
T0 = 1_800_000_000_000


def replay(n: int = 500) -> Payload:
    return Payload(
        timestamp=T0,
        seq=7,
        batch=99,
        metrics=[
            Metric(alias=1 + i % 16, timestamp=T0 - 3_600_000 + (i // 16) * 320,
                   value=2800.0 + (i * 37 % 101) / 4, is_historical=True)
            for i in range(n)
        ],
    )  # fmt: skip


@pytest.mark.parametrize("algorithm", ["DEFLATE", "GZIP"])
def test_round_trip_keeps_every_metric_and_the_batch(algorithm: str) -> None:
    p = replay()
    wire = compress_payload(p, TYPES, algorithm=algorithm)  # type: ignore[arg-type]
    outer = decode_payload(wire)
    assert outer.uuid == COMPRESSED_UUID and outer.seq == 7 and outer.timestamp == T0
    assert [m.name for m in outer.metrics] == ["algorithm"]
    assert outer.metrics[0].value == algorithm
    assert decompress_payload(outer, TYPES) == decode_payload(encode_payload(p, TYPES), TYPES)


def test_replay_compresses_to_a_fraction() -> None:
    p = replay()
    plain, packed = len(encode_payload(p, TYPES)), len(compress_payload(p, TYPES))
    assert packed < plain / 2, (plain, packed)


def test_an_uncompressed_payload_passes_through() -> None:
    p = decode_payload(encode_payload(replay(3), TYPES), TYPES)
    assert decompress_payload(p, TYPES) is p


@pytest.mark.parametrize(
    ("body", "algorithm", "message"),
    [
        (b"not deflate", "DEFLATE", "does not inflate"),
        (zlib.compress(b"\xff\xff\xff"), "DEFLATE", None),
        (gzip.compress(b"\xff\xff")[:-6], "GZIP", None),
        (zlib.compress(b"\x00" * (MAX_INFLATED_BYTES + 10)), "DEFLATE", "inflates beyond"),
        (b"", "LZMA", "unknown compression algorithm"),
    ],
)
def test_hostile_bodies_are_decode_errors(body: bytes, algorithm: str, message: str | None) -> None:
    outer = Payload(
        uuid=COMPRESSED_UUID,
        body=body,
        metrics=[Metric(name="algorithm", datatype=DataType.String, value=algorithm)],
    )
    with pytest.raises(PayloadDecodeError, match=message):
        decompress_payload(decode_payload(encode_payload(outer)), TYPES)


def test_a_session_compresses_data_only_when_it_pays() -> None:
    """``compress=True`` (the live default) sends a few-metric message plain: DEFLATE's header
    and the wrapper would make it larger; an alarm-rate batch goes compressed and smaller."""
    defs = [MetricDef(a, "dev", f"T{a}", DataType.Double, "bar", True) for a in range(1, 17)]
    s = EdgeNodeSession(group_id="g", edge_node_id="n", metrics=defs, clock=lambda: T0)
    few = [(1, T0, 2800.25, 0), (2, T0, 13.5, 0)]
    many = [(1 + i % 16, T0 + (i // 16) * 20, 2800.0 + (i * 37 % 101) / 4, 0) for i in range(500)]
    plain_few = s.data("dev", few, historical=False)
    sent_few = s.data("dev", few, historical=False, compress=True)
    assert not is_compressed(decode_payload(sent_few.payload))
    assert len(sent_few.payload) == len(plain_few.payload)
    plain_many = s.data("dev", many, historical=False)
    sent_many = s.data("dev", many, historical=False, compress=True)
    outer = decode_payload(sent_many.payload)
    assert is_compressed(outer)
    assert len(sent_many.payload) < len(plain_many.payload) * 0.75
    inner = decompress_payload(outer)
    assert [(m.alias, m.timestamp, m.value) for m in inner.metrics] == [
        (a, t, v) for a, t, v, _ in many
    ]
