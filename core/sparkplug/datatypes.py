"""Sparkplug B 3.0 datatypes (specification 6.4.16) and what each one means in Python.

The numbers are the wire values of ``Metric.datatype``, ``PropertyValue.type``,
``DataSet.types`` and ``Template.Parameter.type``. :class:`ValueKind` says which Python type
the codec uses for a value of each datatype (see ``core.sparkplug.model`` for the full
conventions).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["DataType", "ValueKind"]


class ValueKind(StrEnum):
    """The Python type that carries a value of a datatype."""

    NONE = "none"  # Unknown: no value can be carried
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STR = "str"
    BYTES = "bytes"
    DATASET = "DataSet"
    TEMPLATE = "Template"
    PROPERTY_SET = "PropertySet"
    PROPERTY_SET_LIST = "PropertySetList"
    LIST = "list"  # the array types: a list of the element type's kind


class DataType(IntEnum):
    """Every Sparkplug B 3.0 datatype, numbered as on the wire."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34

    @property
    def is_array(self) -> bool:
        """True for Int8Array … DateTimeArray (carried packed in ``bytes_value``)."""
        return self in _ELEMENT_TYPE

    @property
    def element_type(self) -> DataType:
        """The datatype of one element of an array type; ``ValueError`` for a non-array."""
        try:
            return _ELEMENT_TYPE[self]
        except KeyError:
            raise ValueError(f"{self.name} is not an array datatype") from None

    @property
    def is_integer(self) -> bool:
        """True for the eight fixed-width integer types Int8 … UInt64."""
        return self in _INTEGER_RANGE

    @property
    def is_signed(self) -> bool:
        """True for Int8, Int16, Int32, Int64 (sent as two's complement)."""
        return self in _SIGNED

    @property
    def bit_width(self) -> int | None:
        """Width in bits of an integer or floating-point type, else ``None``."""
        return _BIT_WIDTH.get(self)

    @property
    def integer_range(self) -> tuple[int, int]:
        """Inclusive (min, max) of an integer type; ``ValueError`` for any other type."""
        try:
            return _INTEGER_RANGE[self]
        except KeyError:
            raise ValueError(f"{self.name} is not an integer datatype") from None

    @property
    def value_kind(self) -> ValueKind:
        """The Python type that carries a value of this datatype."""
        return _VALUE_KIND[self]

    @property
    def is_basic(self) -> bool:
        """True for the basic types (Int8 … Text) that DataSet columns and Template
        parameters may use."""
        return DataType.Int8 <= self <= DataType.Text


_SIGNED = frozenset({DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64})

_BIT_WIDTH = {
    DataType.Int8: 8,
    DataType.Int16: 16,
    DataType.Int32: 32,
    DataType.Int64: 64,
    DataType.UInt8: 8,
    DataType.UInt16: 16,
    DataType.UInt32: 32,
    DataType.UInt64: 64,
    DataType.Float: 32,
    DataType.Double: 64,
}

_INTEGER_RANGE = {
    dt: (
        (-(1 << (_BIT_WIDTH[dt] - 1)), (1 << (_BIT_WIDTH[dt] - 1)) - 1)
        if dt in _SIGNED
        else (0, (1 << _BIT_WIDTH[dt]) - 1)
    )
    for dt in (
        DataType.Int8,
        DataType.Int16,
        DataType.Int32,
        DataType.Int64,
        DataType.UInt8,
        DataType.UInt16,
        DataType.UInt32,
        DataType.UInt64,
    )
}

_ELEMENT_TYPE = {
    DataType.Int8Array: DataType.Int8,
    DataType.Int16Array: DataType.Int16,
    DataType.Int32Array: DataType.Int32,
    DataType.Int64Array: DataType.Int64,
    DataType.UInt8Array: DataType.UInt8,
    DataType.UInt16Array: DataType.UInt16,
    DataType.UInt32Array: DataType.UInt32,
    DataType.UInt64Array: DataType.UInt64,
    DataType.FloatArray: DataType.Float,
    DataType.DoubleArray: DataType.Double,
    DataType.BooleanArray: DataType.Boolean,
    DataType.StringArray: DataType.String,
    DataType.DateTimeArray: DataType.DateTime,
}

_VALUE_KIND: dict[DataType, ValueKind] = {
    DataType.Unknown: ValueKind.NONE,
    **{dt: ValueKind.INT for dt in _INTEGER_RANGE},
    DataType.Float: ValueKind.FLOAT,
    DataType.Double: ValueKind.FLOAT,
    DataType.Boolean: ValueKind.BOOL,
    DataType.String: ValueKind.STR,
    DataType.DateTime: ValueKind.INT,
    DataType.Text: ValueKind.STR,
    DataType.UUID: ValueKind.STR,
    DataType.DataSet: ValueKind.DATASET,
    DataType.Bytes: ValueKind.BYTES,
    DataType.File: ValueKind.BYTES,
    DataType.Template: ValueKind.TEMPLATE,
    DataType.PropertySet: ValueKind.PROPERTY_SET,
    DataType.PropertySetList: ValueKind.PROPERTY_SET_LIST,
    **{dt: ValueKind.LIST for dt in _ELEMENT_TYPE},
}
