"""Sparkplug codec and STATE payload: every kind of bad input raises a clear, located error."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.sparkplug import (
    DataSet,
    DataType,
    Metric,
    Payload,
    PayloadDecodeError,
    PayloadEncodeError,
    PayloadError,
    PropertyValue,
    SparkplugError,
    StatePayload,
    Template,
    TemplateParameter,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
)
from core.sparkplug import sparkplug_b_pb2 as pb

D = DataType


def encode_one(metric: Metric, **payload: object) -> bytes:
    return encode_payload(Payload(metrics=[metric], **payload))  # type: ignore[arg-type]


# -- encode --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        (D.Int8, 300, r"300 is out of range for Int8 \[-128, 127\]"),
        (D.Int8, -129, "out of range for Int8"),
        (D.Int16, 2**15, "out of range for Int16"),
        (D.Int32, 2**31, "out of range for Int32"),
        (D.Int32, -(2**31) - 1, "out of range for Int32"),
        (D.Int64, 2**63, "out of range for Int64"),
        (D.UInt8, -1, "out of range for UInt8"),
        (D.UInt16, 65536, "out of range for UInt16"),
        (D.UInt32, 2**32, "out of range for UInt32"),
        (D.UInt64, 2**64, "out of range for UInt64"),
        (D.UInt64, -1, "out of range for UInt64"),
        (D.DateTime, -1, "DateTime -1 is out of range"),
        (D.Float, 1e300, "does not fit Float"),
        (D.Int32, 1.5, "Int32 value must be int, got float"),
        (D.Int32, True, "Int32 value must be int, got bool"),
        (D.Double, "1.0", "Double value must be float, got str"),
        (D.Double, True, "Double value must be float, got bool"),
        (D.Boolean, 1, "Boolean value must be bool, got int"),
        (D.String, b"x", "String value must be str, got bytes"),
        (D.String, "\udc80", "surrogates not allowed"),
        (D.Bytes, "x", "Bytes value must be bytes, got str"),
        (D.Int8Array, [1, 300], r"element 1 of Int8Array is 300, out of range \[-128, 127\]"),
        (D.UInt16Array, [-1], "element 0 of UInt16Array is -1"),
        (D.FloatArray, [1e300], "does not fit float32"),
        (D.DoubleArray, [1.0, "x"], "element 1 of DoubleArray is str, not float"),
        (D.Int32Array, [True], "element 0 of Int32Array is bool, not int"),
        (D.BooleanArray, [True, 1], "element 1 of BooleanArray is int, not bool"),
        (D.StringArray, ["a\x00b"], "contains NUL"),
        (D.StringArray, "abc", "StringArray value must be a list, got str"),
        (D.DataSet, [[1]], "DataSet value must be a DataSet"),
        (D.Template, {}, "Template value must be a Template"),
        (D.Unknown, 1, "datatype Unknown cannot carry a value"),
        (D.PropertySet, {}, "datatype PropertySet cannot carry a value"),
    ],
)
def test_encode_rejects_values_that_do_not_fit(
    datatype: DataType, value: object, message: str
) -> None:
    with pytest.raises(PayloadEncodeError, match=message) as caught:
        encode_one(Metric(name="Pump/RPM", alias=17, datatype=datatype, value=value))
    assert caught.value.where == "metric 0 (name 'Pump/RPM', alias 17)"
    assert str(caught.value).startswith("metric 0 (name 'Pump/RPM', alias 17): ")
    assert isinstance(caught.value, PayloadError | SparkplugError | ValueError)


@pytest.mark.tck("tck-id-payloads-metric-datatype-value")
@pytest.mark.parametrize("datatype", [99, 35, -1])
def test_encode_rejects_unknown_datatype_number(datatype: int) -> None:
    with pytest.raises(PayloadEncodeError, match=f"datatype {datatype} is not a Sparkplug"):
        encode_one(Metric(alias=1, datatype=datatype, is_null=True))  # type: ignore[arg-type]


def test_encode_locates_the_metric_by_index() -> None:
    metrics = [Metric(alias=i, datatype=D.Int8, value=i) for i in range(5)]
    metrics[3] = Metric(alias=3, datatype=D.Int8, value=1000)
    with pytest.raises(PayloadEncodeError, match=r"^metric 3 \(alias 3\): 1000 is out of range"):
        encode_payload(Payload(metrics=metrics))


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (Metric(alias=4, value=1.0), "no datatype: set Metric.datatype or pass its alias"),
        (Metric(name="", datatype=D.Int8, value=1), "metric name is empty"),
        (Metric(name="n", datatype=D.Int8, value=1, is_null=True), "is_null is set but a value"),
        (Metric(name="n", alias=-1, datatype=D.Int8, value=1), "out of range"),
        (Metric(name="n", timestamp=-5, datatype=D.Int8, value=1), "out of range"),
        (
            Metric(name="n", datatype=D.Int8, value=1, properties={"q": 192}),  # type: ignore[dict-item]
            "property 'q': value must be a PropertyValue",
        ),
        (
            Metric(
                name="n", datatype=D.Int8, value=1, properties={"q": PropertyValue(D.Int8, 1000)}
            ),
            "property 'q': 1000 is out of range for Int8",
        ),
        (
            Metric(
                name="n",
                datatype=D.Int8,
                value=1,
                properties={
                    "a": PropertyValue(D.PropertySetList, [{"b": PropertyValue(D.Bytes, b"")}])
                },
            ),
            "property 'a': PropertySetList item 0: property 'b': Bytes is not a property value",
        ),
    ],
)
def test_encode_rejects_bad_metrics(metric: Metric, message: str) -> None:
    with pytest.raises(PayloadEncodeError, match=message):
        encode_one(metric)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (Payload(seq=256), r"seq: 256 is out of range \[0, 255\]"),
        (Payload(seq=-1), "seq: -1 is out of range"),
        (Payload(timestamp=-1), "timestamp: "),
        (Payload(batch=-1), "batch: "),
        (Payload(batch=2**64), "batch: "),
        (Payload(metrics=[{"alias": 1}]), r"metric 0 \(not a Metric but dict\)"),  # type: ignore[list-item]
    ],
)
def test_encode_rejects_bad_payload_fields(payload: Payload, message: str) -> None:
    with pytest.raises(PayloadEncodeError, match=message):
        encode_payload(payload)
    with pytest.raises(PayloadEncodeError, match="expected a Payload"):
        encode_payload({"seq": 1})  # type: ignore[arg-type]


@pytest.mark.tck(
    "tck-id-payloads-dataset-column-num-headers",
    "tck-id-payloads-dataset-types-num",
    "tck-id-payloads-dataset-types-value",
)
@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (DataSet(["a", "b"], [D.Int8], []), "DataSet has 2 columns but 1 types"),
        (DataSet(["a"], [D.Int8], [[1, 2]]), "row 0 has 2 cells for 1 columns"),
        (DataSet(["a"], [D.Bytes], []), "column 0 type Bytes is not a basic type"),
        (DataSet(["a"], [99], []), "column 0 type 99 is not a Sparkplug datatype"),  # type: ignore[list-item]
        (DataSet(["a"], [D.UInt8], [[0], [256]]), "row 1 column 0: 256 is out of range"),
    ],
)
def test_encode_rejects_bad_datasets(dataset: DataSet, message: str) -> None:
    with pytest.raises(PayloadEncodeError, match=message):
        encode_one(Metric(name="ds", datatype=D.DataSet, value=dataset))


@pytest.mark.tck(
    "tck-id-payloads-template-definition-ref",
    "tck-id-payloads-template-instance-ref",
    "tck-id-payloads-template-ref-definition",
    "tck-id-payloads-template-ref-instance",
    "tck-id-payloads-template-parameter-name-required",
    "tck-id-payloads-template-parameter-type-value",
)
@pytest.mark.parametrize(
    ("template", "message"),
    [
        (Template(is_definition=True, template_ref="X"), "definition must not have a template_ref"),
        (Template(is_definition=False), "instance must have a template_ref"),
        (
            Template(is_definition=True, parameters=[TemplateParameter("", D.Int8)]),
            "template parameter 0: parameter name must be a non-empty str",
        ),
        (
            Template(is_definition=True, parameters=[TemplateParameter("p", D.DataSet)]),
            "parameter type <DataType.DataSet: 16> is not a basic datatype",
        ),
        (
            Template(is_definition=True, metrics=[Metric(name="RPM", datatype=D.UInt8, value=-1)]),
            r"template metric 0 \(name 'RPM'\): -1 is out of range for UInt8",
        ),
    ],
)
def test_encode_rejects_bad_templates(template: Template, message: str) -> None:
    with pytest.raises(PayloadEncodeError, match=message) as caught:
        encode_one(Metric(name="Motor", datatype=D.Template, value=template))
    assert str(caught.value).startswith("metric 0 (name 'Motor')")


# -- decode --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\x0a", b"\x12\x05\x0a", b"\x08", b"\x12\xff\xff\xff\xff\x0f", b"\x00"],
    ids=["bad-tag", "truncated-length", "truncated-metric", "truncated-varint", "huge-len", "tag0"],
)
def test_decode_rejects_malformed_protobuf(data: bytes) -> None:
    with pytest.raises(PayloadDecodeError, match="not a Sparkplug B payload"):
        decode_payload(data)


@given(data=st.binary(max_size=64))
def test_decode_never_raises_anything_but_payload_decode_error(data: bytes) -> None:
    with contextlib.suppress(PayloadDecodeError):
        decode_payload(data, {1: D.Int8, 2: D.BooleanArray})


def test_decode_rejects_non_bytes() -> None:
    # interpreted: upb's TypeError as a PayloadDecodeError; compiled with mypyc (the ingest
    # worker, ingest/compiled.py): the annotation is checked at the call, a TypeError
    with pytest.raises((PayloadDecodeError, TypeError), match=r"bytes.*str"):
        decode_payload("spBv1.0")  # type: ignore[arg-type]


def raw_metric(**fields: object) -> bytes:
    message = pb.Payload()
    message.metrics.add(alias=1, timestamp=5)  # a good one first
    message.metrics.add(**fields)  # type: ignore[arg-type]
    return message.SerializeToString()


@pytest.mark.tck("tck-id-payloads-metric-datatype-value")
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"alias": 7, "datatype": 99, "int_value": 1}, "datatype 99 is not a Sparkplug datatype"),
        (
            {"alias": 7, "datatype": 3, "double_value": 1.5},
            "Int32 value must be in int_value, not double_value",
        ),
        (
            {"alias": 7, "datatype": 10, "int_value": 1},
            "Double value must be in double_value, not int_value",
        ),
        ({"alias": 7, "datatype": 1, "int_value": 200}, "int_value 200 does not fit Int8"),
        ({"alias": 7, "datatype": 5, "int_value": 256}, "int_value 256 does not fit UInt8"),
        ({"alias": 7, "datatype": 2, "int_value": 2**31}, "does not fit Int16"),
        (
            {"alias": 7, "datatype": 24, "bytes_value": b"\x01\x02\x03"},
            "Int32Array bytes_value has 3 bytes",
        ),
        ({"alias": 7, "datatype": 31, "bytes_value": b"\x00" * 9}, "not a multiple of 8"),
        (
            {"alias": 7, "datatype": 32, "bytes_value": b"\x09\x00\x00\x00\xff"},
            "BooleanArray of 9 elements needs 6",
        ),
        ({"alias": 7, "datatype": 32, "bytes_value": b"\x01\x00"}, "less than its count"),
        ({"alias": 7, "datatype": 33, "bytes_value": b"ab\x00cd"}, "does not end with NUL"),
        ({"alias": 7, "datatype": 33, "bytes_value": b"\xff\x00"}, "not valid UTF-8"),
        (
            {"alias": 7, "datatype": 20, "bytes_value": b""},
            "datatype PropertySet cannot carry a value",
        ),
        (
            {"alias": 7, "datatype": 11, "is_null": True, "boolean_value": True},
            "is_null is set but a value",
        ),
    ],
)
def test_decode_rejects_values_that_do_not_fit(fields: dict[str, object], message: str) -> None:
    with pytest.raises(PayloadDecodeError, match=message) as caught:
        decode_payload(raw_metric(**fields))
    assert caught.value.where == "metric 1 (alias 7)"
    assert isinstance(caught.value, PayloadError)


def test_decode_resolved_datatype_is_checked_too() -> None:
    data = raw_metric(alias=7, double_value=2.0)
    assert decode_payload(data).metrics[1].value == 2.0  # unresolved: raw
    with pytest.raises(PayloadDecodeError, match=r"metric 1 \(alias 7\): Int8 value must be in"):
        decode_payload(data, {7: D.Int8})


@pytest.mark.tck(
    "tck-id-payloads-propertyset-keys-array-size",
    "tck-id-payloads-propertyset-values-array-size",
)
def test_decode_rejects_property_set_size_mismatch() -> None:
    message = pb.Payload()
    metric = message.metrics.add(name="WOB", datatype=10, double_value=1.0)
    metric.properties.keys.extend(["Quality", "engUnit"])
    metric.properties.values.add(type=3, int_value=192)
    with pytest.raises(PayloadDecodeError, match="PropertySet has 2 keys but 1 values"):
        decode_payload(message.SerializeToString())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda ds: ds.columns.extend(["a", "b"]) or ds.types.append(3), "2 columns but 1 types"),
        (
            lambda ds: (
                ds.columns.append("a"),
                ds.types.append(3),
                setattr(ds, "num_of_columns", 2),
            ),
            "num_of_columns 2 != 1",
        ),
        (
            lambda ds: (ds.columns.append("a"), ds.types.append(17)),
            "column 0 type Bytes is not a basic",
        ),
        (
            lambda ds: (
                ds.columns.append("a"),
                ds.types.append(3),
                ds.rows.add().elements.add(double_value=1),
            ),
            "row 0 column 0: Int32 value must be in int_value, not double_value",
        ),
        (
            lambda ds: (ds.columns.append("a"), ds.types.append(3), ds.rows.add()),
            "row 0 has 0 cells for 1 columns",
        ),
    ],
)
def test_decode_rejects_bad_datasets(build: object, message: str) -> None:
    payload = pb.Payload()
    metric = payload.metrics.add(name="ds", datatype=16)
    build(metric.dataset_value)  # type: ignore[operator]
    metric.dataset_value.SetInParent()
    with pytest.raises(PayloadDecodeError, match=message):
        decode_payload(payload.SerializeToString())


def test_decode_rejects_bad_template_member_with_nested_location() -> None:
    payload = pb.Payload()
    template = payload.metrics.add(name="Motor", datatype=19).template_value
    template.is_definition = True
    template.metrics.add(name="RPM", datatype=5, int_value=999)
    with pytest.raises(
        PayloadDecodeError,
        match=r"^metric 0 \(name 'Motor'\) > template metric 0 \(name 'RPM'\): int_value 999",
    ):
        decode_payload(payload.SerializeToString())


def test_decode_rejects_invalid_utf8_name() -> None:
    metric = b"\x0a\x01\xff" + b"\x10\x03" + b"\x20\x0b" + b"\x70\x01"  # name=b"\xff", ...
    data = b"\x12" + bytes([len(metric)]) + metric
    with pytest.raises(PayloadDecodeError, match=r"^metric 0 \(name '<not UTF-8>', alias 3\)"):
        decode_payload(data)


def test_decode_rejects_invalid_utf8_string_value() -> None:
    message = pb.Payload()
    message.metrics.add(alias=1, datatype=12, string_value="ok")
    data = message.SerializeToString().replace(b"ok", b"\xff\xfe")
    with pytest.raises(PayloadDecodeError, match="String value is not valid UTF-8"):
        decode_payload(data)


VALID = encode_payload(
    Payload(
        timestamp=1,
        seq=2,
        batch=3,
        metrics=[
            Metric(name="a", alias=1, timestamp=1, datatype=D.Int8, value=-1),
            Metric(name="s", datatype=D.StringArray, value=["x", "y"]),
            Metric(name="b", datatype=D.BooleanArray, value=[True] * 9),
            Metric(
                name="d",
                datatype=D.DataSet,
                value=DataSet(["c"], [D.Int16], [[-2]]),
                properties={"Quality": PropertyValue(D.Int32, 192)},
            ),
            Metric(
                name="t",
                datatype=D.Template,
                value=Template([Metric(name="m", datatype=D.UInt8, value=9)], is_definition=True),
            ),
        ],
    )
)


@given(position=st.integers(0, len(VALID) - 1), byte=st.integers(0, 255))
def test_decode_of_corrupted_payload_raises_only_payload_decode_error(
    position: int, byte: int
) -> None:
    data = VALID[:position] + bytes([byte]) + VALID[position + 1 :]
    with contextlib.suppress(PayloadDecodeError):
        decode_payload(data)


# -- STATE ---------------------------------------------------------------------------------


@pytest.mark.tck("tck-id-host-topic-phid-birth-payload", "tck-id-host-topic-phid-death-payload")
@given(online=st.booleans(), timestamp=st.integers(0, 2**63 - 1))
def test_state_round_trip(online: bool, timestamp: int) -> None:
    data = encode_state(StatePayload(online, timestamp))
    assert data == f'{{"online":{str(online).lower()},"timestamp":{timestamp}}}'.encode()
    assert decode_state(data) == StatePayload(online, timestamp)


@pytest.mark.parametrize(
    "data",
    [
        b"ONLINE",  # Sparkplug 2.2
        b'{"online":true}',
        b'{"online":"true","timestamp":1}',
        b'{"online":true,"timestamp":-1}',
        b'{"online":true,"timestamp":1.5}',
        b'{"online":true,"timestamp":1,"extra":0}',
        b"",
    ],
)
def test_state_decode_rejects(data: bytes) -> None:
    with pytest.raises(PayloadDecodeError, match="not a Sparkplug STATE payload"):
        decode_state(data)


def test_state_encode_rejects() -> None:
    with pytest.raises(PayloadEncodeError):
        encode_state(StatePayload(True, -1))
    with pytest.raises(PayloadEncodeError):
        encode_state({"online": True})  # type: ignore[arg-type]
