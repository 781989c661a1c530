"""A small, safe decoder of Universal Binary JSON (UBJSON, draft 12) as XGBoost writes it (`save_model("m.ubj")`).

Strongly typed numeric arrays (`[$d#L<n>...`) decode to native-endian numpy arrays in one
copy; everything else decodes to Python values as `json.loads` would give them. Malformed,
truncated or over-deep input raises ValueError; nothing is evaluated or allocated past the input's size.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

MAX_DEPTH = 64  # XGBoost models nest about 8 deep

# marker -> (struct format, size) of the scalar types; all big-endian
_SCALARS: dict[int, tuple[str, int]] = {
    ord("i"): (">b", 1),
    ord("U"): (">B", 1),
    ord("I"): (">h", 2),
    ord("l"): (">i", 4),
    ord("L"): (">q", 8),
    ord("d"): (">f", 4),
    ord("D"): (">d", 8),
}
_INTEGERS = frozenset(ord(c) for c in "iUIlL")
# typed-array element marker -> big-endian numpy dtype
_NUMPY_TYPES: dict[int, str] = {ord("i"): ">i1", ord("U"): ">u1", ord("I"): ">i2", ord("l"): ">i4", ord("L"): ">i8", ord("d"): ">f4", ord("D"): ">f8"}
_NO_PAYLOAD = {ord("Z"): None, ord("T"): True, ord("F"): False}
_NOOP = ord("N")


def loads(data: bytes | bytearray | memoryview, max_depth: int = MAX_DEPTH) -> Any:
    """The one value a UBJSON document holds (trailing no-op markers allowed, anything else after it refused)."""
    reader = _Reader(bytes(data), max_depth)
    value = reader.value(0)
    reader.skip_noops()
    if reader.pos != len(reader.data):
        raise ValueError(f"UBJSON: unexpected data after the document at byte {reader.pos}")
    return value


class _Reader:
    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data, self.pos, self.max_depth = data, 0, max_depth

    def fail(self, what: str) -> ValueError:
        return ValueError(f"UBJSON: {what} at byte {self.pos}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated input (needs {n} more bytes, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def marker(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("truncated input (expected a type marker)")
        self.pos += 1
        return self.data[self.pos - 1]

    def peek(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("truncated input (container not closed)")
        return self.data[self.pos]

    def skip_noops(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] == _NOOP:
            self.pos += 1

    def scalar(self, marker: int) -> int | float:
        fmt, size = _SCALARS[marker]
        value: int | float = struct.unpack(fmt, self.take(size))[0]
        return value

    def length(self) -> int:
        """A string length or container count: an integer of any width, never negative."""
        marker = self.marker()
        if marker not in _INTEGERS:
            raise self.fail(f"expected an integer length, found marker {chr(marker)!r}")
        n = int(self.scalar(marker))
        if n < 0:
            raise self.fail(f"negative length {n}")
        return n

    def string(self) -> str:
        raw = self.take(self.length())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise self.fail(f"string is not UTF-8 ({error.reason})") from None

    def value(self, depth: int, marker: int | None = None) -> Any:
        if marker is None:
            marker = self.marker()
            while marker == _NOOP:
                marker = self.marker()
        if marker in _SCALARS:
            return self.scalar(marker)
        if marker in _NO_PAYLOAD:
            return _NO_PAYLOAD[marker]
        if marker == ord("S"):
            return self.string()
        if marker == ord("C"):
            return self.take(1).decode("latin-1")
        if marker == ord("H"):
            return self.high_precision()
        if marker in (ord("["), ord("{")):
            if depth >= self.max_depth:
                raise self.fail(f"containers nested deeper than {self.max_depth}")
            return self.array(depth + 1) if marker == ord("[") else self.object(depth + 1)
        raise self.fail(f"unknown type marker {chr(marker)!r}" if 32 <= marker < 127 else f"unknown type marker 0x{marker:02x}")

    def high_precision(self) -> int | float:
        text = self.string()
        try:
            return int(text) if text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise self.fail(f"high-precision number {text[:40]!r} is not a number") from None

    def header(self) -> tuple[int | None, int | None]:
        """A container's optional `$type` and `#count` (a type needs a count)."""
        element: int | None = None
        if self.peek() == ord("$"):
            self.pos += 1
            element = self.marker()
            if self.peek() != ord("#"):
                raise self.fail("a typed container needs a count ('#')")
        count: int | None = None
        if self.peek() == ord("#"):
            self.pos += 1
            count = self.length()
            self.check_count(count, element)
        return element, count

    def check_count(self, count: int, element: int | None) -> None:
        """Refuse a count the remaining input cannot hold, before allocating anything for it."""
        left = len(self.data) - self.pos
        size = _SCALARS[element][1] if element in _SCALARS else 1
        if element in _NO_PAYLOAD:
            size = 0
        if count * size > left or (size == 0 and count > len(self.data)):
            raise self.fail(f"count {count} exceeds the input")

    def array(self, depth: int) -> Any:
        element, count = self.header()
        if element in _NUMPY_TYPES:
            assert count is not None
            dtype = np.dtype(_NUMPY_TYPES[element])
            raw = self.take(count * dtype.itemsize)
            return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        if count is not None:
            return [self.value(depth, element) for _ in range(count)]
        items: list[Any] = []
        while True:
            self.skip_noops()
            if self.peek() == ord("]"):
                self.pos += 1
                return items
            items.append(self.value(depth))

    def object(self, depth: int) -> dict[str, Any]:
        element, count = self.header()
        result: dict[str, Any] = {}
        if count is not None:
            for _ in range(count):
                key = self.string()
                result[key] = self.value(depth, element)
            return result
        while True:
            self.skip_noops()
            if self.peek() == ord("}"):
                self.pos += 1
                return result
            key = self.string()
            result[key] = self.value(depth)
