"""Encoding and decoding of the nested Sparkplug structures that hold no metrics:
PropertySet / PropertySetList / PropertyValue, DataSet, MetaData (specification 6.4.7 to 6.4.15).

Each function fills a protobuf message in place (encode) or builds the model value from one
(decode). Problems raise ``TypeError``/``ValueError`` with a message that names the property,
column or row; ``core.sparkplug.codec`` turns them into PayloadEncodeError/PayloadDecodeError
that also say which metric.
"""

from __future__ import annotations

from typing import Any

from core.sparkplug import sparkplug_b_pb2 as pb
from core.sparkplug.datatypes import DataType
from core.sparkplug.model import DataSet, MetaData, PropertySet, PropertyValue
from core.sparkplug.values import BASIC_VALUES, DATATYPE_BY_NUMBER, checked_text

__all__ = [
    "decode_dataset",
    "decode_metadata",
    "decode_property_set",
    "encode_dataset",
    "encode_metadata",
    "encode_property_set",
]

_PROPERTY_SET = DataType.PropertySet
_PROPERTY_SET_LIST = DataType.PropertySetList
_METADATA_FIELDS = tuple(MetaData.__struct_fields__)


def _datatype(number: object, what: str) -> DataType:
    datatype = DATATYPE_BY_NUMBER.get(number) if isinstance(number, int) else None
    if datatype is None:
        raise ValueError(f"{what} {number!r} is not a Sparkplug datatype")
    return datatype


def _prefixed(exc: Exception, message: str) -> Exception:
    """A TypeError or ValueError like ``exc`` but with ``message`` (which includes it)."""
    return TypeError(message) if isinstance(exc, TypeError) else ValueError(message)


# -- property sets ---------------------------------------------------------------------------


def encode_property_set(target: pb.Payload.PropertySet, properties: object) -> None:
    if not isinstance(properties, dict):
        raise TypeError(f"a PropertySet must be a dict, got {type(properties).__name__}")
    target.SetInParent()  # present even when empty
    add_key = target.keys.append
    add_value = target.values.add
    for key, prop in properties.items():
        if not isinstance(key, str):
            raise TypeError(f"property key {key!r} is not a str")
        add_key(key)
        try:
            _encode_property_value(add_value(), prop)
        except (TypeError, ValueError) as exc:
            raise _prefixed(exc, f"property {key!r}: {exc}") from exc


def _encode_property_value(target: pb.Payload.PropertyValue, prop: object) -> None:
    if not isinstance(prop, PropertyValue):
        raise TypeError(f"value must be a PropertyValue, got {type(prop).__name__}")
    datatype = _datatype(prop.type, "type")
    target.type = datatype
    value = prop.value
    if prop.is_null:
        if value is not None:
            raise ValueError("is_null is set but a value is given")
        target.is_null = True
    elif value is None:
        return
    elif datatype is _PROPERTY_SET:
        encode_property_set(target.propertyset_value, value)
    elif datatype is _PROPERTY_SET_LIST:
        if not isinstance(value, list):
            raise TypeError(f"a PropertySetList must be a list, got {type(value).__name__}")
        target.propertysets_value.SetInParent()
        add = target.propertysets_value.propertyset.add
        for index, item in enumerate(value):
            try:
                encode_property_set(add(), item)
            except (TypeError, ValueError) as exc:
                raise _prefixed(exc, f"PropertySetList item {index}: {exc}") from exc
    else:
        spec = BASIC_VALUES.get(datatype)
        if spec is None:
            raise ValueError(f"{datatype.name} is not a property value type")
        field, to_wire, _ = spec
        setattr(target, field, to_wire(value))


def decode_property_set(source: pb.Payload.PropertySet) -> PropertySet:
    keys = source.keys
    values = source.values
    if len(keys) != len(values):
        raise ValueError(f"PropertySet has {len(keys)} keys but {len(values)} values")
    result: PropertySet = {}
    for key, prop in zip(keys, values, strict=True):
        checked_text(key, "property key")
        try:
            result[key] = _decode_property_value(prop)
        except (TypeError, ValueError) as exc:
            raise _prefixed(exc, f"property {key!r}: {exc}") from exc
    return result


def _decode_property_value(source: pb.Payload.PropertyValue) -> PropertyValue:
    datatype = _datatype(source.type, "type")
    which = source.WhichOneof("value")
    value: Any = None
    if which is None:
        pass
    elif datatype is _PROPERTY_SET:
        if which != "propertyset_value":
            raise ValueError(f"PropertySet value must be in propertyset_value, not {which}")
        value = decode_property_set(source.propertyset_value)
    elif datatype is _PROPERTY_SET_LIST:
        if which != "propertysets_value":
            raise ValueError(f"PropertySetList value must be in propertysets_value, not {which}")
        value = [decode_property_set(item) for item in source.propertysets_value.propertyset]
    elif datatype is DataType.Unknown:
        value = None if which == "extension_value" else getattr(source, which)
        if which == "propertyset_value":
            value = decode_property_set(value)
        elif which == "propertysets_value":
            value = [decode_property_set(item) for item in value.propertyset]
    else:
        spec = BASIC_VALUES.get(datatype)
        if spec is None:
            raise ValueError(f"{datatype.name} is not a property value type")
        field, _, from_wire = spec
        if which != field:
            raise ValueError(f"{datatype.name} value must be in {field}, not {which}")
        value = getattr(source, which)
        if from_wire is not None:
            value = from_wire(value)
    if source.is_null and value is not None:
        raise ValueError("is_null is set but a value is present")
    return PropertyValue(datatype, value, source.is_null)


# -- data sets ---------------------------------------------------------------------------------


def encode_dataset(target: pb.Payload.DataSet, dataset: object) -> None:
    if not isinstance(dataset, DataSet):
        raise TypeError(f"DataSet value must be a DataSet, got {type(dataset).__name__}")
    columns, types = dataset.columns, dataset.types
    if len(columns) != len(types):
        raise ValueError(f"DataSet has {len(columns)} columns but {len(types)} types")
    specs = []
    for index, number in enumerate(types):
        datatype = _datatype(number, f"column {index} type")
        spec = BASIC_VALUES.get(datatype)
        if spec is None:
            raise ValueError(f"column {index} type {datatype.name} is not a basic type")
        specs.append(spec)
    target.num_of_columns = len(columns)
    target.columns.extend(columns)
    target.types.extend(int(t) for t in types)
    add_row = target.rows.add
    for row_index, row in enumerate(dataset.rows):
        if len(row) != len(specs):
            raise ValueError(f"row {row_index} has {len(row)} cells for {len(specs)} columns")
        add_cell = add_row().elements.add
        for column, (cell, (field, to_wire, _)) in enumerate(zip(row, specs, strict=True)):
            element = add_cell()
            if cell is not None:
                try:
                    setattr(element, field, to_wire(cell))
                except (TypeError, ValueError) as exc:
                    raise _prefixed(exc, f"row {row_index} column {column}: {exc}") from exc


def decode_dataset(source: pb.Payload.DataSet) -> DataSet:
    columns = [checked_text(column, "DataSet column name") for column in source.columns]
    numbers = list(source.types)
    if len(columns) != len(numbers):
        raise ValueError(f"DataSet has {len(columns)} columns but {len(numbers)} types")
    if source.HasField("num_of_columns") and source.num_of_columns != len(columns):
        raise ValueError(f"DataSet num_of_columns {source.num_of_columns} != {len(columns)}")
    types = []
    specs = []
    for index, number in enumerate(numbers):
        datatype = _datatype(number, f"column {index} type")
        spec = BASIC_VALUES.get(datatype)
        if spec is None:
            raise ValueError(f"column {index} type {datatype.name} is not a basic type")
        types.append(datatype)
        specs.append(spec)
    rows: list[list[object]] = []
    for row_index, row in enumerate(source.rows):
        elements = row.elements
        if len(elements) != len(specs):
            raise ValueError(f"row {row_index} has {len(elements)} cells for {len(specs)} columns")
        cells: list[object] = []
        for column, (element, (field, _, from_wire)) in enumerate(
            zip(elements, specs, strict=True)
        ):
            which = element.WhichOneof("value")
            if which is None:
                cells.append(None)
                continue
            if which != field:
                raise ValueError(
                    f"row {row_index} column {column}: {types[column].name} value must be in"
                    f" {field}, not {which}"
                )
            value = getattr(element, which)
            if from_wire is not None:
                try:
                    value = from_wire(value)
                except ValueError as exc:
                    raise ValueError(f"row {row_index} column {column}: {exc}") from exc
            cells.append(value)
        rows.append(cells)
    return DataSet(columns, types, rows)


# -- metadata ----------------------------------------------------------------------------------


def encode_metadata(target: pb.Payload.MetaData, metadata: object) -> None:
    if not isinstance(metadata, MetaData):
        raise TypeError(f"metadata must be a MetaData, got {type(metadata).__name__}")
    target.SetInParent()
    for field in _METADATA_FIELDS:
        value = getattr(metadata, field)
        if value is not None:
            try:
                setattr(target, field, value)
            except (TypeError, ValueError) as exc:
                raise _prefixed(exc, f"metadata {field}: {exc}") from exc


def decode_metadata(source: pb.Payload.MetaData) -> MetaData:
    has: Any = source.HasField  # field names come from MetaData, which mirrors the message
    values = [getattr(source, field) if has(field) else None for field in _METADATA_FIELDS]
    for field, value in zip(_METADATA_FIELDS, values, strict=True):
        if isinstance(value, bytes):  # a string field holding invalid UTF-8
            checked_text(value, f"metadata {field}")
    return MetaData(*values)
