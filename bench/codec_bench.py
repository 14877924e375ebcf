"""Sparkplug codec benchmark: the hot-path message, raw protobuf vs ``core.sparkplug``.

The message is a 100-metric alias-only DDATA as an edge node sends it: aliases 1-100, a
timestamp on every metric, no names, no datatypes on the wire; 60 Double, 25 Int32 (about a
third negative), 15 Boolean. On one core (process CPU time) it measures

* raw protobuf encode / decode: the generated upb classes used directly, the limit any
  codec on them can reach. "decode, full" reads every metric field our decoder reads (name,
  alias, timestamp, datatype, the three flags, the value via WhichOneof, whether properties
  and metadata are present) into a tuple; "decode, minimal" reads alias, timestamp and value.
* ``encode_payload`` from the model (Metric structs) and ``decode_payload`` into the model,
  with the alias -> datatype map a host keeps from the DBIRTH.

Usage: ``python bench/codec_bench.py [--seconds S] [--json]`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine
from google.protobuf import __version__ as protobuf_version
from google.protobuf.internal import api_implementation

from core.sparkplug import DataType, Metric, Payload, decode_payload, encode_payload
from core.sparkplug import sparkplug_b_pb2 as pb

METRICS = 100
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def build_metrics(seed: int = 7) -> tuple[list[Metric], dict[int, DataType]]:
    rng = random.Random(seed)
    metrics: list[Metric] = []
    datatypes: dict[int, DataType] = {}
    for index in range(METRICS):
        alias = index + 1
        value: object
        if index < 60:
            datatype, value = DataType.Double, rng.uniform(-5000.0, 5000.0)
        elif index < 85:
            datatype = DataType.Int32
            value = rng.randint(-100_000, -1) if index % 3 == 0 else rng.randint(0, 100_000)
        else:
            datatype, value = DataType.Boolean, rng.random() < 0.5
        datatypes[alias] = datatype
        metrics.append(Metric(alias=alias, timestamp=T0 + 37 * index, value=value))
    return metrics, datatypes


METRIC_LIST, DATATYPES = build_metrics()
PAYLOAD = Payload(timestamp=T0 + 5000, seq=17, metrics=METRIC_LIST)
# the same data as plain tuples for the raw protobuf encoder
RAW_ROWS = [(m.alias, m.timestamp, DATATYPES[m.alias or 0], m.value) for m in METRIC_LIST]


def raw_encode() -> bytes:
    message = pb.Payload()
    message.timestamp = T0 + 5000
    message.seq = 17
    add = message.metrics.add
    for alias, timestamp, datatype, value in RAW_ROWS:
        metric = add()
        metric.alias = alias
        metric.timestamp = timestamp
        if datatype == DataType.Double:
            metric.double_value = value
        elif datatype == DataType.Int32:
            metric.int_value = value & 0xFFFFFFFF
        else:
            metric.boolean_value = value
    return message.SerializeToString()


def raw_decode_full(data: bytes) -> list[tuple[Any, ...]]:
    message = pb.Payload.FromString(data)
    _ = (message.timestamp, message.seq)
    out = []
    for m in message.metrics:
        which = m.WhichOneof("value")
        out.append(
            (
                m.name,
                m.alias,
                m.timestamp,
                m.datatype,
                m.is_historical,
                m.is_transient,
                m.is_null,
                getattr(m, which) if which else None,
                m.HasField("properties"),
                m.HasField("metadata"),
            )
        )
    return out


def raw_decode_minimal(data: bytes) -> list[tuple[Any, ...]]:
    message = pb.Payload.FromString(data)
    out = []
    for m in message.metrics:
        which = m.WhichOneof("value")
        out.append((m.alias, m.timestamp, getattr(m, which) if which else None))
    return out


def raw_parse(data: bytes) -> object:
    return pb.Payload.FromString(data)


def our_encode() -> bytes:
    return encode_payload(PAYLOAD, DATATYPES)


def our_decode(data: bytes) -> Payload:
    return decode_payload(data, DATATYPES)


def measure(cases: dict[str, Callable[[], object]], seconds: float) -> dict[str, dict[str, float]]:
    """Per-call CPU time of each case.

    The cases are interleaved round by round, so that load from other processes on the machine
    hits them all alike; ``mean_us`` is the best round's mean (the usual timeit convention),
    p50/p99 come from individually timed calls, also interleaved.
    """
    for fn in cases.values():  # warm up
        for _ in range(200):
            fn()
    process_clock = time.process_time_ns
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    deadline = time.monotonic() + seconds * len(cases) / 2
    while time.monotonic() < deadline or len(rounds[next(iter(cases))]) < 5:
        for name, fn in cases.items():
            start = process_clock()
            for _ in range(50):
                fn()
            rounds[name].append((process_clock() - start) / 50)
    wall_clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {name: [] for name in cases}
    deadline = time.monotonic() + seconds * len(cases) / 2
    while time.monotonic() < deadline or len(samples[next(iter(cases))]) < 1000:
        for name, fn in cases.items():
            start = wall_clock()
            fn()
            samples[name].append(wall_clock() - start)
    results = {}
    for name in cases:
        timed = sorted(samples[name])
        results[name] = {
            "mean_us": min(rounds[name]) / 1000,
            "median_round_us": statistics.median(rounds[name]) / 1000,
            "p50_us": timed[len(timed) // 2] / 1000,
            "p99_us": timed[int(len(timed) * 0.99)] / 1000,
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case (default 2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    data = our_encode()
    assert data == raw_encode(), "our encoding must be byte-identical to raw protobuf"
    decoded = our_decode(data)
    assert [m.value for m in decoded.metrics] == [m.value for m in METRIC_LIST]

    cases: dict[str, Callable[[], object]] = {
        "raw protobuf encode": raw_encode,
        "encode_payload": our_encode,
        "raw protobuf parse only": lambda: raw_parse(data),
        "raw protobuf decode, minimal": lambda: raw_decode_minimal(data),
        "raw protobuf decode, full": lambda: raw_decode_full(data),
        "decode_payload": lambda: our_decode(data),
    }
    results = measure(cases, args.seconds)
    for result in results.values():
        result["metrics_per_s"] = METRICS / result["mean_us"] * 1e6
    enc_ratio = results["encode_payload"]["mean_us"] / results["raw protobuf encode"]["mean_us"]
    dec_ratio = (
        results["decode_payload"]["mean_us"] / results["raw protobuf decode, full"]["mean_us"]
    )
    report = {
        "machine": machine(protobuf=f"{protobuf_version} ({api_implementation.Type()})"),
        "date": time.strftime("%Y-%m-%d"),
        "message": f"{METRICS}-metric alias-only DDATA (60 Double, 25 Int32, 15 Boolean)",
        "bytes": len(data),
        "bytes_per_metric": len(data) / METRICS,
        "results": results,
        "encode_vs_raw": enc_ratio,
        "decode_vs_raw_full": dec_ratio,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(" ".join(f"{k}: {v}" for k, v in report["machine"].items()))
    print(f"{report['message']}: {len(data)} bytes, {report['bytes_per_metric']:.2f} B/metric")
    print(f"{'case':<30} {'µs/msg':>8} {'p50 µs':>8} {'p99 µs':>8} {'metrics/s':>12}")
    for name, r in results.items():
        print(
            f"{name:<30} {r['mean_us']:8.1f} {r['p50_us']:8.1f} {r['p99_us']:8.1f}"
            f" {r['metrics_per_s']:12,.0f}"
        )
    print(f"encode_payload / raw encode: {enc_ratio:.2f}x")
    print(f"decode_payload / raw full decode: {dec_ratio:.2f}x")
    print(f"peak RSS: {report['peak_rss_mib']:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
