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
)
from core.sparkplug.compression import MAX_INFLATED_BYTES

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
