"""Packing of the Sparkplug 3.0 array datatypes into ``bytes_value`` (specification 6.4.17).

* Int8Array … UInt64Array, FloatArray, DoubleArray: the elements packed little-endian with
  their natural width (1, 2, 4, 8 bytes), no count and no padding.
* DateTimeArray: each element an 8-byte little-endian int64 of UTC ms since the epoch.
* BooleanArray: a 4-byte little-endian uint32 element count, then the elements packed 8 to a
  byte, the first element in the most significant bit, the last byte padded with zero bits.
  The specification's example: ``[F,F,T,T,F,T,F,F,T,T,F,T]`` -> ``0C 00 00 00 34 D0``.
* StringArray: each element as UTF-8 followed by a NUL byte (so elements cannot contain NUL).

The specification's example bytes for FloatArray and DateTimeArray contradict its own text
(big-endian floats; dropped zero bytes); we follow the text, as Eclipse Tahu does.

``pack_array`` and ``unpack_array`` raise ``ValueError`` (or ``TypeError`` for a value of the
wrong Python type) with a message that names the problem; the codec adds where it happened.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from core.sparkplug.datatypes import DataType

__all__ = ["pack_array", "unpack_array"]

# datatype -> struct format character (little-endian '<' is added), element size in bytes
_PACKED: dict[DataType, tuple[str, int]] = {
    DataType.Int8Array: ("b", 1),
    DataType.Int16Array: ("h", 2),
    DataType.Int32Array: ("i", 4),
    DataType.Int64Array: ("q", 8),
    DataType.UInt8Array: ("B", 1),
    DataType.UInt16Array: ("H", 2),
    DataType.UInt32Array: ("I", 4),
    DataType.UInt64Array: ("Q", 8),
    DataType.FloatArray: ("f", 4),
    DataType.DoubleArray: ("d", 8),
    DataType.DateTimeArray: ("q", 8),
}
_FLOAT_ARRAYS = frozenset({DataType.FloatArray, DataType.DoubleArray})

# BIT_UNPACK[b] = the eight booleans of byte b, most significant bit first
_BIT_UNPACK = tuple(tuple(bool(b & (0x80 >> i)) for i in range(8)) for b in range(256))


def _check_elements(datatype: DataType, values: Sequence[object]) -> None:
    if datatype in _FLOAT_ARRAYS:
        for i, v in enumerate(values):
            if type(v) is bool or not isinstance(v, float | int):
                raise TypeError(f"element {i} of {datatype.name} is {type(v).__name__}, not float")
    else:
        for i, v in enumerate(values):
            if type(v) is bool or not isinstance(v, int):
                raise TypeError(f"element {i} of {datatype.name} is {type(v).__name__}, not int")


def _pack_numbers(datatype: DataType, values: Sequence[object]) -> bytes:
    code, _ = _PACKED[datatype]
    if any(type(v) is bool for v in values):
        _check_elements(datatype, values)
    try:
        return struct.pack(f"<{len(values)}{code}", *values)
    except (struct.error, OverflowError) as exc:
        _check_elements(datatype, values)  # a clearer message for a wrong element type
        if datatype is DataType.FloatArray:
            raise ValueError(f"an element of FloatArray does not fit float32: {exc}") from None
        lo, hi = datatype.element_type.integer_range
        if datatype is DataType.DateTimeArray:
            lo, hi = -(1 << 63), (1 << 63) - 1
        for i, v in enumerate(values):
            if not lo <= v <= hi:  # type: ignore[operator]  # ints, checked above
                raise ValueError(
                    f"element {i} of {datatype.name} is {v}, out of range [{lo}, {hi}]"
                ) from None
        raise ValueError(f"cannot pack {datatype.name}: {exc}") from None


def _pack_booleans(values: Sequence[object]) -> bytes:
    out = bytearray(struct.pack("<I", len(values)))
    byte = 0
    for i, v in enumerate(values):
        if v is True:
            byte |= 0x80 >> (i & 7)
        elif v is not False:
            raise TypeError(f"element {i} of BooleanArray is {type(v).__name__}, not bool")
        if i & 7 == 7:
            out.append(byte)
            byte = 0
    if len(values) & 7:
        out.append(byte)
    return bytes(out)


def _pack_strings(values: Sequence[object]) -> bytes:
    parts = []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"element {i} of StringArray is {type(v).__name__}, not str")
        if "\x00" in v:
            raise ValueError(f"element {i} of StringArray contains NUL, which ends an element")
        parts.append(v.encode("utf-8"))
        parts.append(b"\x00")
    return b"".join(parts)


def pack_array(datatype: DataType, values: object) -> bytes:
    """Pack a list of elements of an array ``datatype`` into its ``bytes_value`` form."""
    if not isinstance(values, list | tuple):
        raise TypeError(f"{datatype.name} value must be a list, got {type(values).__name__}")
    if datatype is DataType.BooleanArray:
        return _pack_booleans(values)
    if datatype is DataType.StringArray:
        return _pack_strings(values)
    return _pack_numbers(datatype, values)


def _unpack_numbers(datatype: DataType, data: bytes) -> list[object]:
    code, size = _PACKED[datatype]
    count, extra = divmod(len(data), size)
    if extra:
        raise ValueError(
            f"{datatype.name} bytes_value has {len(data)} bytes, not a multiple of {size}"
            " (truncated?)"
        )
    return list(struct.unpack(f"<{count}{code}", data))


def _unpack_booleans(data: bytes) -> list[object]:
    if len(data) < 4:
        raise ValueError(f"BooleanArray bytes_value has {len(data)} bytes, less than its count")
    (count,) = struct.unpack_from("<I", data)
    needed = 4 + (count + 7) // 8
    if len(data) != needed:
        raise ValueError(
            f"BooleanArray of {count} elements needs {needed} bytes, bytes_value has {len(data)}"
        )
    out: list[object] = []
    extend = out.extend
    for byte in data[4:]:
        extend(_BIT_UNPACK[byte])
    del out[count:]
    return out


def _unpack_strings(data: bytes) -> list[object]:
    if not data:
        return []
    if data[-1] != 0:
        raise ValueError("StringArray bytes_value does not end with NUL (truncated?)")
    try:
        return [part.decode("utf-8") for part in data[:-1].split(b"\x00")]
    except UnicodeDecodeError as exc:
        raise ValueError(f"StringArray element is not valid UTF-8: {exc}") from None


def unpack_array(datatype: DataType, data: bytes) -> list[object]:
    """Unpack the ``bytes_value`` of an array ``datatype`` into a list of elements."""
    if datatype is DataType.BooleanArray:
        return _unpack_booleans(data)
    if datatype is DataType.StringArray:
        return _unpack_strings(data)
    return _unpack_numbers(datatype, data)


def packer(datatype: DataType) -> Callable[[object], bytes]:
    """``pack_array`` bound to one datatype (for dispatch tables)."""
    return lambda values: pack_array(datatype, values)


def unpacker(datatype: DataType) -> Callable[[bytes], list[object]]:
    """``unpack_array`` bound to one datatype (for dispatch tables)."""
    return lambda data: unpack_array(datatype, data)
