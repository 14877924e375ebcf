"""Per-datatype conversion between Python values and Sparkplug's protobuf value fields.

For every datatype that can carry a value, :data:`METRIC_VALUES` gives the oneof field it
travels in, a ``to_wire`` function (checks the Python value against the datatype and returns
what to store in the field) and a ``from_wire`` function (checks the stored value and returns
the Python value; ``None`` where the field's value is already the answer). The conventions are
documented in ``core.sparkplug.model``. The functions raise ``TypeError``/``ValueError`` with a
message naming the datatype; the codec adds where in the payload it happened.

:data:`BASIC_VALUES` is the subset that PropertyValues, DataSet cells and Template parameters
may use (the basic types Int8 … Text), whose oneofs have no ``bytes_value``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from core.sparkplug.arrays import pack_array, unpack_array
from core.sparkplug.datatypes import DataType

__all__ = ["BASIC_VALUES", "DATATYPE_BY_NUMBER", "METRIC_VALUES", "ValueSpec", "checked_text"]

ToWire = Callable[[Any], Any]
FromWire = Callable[[Any], Any] | None
ValueSpec = tuple[str, ToWire, FromWire]
"""(oneof field name, to_wire, from_wire or None for identity)"""

DATATYPE_BY_NUMBER: dict[int, DataType] = {int(dt): dt for dt in DataType}
"""Wire number -> DataType, for every number the specification defines."""

_FLOAT32_MAX = 3.4028234663852886e38


def _not_a(datatype: DataType, value: object, expected: str) -> TypeError:
    return TypeError(f"{datatype.name} value must be {expected}, got {type(value).__name__}")


def _integer(datatype: DataType) -> tuple[ToWire, FromWire]:
    lo, hi = datatype.integer_range
    width = datatype.bit_width
    assert width is not None
    wire_bits = 32 if width <= 32 else 64
    field = "int_value" if wire_bits == 32 else "long_value"
    mask = (1 << wire_bits) - 1
    sign_bit = 1 << (wire_bits - 1)
    signed = datatype.is_signed
    name = datatype.name

    def to_wire(value: Any) -> int:
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
            raise _not_a(datatype, value, "int")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range for {name} [{lo}, {hi}]")
        return value & mask

    def from_signed(wire: int) -> int:
        value = wire - (mask + 1) if wire & sign_bit else wire
        if not lo <= value <= hi:
            raise ValueError(f"{field} {wire} does not fit {name}")
        return value

    def from_narrow_unsigned(wire: int) -> int:
        if wire > hi:
            raise ValueError(f"{field} {wire} does not fit {name}")
        return wire

    if signed:
        return to_wire, from_signed
    if width < wire_bits:
        return to_wire, from_narrow_unsigned
    return to_wire, None


def _float32(value: object) -> float:
    if type(value) is float:
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = float(value)
    else:
        raise _not_a(DataType.Float, value, "float")
    if -_FLOAT32_MAX <= number <= _FLOAT32_MAX or not math.isfinite(number):
        return number
    raise ValueError(f"{number} does not fit Float (32-bit)")


def _float64(value: Any) -> float:
    if type(value) is float:
        return value
    if not isinstance(value, float | int) or isinstance(value, bool):
        raise _not_a(DataType.Double, value, "float")
    return float(value)


def _boolean(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise _not_a(DataType.Boolean, value, "bool")


def _text(datatype: DataType) -> ToWire:
    def to_wire(value: Any) -> str:
        if not isinstance(value, str):
            raise _not_a(datatype, value, "str")
        return value

    return to_wire


def checked_text(value: Any, what: str) -> Any:
    """``value`` if it is a str. For a proto2 string field holding invalid UTF-8, the upb
    backend returns ``bytes`` instead of failing, so every decoded string is checked."""
    if type(value) is not str:
        raise ValueError(f"{what} is not valid UTF-8: {value!r}")
    return value


def _text_checker(what: str) -> FromWire:
    return lambda value: checked_text(value, what)


def _datetime(value: Any) -> int:
    if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
        raise _not_a(DataType.DateTime, value, "int (UTC ms since the epoch)")
    if not 0 <= value < 1 << 64:
        raise ValueError(f"DateTime {value} is out of range [0, 2**64 - 1]")
    return value


def _binary(datatype: DataType) -> ToWire:
    def to_wire(value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise _not_a(datatype, value, "bytes")
        return bytes(value)

    return to_wire


def _array(datatype: DataType) -> tuple[ToWire, FromWire]:
    return (lambda value: pack_array(datatype, value)), (lambda data: unpack_array(datatype, data))


def _build() -> dict[DataType, ValueSpec]:
    specs: dict[DataType, ValueSpec] = {}
    for dt in DataType:
        if dt.is_integer:
            to_wire, from_wire = _integer(dt)
            specs[dt] = (
                ("int_value" if (dt.bit_width or 0) <= 32 else "long_value"),
                to_wire,
                from_wire,
            )
        elif dt.is_array:
            to_wire, from_wire = _array(dt)
            specs[dt] = ("bytes_value", to_wire, from_wire)
    specs[DataType.Float] = ("float_value", _float32, None)
    specs[DataType.Double] = ("double_value", _float64, None)
    specs[DataType.Boolean] = ("boolean_value", _boolean, None)
    for dt in (DataType.String, DataType.Text, DataType.UUID):
        specs[dt] = ("string_value", _text(dt), _text_checker(f"{dt.name} value"))
    specs[DataType.DateTime] = ("long_value", _datetime, None)
    for dt in (DataType.Bytes, DataType.File):
        specs[dt] = ("bytes_value", _binary(dt), None)
    return specs


METRIC_VALUES: dict[DataType, ValueSpec] = _build()
"""Every scalar and array datatype a metric value may have (not DataSet, Template, Unknown,
PropertySet, PropertySetList: the codec handles those)."""

BASIC_VALUES: dict[DataType, ValueSpec] = {
    dt: spec for dt, spec in METRIC_VALUES.items() if dt.is_basic
}
"""The basic types (Int8 … Text): PropertyValue, DataSet cell and Template parameter values."""
