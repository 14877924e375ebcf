"""The Sparkplug B payload as plain Python values (msgspec Structs), independent of protobuf.

``encode_payload`` / ``decode_payload`` in ``core.sparkplug.codec`` convert between these and
the wire. Structs are frozen and untracked by the garbage collector (``gc=False``: they never
form reference cycles), which makes them cheap to build on the hot path. They do not check
themselves when built, for the same reason; the codec checks every value against its datatype
when encoding and raises ``PayloadEncodeError`` naming the metric.

Value conventions (``value`` of a Metric, PropertyValue, DataSet cell, Template parameter):

==========================================  ===================================================
datatype                                    Python value
==========================================  ===================================================
Int8, Int16, Int32                          ``int`` in range; on the wire ``int_value`` (uint32)
                                            as 32-bit two's complement, decoded back to signed
Int64                                       ``int``; ``long_value`` (uint64), two's complement
UInt8, UInt16, UInt32 / UInt64              ``int`` in range; ``int_value`` / ``long_value``
Float, Double                               ``float`` (an ``int`` is accepted on encode); NaN,
                                            ±inf and -0.0 are preserved; Float is 32-bit, so
                                            only float32-representable values round-trip
Boolean                                     ``bool``
String, Text, UUID                          ``str``
DateTime                                    ``int``, UTC milliseconds since the epoch (uint64)
Bytes, File                                 ``bytes``
DataSet                                     :class:`DataSet`
Template                                    :class:`Template`
PropertySet / PropertySetList               :data:`PropertySet` / :data:`PropertySetList`
                                            (property values only)
Int8Array … UInt64Array, DateTimeArray      ``list[int]``  \\
FloatArray, DoubleArray                     ``list[float]`` | ``bytes_value``, packed
BooleanArray                                ``list[bool]``  | little-endian (spec 6.4.17);
StringArray                                 ``list[str]``  /  see ``core.sparkplug.arrays``
==========================================  ===================================================

``is_null=True`` means the value is null: ``value`` must be ``None`` and no value is sent.
``datatype=None`` on a Metric means "not on the wire": alias-only DATA and CMD messages omit it
(spec: SHOULD NOT be sent there). The encoder then takes the datatype from the alias map it is
given; the decoder resolves it from the alias map, or, when it cannot, leaves ``datatype=None``
and ``value`` as the raw protobuf value (unsigned integers as sent) for the caller to resolve
or dead-letter. Datatype 0 (Unknown, the spec's placeholder) is treated as "no datatype".
"""

from __future__ import annotations

import msgspec

from core.sparkplug.datatypes import DataType

__all__ = [
    "DataSet",
    "MetaData",
    "Metric",
    "Payload",
    "PropertySet",
    "PropertySetList",
    "PropertyValue",
    "Template",
    "TemplateParameter",
]


class PropertyValue(msgspec.Struct, frozen=True, gc=False):
    """A typed property value; ``type`` is a basic type, PropertySet or PropertySetList."""

    type: DataType
    value: object = None
    is_null: bool = False


PropertySet = dict[str, PropertyValue]
"""A metric's properties (e.g. ``{"Quality": PropertyValue(DataType.Int32, 192)}``)."""

PropertySetList = list[PropertySet]


class DataSet(msgspec.Struct, frozen=True, gc=False):
    """A table: one name and one basic datatype per column, rows of cells (``None`` = null)."""

    columns: list[str]
    types: list[DataType]
    rows: list[list[object]] = []


class TemplateParameter(msgspec.Struct, frozen=True, gc=False):
    """A Template parameter: the default on a definition, the actual value on an instance."""

    name: str
    type: DataType
    value: object = None


class Template(msgspec.Struct, frozen=True, gc=False):
    """A user-defined type: a definition (``is_definition=True``, no ``template_ref``) or an
    instance (``template_ref`` = the name of the definition's metric)."""

    metrics: list[Metric] = []
    parameters: list[TemplateParameter] = []
    version: str | None = None
    template_ref: str | None = None
    is_definition: bool = False


class MetaData(msgspec.Struct, frozen=True, gc=False):
    """Optional description of a (mostly binary) metric value; every field may be absent."""

    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


class Metric(msgspec.Struct, frozen=True, gc=False):
    """One metric: a name and/or alias, an acquisition timestamp (UTC ms) and a typed value."""

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: DataType | None = None
    value: object = None
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False
    properties: PropertySet | None = None
    metadata: MetaData | None = None


class Payload(msgspec.Struct, frozen=True, gc=False):
    """A Sparkplug B payload. ``batch`` is Derrick's end-to-end batch number, carried in the
    ``derrick_batch`` protobuf extension (field 5301) that other Sparkplug hosts ignore."""

    timestamp: int | None = None
    seq: int | None = None
    metrics: list[Metric] = []
    uuid: str | None = None
    body: bytes | None = None
    batch: int | None = None
