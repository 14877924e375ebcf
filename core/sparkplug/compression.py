"""Sparkplug B compressed payloads (the convention of Eclipse Tahu and Ignition).

A compressed message is an ordinary payload whose ``uuid`` is ``SPBV1.0_COMPRESSED``, whose
``body`` is the real payload's protobuf bytes compressed with DEFLATE (zlib stream) or GZIP,
and whose one metric ``algorithm`` (String) names the algorithm. The outer payload repeats the
real payload's ``timestamp`` and ``seq`` so that sequence checking works before decompression.

Derrick compresses historical replays: hundreds of metrics whose timestamps and aliases repeat
compress to well under half their size.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping
from typing import Final, Literal

from core.sparkplug.codec import decode_payload, encode_payload
from core.sparkplug.datatypes import DataType
from core.sparkplug.errors import PayloadDecodeError
from core.sparkplug.model import Metric, Payload

COMPRESSED_UUID: Final = "SPBV1.0_COMPRESSED"
#: Refuse to inflate beyond this: a small message must not become a memory bomb.
MAX_INFLATED_BYTES: Final = 32 * 1024 * 1024

Algorithm = Literal["DEFLATE", "GZIP"]


def compress_payload(
    payload: Payload,
    datatypes: Mapping[int, DataType] | None = None,
    *,
    algorithm: Algorithm = "DEFLATE",
    level: int = 6,
) -> bytes:
    """Encode ``payload`` and wrap it in a compressed Sparkplug payload."""
    inner = encode_payload(payload, datatypes)
    body = zlib.compress(inner, level) if algorithm == "DEFLATE" else gzip.compress(inner, level)
    outer = Payload(
        timestamp=payload.timestamp,
        seq=payload.seq,
        uuid=COMPRESSED_UUID,
        body=body,
        metrics=[Metric(name="algorithm", datatype=DataType.String, value=algorithm)],
    )
    return encode_payload(outer)


def is_compressed(payload: Payload) -> bool:
    return payload.uuid == COMPRESSED_UUID


def decompress_payload(
    payload: Payload, datatypes: Mapping[int, DataType] | None = None
) -> Payload:
    """The real payload inside a compressed one (``payload`` itself when not compressed)."""
    if payload.uuid != COMPRESSED_UUID:
        return payload
    algorithm = next((m.value for m in payload.metrics if m.name == "algorithm"), "DEFLATE")
    body = payload.body or b""
    try:
        if algorithm == "DEFLATE":
            inflater = zlib.decompressobj()
            inner = inflater.decompress(body, MAX_INFLATED_BYTES)
            if inflater.unconsumed_tail:
                raise PayloadDecodeError(
                    f"compressed body inflates beyond {MAX_INFLATED_BYTES} bytes"
                )
        elif algorithm == "GZIP":
            inflater = zlib.decompressobj(wbits=31)
            inner = inflater.decompress(body, MAX_INFLATED_BYTES)
            if inflater.unconsumed_tail:
                raise PayloadDecodeError(
                    f"compressed body inflates beyond {MAX_INFLATED_BYTES} bytes"
                )
        else:
            raise PayloadDecodeError(f"unknown compression algorithm {algorithm!r}")
    except zlib.error as exc:
        raise PayloadDecodeError(f"compressed body does not inflate ({algorithm}): {exc}") from exc
    return decode_payload(inner, datatypes)
