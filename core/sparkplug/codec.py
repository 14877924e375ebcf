"""Sparkplug B payload codec: :class:`~core.sparkplug.model.Payload` <-> protobuf bytes.

``encode_payload(payload, datatypes=None) -> bytes`` and
``decode_payload(data, datatypes=None) -> Payload``. Value conventions are documented in
``core.sparkplug.model``; errors in ``core.sparkplug.errors``.

Datatypes and aliases. A metric's datatype is its own ``datatype`` if set (and then it is also
written on the wire); otherwise the ``datatypes`` mapping (alias -> DataType, learned from the
birth certificate) supplies it. Alias-only DATA messages therefore carry no datatype on the
wire, as the specification recommends, yet encode and decode exactly. On decode a metric whose
datatype cannot be resolved keeps ``datatype=None`` and the raw protobuf value (unsigned
integers as sent) so that the caller can resolve it later or dead-letter it.

Strictness. Encoding checks every value against its datatype and the specification's MUST
rules for the structures it builds (Template definition vs instance, DataSet shape, seq
0..255). Decoding checks what it needs to produce correct values (the value field matches the
datatype, integers fit, arrays are whole, PropertySet/DataSet shapes) and is otherwise lenient.

Performance. This is the hot path of both edge and ingest (a 100-metric alias-only DDATA is
the unit measured by ``bench/codec_bench.py``). The loops read each protobuf field once, call
``WhichOneof`` once per metric and ``HasField`` only for submessages or to tell an unset field
from a zero (both as unbound methods: the bound-method lookup on a upb message costs as much as
the call), build no intermediate objects, and inline the common datatypes (Double, Int32,
Boolean) before falling back to dispatch tables. Change them with the benchmark at hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError

from core.sparkplug import derrick_ext_pb2
from core.sparkplug import sparkplug_b_pb2 as pb
from core.sparkplug.datatypes import DataType
from core.sparkplug.errors import PayloadDecodeError, PayloadEncodeError, PayloadError
from core.sparkplug.model import Metric, Payload, Template, TemplateParameter
from core.sparkplug.structures import (
    decode_dataset,
    decode_metadata,
    decode_property_set,
    encode_dataset,
    encode_metadata,
    encode_property_set,
)
from core.sparkplug.values import BASIC_VALUES, DATATYPE_BY_NUMBER, METRIC_VALUES, checked_text

__all__ = ["decode_payload", "encode_payload"]

_ProtoPayload = pb.Payload
_BATCH = derrick_ext_pb2.derrick_batch
_DOUBLE = DataType.Double
_INT32 = DataType.Int32
_BOOLEAN = DataType.Boolean
_encode_double = METRIC_VALUES[_DOUBLE][1]
_encode_int32 = METRIC_VALUES[_INT32][1]
_encode_boolean = METRIC_VALUES[_BOOLEAN][1]
_CAUGHT = (TypeError, ValueError, OverflowError, AttributeError)
# Unbound methods: calling these skips a per-call method lookup on the upb message, which
# costs about as much as the call itself (half of HasField's time).
_has_field: Any = pb.Payload.Metric.HasField
_which_oneof: Any = pb.Payload.Metric.WhichOneof


_UNSIGNED_IN_INT_VALUE = frozenset({DataType.UInt8, DataType.UInt16, DataType.UInt32})
_UNSIGNED_MAX = {DataType.UInt8: 0xFF, DataType.UInt16: 0xFFFF, DataType.UInt32: 0xFFFF_FFFF}


def _describe(kind: str, index: int, name: object, alias: object) -> str:
    parts = []
    if name:
        parts.append(f"name {name!r}")
    if alias is not None:
        parts.append(f"alias {alias}")
    return f"{kind} {index} ({', '.join(parts)})" if parts else f"{kind} {index}"


# -- encode --------------------------------------------------------------------------------------


def encode_payload(payload: Payload, datatypes: Mapping[int, DataType] | None = None) -> bytes:
    """Encode ``payload`` as Sparkplug B protobuf bytes.

    ``datatypes`` maps alias -> DataType for metrics whose ``datatype`` is ``None`` (alias-only
    DATA/CMD). Raises :class:`PayloadEncodeError` naming the metric whose value does not fit.
    """
    if not isinstance(payload, Payload):
        raise PayloadEncodeError(f"expected a Payload, got {type(payload).__name__}")
    message = _ProtoPayload()
    field = "payload"
    try:
        if payload.timestamp is not None:
            field = "timestamp"
            message.timestamp = payload.timestamp
        if payload.seq is not None:
            field = "seq"
            if not 0 <= payload.seq <= 255:
                raise ValueError(f"{payload.seq} is out of range [0, 255]")
            message.seq = payload.seq
        if payload.uuid is not None:
            field = "uuid"
            message.uuid = payload.uuid
        if payload.body is not None:
            field = "body"
            message.body = payload.body
        if payload.batch is not None:
            field = "batch"
            message.Extensions[_BATCH] = payload.batch
    except _CAUGHT as exc:
        raise PayloadEncodeError(f"{field}: {exc}") from exc
    _encode_metrics(message.metrics, payload.metrics, datatypes, "metric")
    return message.SerializeToString()


def _encode_metrics(
    target: Any, metrics: list[Metric], datatypes: Mapping[int, DataType] | None, kind: str
) -> None:
    add = target.add
    metric: Any = None
    try:
        for metric in metrics:
            out = add()
            name = metric.name
            if name is not None:
                if not name:
                    raise ValueError("metric name is empty")
                out.name = name
            alias = metric.alias
            if alias is not None:
                out.alias = alias
            timestamp = metric.timestamp
            if timestamp is not None:
                out.timestamp = timestamp
            datatype = metric.datatype
            if datatype is not None:
                if datatype not in DATATYPE_BY_NUMBER:
                    raise ValueError(f"datatype {datatype!r} is not a Sparkplug datatype")
                out.datatype = datatype
            elif datatypes is not None and alias is not None:
                datatype = datatypes.get(alias)
            value = metric.value
            if metric.is_null:
                if value is not None:
                    raise ValueError("is_null is set but a value is given")
                out.is_null = True
            elif value is None:
                pass
            elif datatype == _DOUBLE:
                out.double_value = value if type(value) is float else _encode_double(value)
            elif datatype == _INT32:
                if type(value) is int and -0x80000000 <= value <= 0x7FFFFFFF:
                    out.int_value = value & 0xFFFFFFFF
                else:
                    out.int_value = _encode_int32(value)
            elif datatype == _BOOLEAN:
                out.boolean_value = _encode_boolean(value)
            else:
                _encode_value(out, datatype, value)
            if metric.is_historical:
                out.is_historical = True
            if metric.is_transient:
                out.is_transient = True
            if metric.properties is not None:
                encode_property_set(out.properties, metric.properties)
            if metric.metadata is not None:
                encode_metadata(out.metadata, metric.metadata)
    except PayloadError as exc:
        raise exc.located(_encode_where(metric, len(target) - 1, kind)) from exc
    except _CAUGHT as exc:
        where = _encode_where(metric, len(target) - 1, kind)
        raise PayloadEncodeError(str(exc), where=where) from exc


def _encode_where(metric: object, index: int, kind: str) -> str:
    if not isinstance(metric, Metric):
        return f"{kind} {index} (not a Metric but {type(metric).__name__})"
    return _describe(kind, index, metric.name, metric.alias)


def _encode_value(out: Any, datatype: object, value: object) -> None:
    if datatype is None:
        raise ValueError("no datatype: set Metric.datatype or pass its alias in datatypes")
    spec = METRIC_VALUES.get(datatype)  # type: ignore[call-overload]
    if spec is not None:
        field, to_wire, _ = spec
        setattr(out, field, to_wire(value))
    elif datatype == DataType.DataSet:
        encode_dataset(out.dataset_value, value)
    elif datatype == DataType.Template:
        _encode_template(out.template_value, value)
    elif datatype in DATATYPE_BY_NUMBER:
        name = DATATYPE_BY_NUMBER[datatype].name
        raise ValueError(f"a metric of datatype {name} cannot carry a value")
    else:
        raise ValueError(f"datatype {datatype!r} is not a Sparkplug datatype")


def _encode_template(out: pb.Payload.Template, template: object) -> None:
    if not isinstance(template, Template):
        raise TypeError(f"Template value must be a Template, got {type(template).__name__}")
    if template.is_definition and template.template_ref is not None:
        raise ValueError("a Template definition must not have a template_ref")
    if not template.is_definition and template.template_ref is None:
        raise ValueError("a Template instance must have a template_ref (its definition's name)")
    if template.version is not None:
        out.version = template.version
    if template.template_ref is not None:
        out.template_ref = template.template_ref
    out.is_definition = template.is_definition
    for index, parameter in enumerate(template.parameters):
        try:
            _encode_parameter(out.parameters.add(), parameter)
        except _CAUGHT as exc:
            raise PayloadEncodeError(str(exc), where=f"template parameter {index}") from exc
    _encode_metrics(out.metrics, template.metrics, None, "template metric")


def _encode_parameter(out: pb.Payload.Template.Parameter, parameter: object) -> None:
    if not isinstance(parameter, TemplateParameter):
        raise TypeError(f"expected a TemplateParameter, got {type(parameter).__name__}")
    if not isinstance(parameter.name, str) or not parameter.name:
        raise ValueError(f"parameter name must be a non-empty str, got {parameter.name!r}")
    out.name = parameter.name
    spec = BASIC_VALUES.get(parameter.type)
    if spec is None:
        raise ValueError(f"parameter type {parameter.type!r} is not a basic datatype")
    out.type = parameter.type
    if parameter.value is not None:
        field, to_wire, _ = spec
        setattr(out, field, to_wire(parameter.value))


# -- decode --------------------------------------------------------------------------------------

_DECODE: dict[DataType, tuple[str, Any]] = {
    datatype: (field, from_wire) for datatype, (field, _, from_wire) in METRIC_VALUES.items()
}


def decode_payload(data: bytes, datatypes: Mapping[int, DataType] | None = None) -> Payload:
    """Decode Sparkplug B protobuf bytes into a :class:`Payload`.

    ``datatypes`` maps alias -> DataType for metrics that carry no datatype (alias-only
    DATA/CMD). Raises :class:`PayloadDecodeError` for bytes that are not a Sparkplug B payload
    or hold a value that does not fit its datatype, naming the metric.
    """
    try:
        message = _ProtoPayload.FromString(data)
    except (DecodeError, TypeError) as exc:
        raise PayloadDecodeError(f"not a Sparkplug B payload: {exc}") from exc
    metrics = _decode_metrics(message.metrics, datatypes, "metric")
    try:
        has = message.HasField
        timestamp: int | None = message.timestamp
        if not timestamp and not has("timestamp"):
            timestamp = None
        seq: int | None = message.seq
        if not seq and not has("seq"):
            seq = None
        uuid = checked_text(message.uuid, "uuid") if has("uuid") else None
        body = message.body if has("body") else None
        batch = message.Extensions[_BATCH] if message.HasExtension(_BATCH) else None
    except ValueError as exc:  # e.g. a uuid that is not UTF-8
        raise PayloadDecodeError(f"payload header: {exc}") from exc
    return Payload(timestamp, seq, metrics, uuid, body, batch)


def _decode_metrics(
    source: Any, datatypes: Mapping[int, DataType] | None, kind: str
) -> list[Metric]:
    metrics: list[Metric] = []
    append_metric = metrics.append
    by_number = DATATYPE_BY_NUMBER
    decoders = _DECODE
    try:
        for metric in source:
            name = metric.name or None
            if name is not None and type(name) is not str:
                checked_text(name, "name")
            alias = metric.alias
            if not alias and not _has_field(metric, "alias"):
                alias = None
            timestamp = metric.timestamp
            if not timestamp and not _has_field(metric, "timestamp"):
                timestamp = None
            number = metric.datatype
            if number:
                datatype = by_number.get(number)
                if datatype is None:
                    raise ValueError(f"datatype {number} is not a Sparkplug datatype")
            elif datatypes is not None and alias is not None:
                datatype = datatypes.get(alias)
            else:
                datatype = None
            which = _which_oneof(metric, "value")
            if which is None:
                value = None
            elif datatype is None:
                value = _raw_value(metric, which)
            else:
                spec = decoders.get(datatype)
                if spec is None:
                    raise ValueError(f"a metric of datatype {datatype.name} cannot carry a value")
                field, from_wire = spec
                if which != field:
                    if which == "long_value" and datatype in _UNSIGNED_IN_INT_VALUE:
                        # Tolerated: some implementations (Tahu JS sparkplug-payload 1.0.3)
                        # put UInt8/16/32 in long_value. Accepted when it fits the type.
                        value = metric.long_value
                        if value > _UNSIGNED_MAX[datatype]:
                            raise ValueError(f"{value} is out of range for {datatype.name}")
                    else:
                        raise ValueError(f"{datatype.name} value must be in {field}, not {which}")
                else:
                    value = getattr(metric, which)
                    if from_wire is not None:
                        value = from_wire(value)
            is_null = metric.is_null
            if is_null and value is not None:
                raise ValueError("is_null is set but a value is present")
            append_metric(
                Metric(
                    name,
                    alias,
                    timestamp,
                    datatype,
                    value,
                    is_null,
                    metric.is_historical,
                    metric.is_transient,
                    decode_property_set(metric.properties)
                    if _has_field(metric, "properties")
                    else None,
                    decode_metadata(metric.metadata) if _has_field(metric, "metadata") else None,
                )
            )
    except PayloadError as exc:
        raise exc.located(_decode_where(source, len(metrics), kind)) from exc
    except _CAUGHT as exc:
        where = _decode_where(source, len(metrics), kind)
        raise PayloadDecodeError(str(exc), where=where) from exc
    return metrics


def _decode_where(source: Any, index: int, kind: str) -> str:
    metric = source[index]
    name = metric.name if type(metric.name) is str else "<not UTF-8>"
    alias = metric.alias if metric.HasField("alias") else None
    return _describe(kind, index, name, alias)


def _raw_value(metric: Any, which: str) -> object:
    """The value of a metric whose datatype is unknown: as sent, structures decoded."""
    if which == "dataset_value":
        return decode_dataset(metric.dataset_value)
    if which == "template_value":
        return _decode_template(metric.template_value)
    if which == "extension_value":
        return None
    return getattr(metric, which)


def _decode_template(source: pb.Payload.Template) -> Template:
    parameters = []
    for index, parameter in enumerate(source.parameters):
        try:
            parameters.append(_decode_parameter(parameter))
        except _CAUGHT as exc:
            raise PayloadDecodeError(str(exc), where=f"template parameter {index}") from exc
    metrics = _decode_metrics(source.metrics, None, "template metric")
    version = checked_text(source.version, "version") if source.HasField("version") else None
    template_ref = None
    if source.HasField("template_ref"):
        template_ref = checked_text(source.template_ref, "template_ref")
    return Template(metrics, parameters, version, template_ref, source.is_definition)


def _decode_parameter(source: pb.Payload.Template.Parameter) -> TemplateParameter:
    datatype = DATATYPE_BY_NUMBER.get(source.type)
    if datatype is None:
        raise ValueError(f"parameter type {source.type} is not a Sparkplug datatype")
    which = source.WhichOneof("value")
    value: object = None
    if which is not None and which != "extension_value":
        value = getattr(source, which)
        spec = BASIC_VALUES.get(datatype)
        if spec is not None:
            field, _, from_wire = spec
            if which != field:
                raise ValueError(f"{datatype.name} value must be in {field}, not {which}")
            if from_wire is not None:
                value = from_wire(value)
        elif datatype is not DataType.Unknown:
            raise ValueError(f"parameter type {datatype.name} is not a basic datatype")
    return TemplateParameter(checked_text(source.name, "parameter name"), datatype, value)


_DECODE[DataType.DataSet] = ("dataset_value", decode_dataset)
_DECODE[DataType.Template] = ("template_value", _decode_template)
