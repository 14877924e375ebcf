"""Sparkplug payload codec: property-based round trips over every datatype and structure."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from google.protobuf.internal import api_implementation
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.sparkplug import (
    DataSet,
    DataType,
    MetaData,
    Metric,
    Payload,
    PropertyValue,
    Template,
    TemplateParameter,
    ValueKind,
    decode_payload,
    encode_payload,
)
from core.sparkplug import sparkplug_b_pb2 as pb

REPO_ROOT = Path(__file__).resolve().parents[2]
D = DataType
T0 = 1_767_225_600_000
FAST = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)

# -- value strategies per datatype ---------------------------------------------------------


def _ints(datatype: DataType) -> st.SearchStrategy[int]:
    lo, hi = datatype.integer_range
    return st.one_of(st.sampled_from([lo, hi, 0, -1 if lo else 1]), st.integers(lo, hi))


_text = st.text(max_size=12)
SCALARS: dict[DataType, st.SearchStrategy[Any]] = {
    **{dt: _ints(dt) for dt in DataType if dt.is_integer},
    D.Float: st.floats(width=32),
    D.Double: st.floats(),
    D.Boolean: st.booleans(),
    D.String: _text,
    D.Text: _text,
    D.UUID: st.uuids().map(str),
    D.DateTime: st.integers(0, 2**64 - 1),
    D.Bytes: st.binary(max_size=40),
    D.File: st.binary(max_size=40),
}
BASIC = {dt: s for dt, s in SCALARS.items() if dt.is_basic}
ELEMENTS: dict[DataType, st.SearchStrategy[Any]] = {
    **{dt: SCALARS[dt.element_type] for dt in DataType if dt.is_array},
    D.StringArray: st.text(alphabet=st.characters(blacklist_characters="\x00", codec="utf-8")),
    D.DateTimeArray: st.integers(-(2**63), 2**63 - 1),
}
ARRAYS = {dt: st.lists(s, max_size=20) for dt, s in ELEMENTS.items()}

# three fixed values per basic type: minimum, maximum (or odd cases), something in between
SAMPLES: dict[DataType, list[Any]] = {
    **{dt: [*dt.integer_range, 1] for dt in DataType if dt.is_integer},
    D.Float: [-3.4028234663852886e38, 0.5, math.inf],
    D.Double: [-0.0, 1e308, 2.5],
    D.Boolean: [True, False, True],
    D.String: ["", "WOB", "Bohrmeißel ⛏"],
    D.Text: ["a\nb", "", "z"],
    D.DateTime: [0, T0, 2**64 - 1],
}
ARRAY_SAMPLES = {dt: SAMPLES[dt.element_type] for dt in ELEMENTS}
ARRAY_SAMPLES[D.DateTimeArray] = [-(2**63), T0, 2**63 - 1]
ARRAY_SAMPLES[D.StringArray] = ["", "WOB", "Bohrmeißel ⛏"]


@st.composite
def datasets(draw: st.DrawFn) -> DataSet:
    types = draw(st.lists(st.sampled_from(list(BASIC)), max_size=5))
    columns = [f"c{i}" for i in range(len(types))]
    rows = draw(st.lists(st.tuples(*(st.none() | BASIC[t] for t in types)).map(list), max_size=4))
    return DataSet(columns, types, rows)


def property_sets(depth: int = 2) -> st.SearchStrategy[dict[str, PropertyValue]]:
    basic = st.sampled_from(list(BASIC)).flatmap(
        lambda t: st.builds(PropertyValue, st.just(t), BASIC[t])
    )
    nulls = st.sampled_from(list(BASIC)).map(lambda t: PropertyValue(t, None, is_null=True))
    values = basic | nulls
    if depth:
        inner = property_sets(depth - 1)
        values |= st.builds(PropertyValue, st.just(D.PropertySet), inner)
        values |= st.builds(PropertyValue, st.just(D.PropertySetList), st.lists(inner, max_size=2))
    return st.dictionaries(st.text(max_size=6), values, max_size=3)


def values_for(datatype: DataType) -> st.SearchStrategy[Any]:
    if datatype in SCALARS:
        return SCALARS[datatype]
    if datatype in ARRAYS:
        return ARRAYS[datatype]
    if datatype is D.DataSet:
        return datasets()
    if datatype is D.Template:
        return templates()
    raise AssertionError(datatype)


METRIC_TYPES = [dt for dt in DataType if dt not in (D.Unknown, D.PropertySet, D.PropertySetList)]


@st.composite
def templates(draw: st.DrawFn) -> Template:
    is_definition = draw(st.booleans())
    members = [
        Metric(name=f"m{i}", datatype=t, value=draw(SCALARS[t]))
        for i, t in enumerate(draw(st.lists(st.sampled_from(list(SCALARS)), max_size=3)))
    ]
    parameters = [
        TemplateParameter(f"p{i}", t, draw(st.none() | BASIC[t]))
        for i, t in enumerate(draw(st.lists(st.sampled_from(list(BASIC)), max_size=3)))
    ]
    return Template(
        metrics=members,
        parameters=parameters,
        version=draw(st.none() | st.just("1.0")),
        template_ref=None if is_definition else "Motor",
        is_definition=is_definition,
    )


# -- comparison that treats NaN as equal and tells -0.0 from 0.0 ---------------------------


def canon(obj: object) -> object:
    if isinstance(obj, float):
        return ("nan",) if math.isnan(obj) else (obj, math.copysign(1.0, obj))
    if isinstance(obj, msgspec.Struct):
        return (type(obj).__name__, *(canon(getattr(obj, f)) for f in obj.__struct_fields__))
    if isinstance(obj, list | tuple):
        return [canon(x) for x in obj]
    if isinstance(obj, dict):
        return {k: canon(v) for k, v in obj.items()}
    return obj


def assert_same(a: object, b: object) -> None:
    assert canon(a) == canon(b)


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", METRIC_TYPES, ids=lambda d: d.name)
@FAST
@given(data=st.data())
def test_birth_metric_round_trip_every_datatype(datatype: DataType, data: st.DataObject) -> None:
    value = data.draw(values_for(datatype))
    metric = Metric(name="Folder/Tag", alias=7, timestamp=T0, datatype=datatype, value=value)
    payload = Payload(timestamp=T0, seq=0, metrics=[metric])
    decoded = decode_payload(encode_payload(payload))
    assert_same(decoded, payload)


@pytest.mark.parametrize("datatype", METRIC_TYPES, ids=lambda d: d.name)
def test_is_null_round_trip_every_datatype(datatype: DataType) -> None:
    payload = Payload(metrics=[Metric(name="n", datatype=datatype, is_null=True)])
    assert decode_payload(encode_payload(payload)) == payload


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (D.Int8, -128),
        (D.Int8, 127),
        (D.Int16, -32768),
        (D.Int32, -(2**31)),
        (D.Int32, 2**31 - 1),
        (D.Int64, -(2**63)),
        (D.Int64, 2**63 - 1),
        (D.UInt8, 255),
        (D.UInt32, 2**32 - 1),
        (D.UInt64, 2**64 - 1),
        (D.DateTime, 2**64 - 1),
        (D.Double, -0.0),
        (D.Double, math.inf),
        (D.Double, -math.inf),
        (D.Double, 5e-324),
        (D.Float, -0.0),
        (D.Float, -math.inf),
        (D.Float, 3.4028234663852886e38),
    ],
)
def test_extremes_round_trip(datatype: DataType, value: object) -> None:
    payload = Payload(metrics=[Metric(name="x", datatype=datatype, value=value)])
    assert_same(decode_payload(encode_payload(payload)), payload)


@pytest.mark.parametrize("datatype", [D.Float, D.Double])
def test_nan_round_trips(datatype: DataType) -> None:
    payload = Payload(metrics=[Metric(name="x", datatype=datatype, value=math.nan)])
    value = decode_payload(encode_payload(payload)).metrics[0].value
    assert isinstance(value, float)
    assert math.isnan(value)


def test_signed_ints_travel_as_twos_complement() -> None:
    metrics = [
        Metric(alias=1, datatype=D.Int8, value=-1),
        Metric(alias=2, datatype=D.Int32, value=-12),
        Metric(alias=3, datatype=D.Int64, value=-1),
    ]
    raw = pb.Payload.FromString(encode_payload(Payload(metrics=metrics)))
    assert [raw.metrics[0].int_value, raw.metrics[1].int_value] == [2**32 - 1, 2**32 - 12]
    assert raw.metrics[2].long_value == 2**64 - 1


@pytest.mark.parametrize("datatype", sorted(ELEMENTS), ids=lambda d: d.name)
def test_huge_arrays_round_trip(datatype: DataType) -> None:
    values = ARRAY_SAMPLES[datatype] * 3334  # 10,002 elements
    payload = Payload(metrics=[Metric(name="a", datatype=datatype, value=values)])
    assert_same(decode_payload(encode_payload(payload)), payload)


@pytest.mark.parametrize("datatype", sorted(ELEMENTS), ids=lambda d: d.name)
def test_empty_arrays_round_trip(datatype: DataType) -> None:
    payload = Payload(metrics=[Metric(name="a", datatype=datatype, value=[])])
    assert decode_payload(encode_payload(payload)) == payload


@pytest.mark.parametrize(
    ("datatype", "values", "wire"),
    [  # the examples of the specification's array-type appendix that agree with its text
        (D.Int8Array, [-23, 123], "e97b"),
        (D.Int16Array, [-30000, 30000], "d08a3075"),
        (D.Int32Array, [-1, 315338746], "fffffffffaafcb12"),
        (D.UInt8Array, [23, 250], "17fa"),
        (D.UInt16Array, [30, 52360], "1e0088cc"),
        (D.UInt32Array, [52, 3293969225], "3400000049fb55c4"),
        (
            D.BooleanArray,
            [False, False, True, True, False, True, False, False, True, True, False, True],
            "0c00000034d0",
        ),
        (D.StringArray, ["ABC", "hello"], "41424300" + "68656c6c6f00"),
        (D.DoubleArray, [1.5], struct.pack("<d", 1.5).hex()),
        (D.DateTimeArray, [1256102875335], struct.pack("<q", 1256102875335).hex()),
    ],
)
def test_array_wire_format(datatype: DataType, values: list[object], wire: str) -> None:
    data = encode_payload(Payload(metrics=[Metric(name="a", datatype=datatype, value=values)]))
    assert pb.Payload.FromString(data).metrics[0].bytes_value.hex() == wire
    assert decode_payload(data).metrics[0].value == values


@pytest.mark.tck(
    "tck-id-payloads-dataset-column-size",
    "tck-id-payloads-dataset-column-num-headers",
    "tck-id-payloads-dataset-types-def",
    "tck-id-payloads-dataset-types-num",
    "tck-id-payloads-dataset-types-value",
    "tck-id-payloads-template-dataset-value",
)
def test_dataset_with_every_column_type() -> None:
    types = sorted(BASIC)
    rows = [[SAMPLES[t][i] for t in types] for i in range(3)] + [[None] * len(types)]
    dataset = DataSet([t.name for t in types], types, rows)
    data = encode_payload(Payload(metrics=[Metric(name="ds", datatype=D.DataSet, value=dataset)]))
    raw = pb.Payload.FromString(data).metrics[0].dataset_value
    assert raw.num_of_columns == len(types) == len(raw.columns) == len(raw.types)
    assert_same(decode_payload(data).metrics[0].value, dataset)


@pytest.mark.tck(
    "tck-id-payloads-template-definition-is-definition",
    "tck-id-payloads-template-definition-ref",
    "tck-id-payloads-template-instance-is-definition",
    "tck-id-payloads-template-instance-ref",
    "tck-id-payloads-template-is-definition",
    "tck-id-payloads-template-version",
    "tck-id-payloads-template-parameter-name-required",
    "tck-id-payloads-template-parameter-value",
)
def test_template_definition_and_instance() -> None:
    definition = Template(
        metrics=[
            Metric(name="RPM", datatype=D.Int32, value=0),
            Metric(
                name="Inner",
                datatype=D.Template,
                value=Template(
                    metrics=[Metric(name="x", datatype=D.Boolean, value=False)],
                    is_definition=False,
                    template_ref="Sub",
                ),
            ),
        ],
        parameters=[
            TemplateParameter("MaxRPM", D.Int32, 3000),
            TemplateParameter("Unit", D.String),
        ],
        version="2.1",
        is_definition=True,
    )
    instance = Template(
        metrics=[Metric(name="RPM", datatype=D.Int32, value=-40)],
        parameters=[TemplateParameter("MaxRPM", D.Int32, -5)],
        template_ref="Motor",
    )
    payload = Payload(
        metrics=[
            Metric(name="Motor", datatype=D.Template, value=definition),
            Metric(name="Pump 1", alias=3, datatype=D.Template, value=instance),
        ]
    )
    data = encode_payload(payload)
    raw = pb.Payload.FromString(data)
    assert raw.metrics[0].template_value.is_definition is True
    assert not raw.metrics[0].template_value.HasField("template_ref")
    assert raw.metrics[1].template_value.HasField("is_definition")
    assert raw.metrics[1].template_value.is_definition is False
    assert decode_payload(data) == payload


@FAST
@given(template=templates())
def test_templates_round_trip(template: Template) -> None:
    payload = Payload(metrics=[Metric(name="t", datatype=D.Template, value=template)])
    assert_same(decode_payload(encode_payload(payload)), payload)


@pytest.mark.tck(
    "tck-id-payloads-propertyset-keys-array-size",
    "tck-id-payloads-propertyset-values-array-size",
    "tck-id-payloads-metric-propertyvalue-type-type",
    "tck-id-payloads-metric-propertyvalue-type-value",
    "tck-id-payloads-metric-propertyvalue-type-req",
)
@FAST
@given(properties=property_sets())
def test_nested_property_sets_round_trip(properties: dict[str, PropertyValue]) -> None:
    metric = Metric(name="WOB", datatype=D.Double, value=1.0, properties=properties)
    data = encode_payload(Payload(metrics=[metric]))
    raw = pb.Payload.FromString(data).metrics[0].properties
    assert len(raw.keys) == len(raw.values) == len(properties)
    assert_same(decode_payload(data).metrics[0], metric)


@pytest.mark.tck(
    "tck-id-payloads-propertyset-quality-value-type",
    "tck-id-payloads-propertyset-quality-value-value",
)
def test_quality_property() -> None:
    metric = Metric(
        name="WOB",
        datatype=D.Double,
        value=1.0,
        properties={
            "Quality": PropertyValue(D.Int32, 500),
            "engUnit": PropertyValue(D.String, "t"),
        },
    )
    raw = pb.Payload.FromString(encode_payload(Payload(metrics=[metric])))
    quality = raw.metrics[0].properties.values[0]
    assert (quality.type, quality.WhichOneof("value"), quality.int_value) == (3, "int_value", 500)


def test_metric_flags_metadata_and_payload_fields() -> None:
    payload = Payload(
        timestamp=T0,
        seq=255,
        uuid="b1d1c3a0-0000-4000-8000-000000000000",
        body=b"\x00\x01",
        batch=2**64 - 1,
        metrics=[
            Metric(
                name="f",
                alias=0,
                timestamp=0,
                datatype=D.File,
                value=b"abc",
                is_historical=True,
                is_transient=True,
                metadata=MetaData(
                    is_multi_part=False,
                    content_type="text/plain",
                    size=3,
                    seq=0,
                    file_name="a.txt",
                    file_type="txt",
                    md5="900150983cd24fb0",
                    description="",
                ),
            )
        ],
    )
    assert decode_payload(encode_payload(payload)) == payload
    assert decode_payload(encode_payload(Payload())) == Payload()


@FAST
@given(batch=st.integers(0, 2**64 - 1), seq=st.integers(0, 255))
def test_batch_extension_round_trip(batch: int, seq: int) -> None:
    data = encode_payload(Payload(timestamp=T0, seq=seq, batch=batch))
    assert decode_payload(data) == Payload(timestamp=T0, seq=seq, batch=batch)
    plain = pb.Payload.FromString(data)  # a host without derrick_ext.proto
    assert (plain.timestamp, plain.seq) == (T0, seq)
    assert plain.SerializeToString() == data  # kept as an unknown field


DDATA_TYPES = {1: D.Double, 2: D.Int32, 3: D.Boolean, 4: D.Int8, 5: D.Int64, 6: D.DoubleArray}


@given(
    values=st.tuples(
        st.floats(),
        _ints(D.Int32),
        st.booleans(),
        _ints(D.Int8),
        _ints(D.Int64),
        st.lists(st.floats(), max_size=4),
    )
)
@example(values=(1.5, -12, True, -128, -1, [math.nan]))
def test_alias_only_data_with_datatypes_mapping(values: tuple[object, ...]) -> None:
    metrics = [
        Metric(alias=alias, timestamp=T0 + alias, value=v)
        for alias, v in zip(DDATA_TYPES, values, strict=True)
    ]
    data = encode_payload(Payload(timestamp=T0, seq=1, metrics=metrics), DDATA_TYPES)
    assert all(
        not m.HasField("datatype") and not m.name for m in pb.Payload.FromString(data).metrics
    )
    decoded = decode_payload(data, DDATA_TYPES)
    expected = [msgspec.structs.replace(m, datatype=DDATA_TYPES[m.alias or 0]) for m in metrics]
    assert_same(decoded.metrics, expected)


def test_alias_only_without_mapping_gives_raw_values() -> None:
    metrics = [
        Metric(alias=1, timestamp=T0, value=-12),
        Metric(alias=2, timestamp=T0, value=-1),
        Metric(alias=9, timestamp=T0, value=2.5),
    ]
    mapping = {1: D.Int32, 2: D.Int64, 9: D.Double}
    decoded = decode_payload(encode_payload(Payload(metrics=metrics), mapping), {1: D.Int32})
    assert [(m.datatype, m.value) for m in decoded.metrics] == [
        (D.Int32, -12),
        (None, 2**64 - 1),  # unresolved: as sent, for the caller to resolve or dead-letter
        (None, 2.5),
    ]


def test_own_datatype_wins_over_mapping() -> None:
    data = encode_payload(Payload(metrics=[Metric(alias=1, datatype=D.Int16, value=-2)]))
    assert decode_payload(data, {1: D.Int32}).metrics[0].datatype is D.Int16


def test_value_kinds_cover_every_datatype() -> None:
    assert {dt.value_kind for dt in DataType} == set(ValueKind)
    assert [dt for dt in DataType if dt.is_array] == list(DataType)[22:35]
    assert D.Int8Array.element_type is D.Int8
    assert D.DateTimeArray.element_type is D.DateTime
    with pytest.raises(ValueError, match="not an array"):
        _ = D.Double.element_type


# -- interop with the plain generated classes ----------------------------------------------


def test_raw_protobuf_payload_decodes() -> None:
    raw = pb.Payload(timestamp=T0, seq=3)
    m = raw.metrics.add(name="Node Control/Rebirth", alias=1, timestamp=T0, datatype=11)
    m.boolean_value = False
    m = raw.metrics.add(name="T", timestamp=T0, datatype=3, int_value=2**32 - 12)
    m.properties.keys.append("Quality")
    m.properties.values.add(type=3, int_value=192)
    decoded = decode_payload(raw.SerializeToString())
    assert decoded == Payload(
        timestamp=T0,
        seq=3,
        metrics=[
            Metric(
                name="Node Control/Rebirth", alias=1, timestamp=T0, datatype=D.Boolean, value=False
            ),
            Metric(
                name="T",
                timestamp=T0,
                datatype=D.Int32,
                value=-12,
                properties={"Quality": PropertyValue(D.Int32, 192)},
            ),
        ],
    )


def test_our_payload_parses_with_raw_protobuf() -> None:
    payload = Payload(
        timestamp=T0,
        seq=0,
        metrics=[
            Metric(name="bdSeq", timestamp=T0, datatype=D.Int64, value=4),
            Metric(name="WOB", alias=5, timestamp=T0, datatype=D.Float, value=0.5),
        ],
    )
    raw = pb.Payload.FromString(encode_payload(payload))
    assert (raw.timestamp, raw.seq, len(raw.metrics)) == (T0, 0, 2)
    assert (raw.metrics[0].name, raw.metrics[0].datatype, raw.metrics[0].long_value) == (
        "bdSeq",
        4,
        4,
    )
    assert not raw.metrics[0].HasField("alias")
    wob = raw.metrics[1]
    assert (wob.alias, wob.WhichOneof("value"), wob.float_value) == (5, "float_value", 0.5)


def test_protobuf_backend_is_upb() -> None:
    assert api_implementation.Type() == "upb"


def test_generated_modules_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
