"""A small, bounded decoder of the protocol-buffer wire format, for the few TensorFlow messages importers read.

No ``.proto`` files and no generated code: a message is decoded one level at a time into
``{field number: [values]}`` (varints as ``int``, length-delimited fields as ``bytes``, fixed32/fixed64 as
``int``); the caller decodes nested messages it wants by calling ``decode`` again on their bytes. Every length
is checked against what is left of the buffer, so a hostile message can make this raise ``FormatError`` but
never allocate more than its own size.
"""
from __future__ import annotations

from ..errors import FormatError

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5
MAX_FIELDS = 10_000_000  # values in one message; bounded by its size anyway, this only fails faster


def read_varint(data: bytes | memoryview, pos: int, what: str) -> tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it."""
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end or shift > 63:
            raise FormatError(f"{what}: truncated or overlong varint at byte {pos}; the file is damaged")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7


def signed64(value: int) -> int:
    """A varint read as protobuf's int64 (negative numbers take ten bytes)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def decode(data: bytes | memoryview, what: str, *,
           only: frozenset[int] | None = None) -> dict[int, list[int | bytes]]:
    """Decode one message level: field number -> its values, in order (``only``: keep just these fields; the
    others are skipped without being copied, which matters for the big graphs of a ``saved_model.pb``)."""
    fields: dict[int, list[int | bytes]] = {}
    pos, end, count = 0, len(data), 0
    while pos < end:
        tag, pos = read_varint(data, pos, what)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise FormatError(f"{what}: field number 0 at byte {pos}; the file is damaged")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = read_varint(data, pos, what)
        elif wire_type == BYTES:
            length, pos = read_varint(data, pos, what)
            if length > end - pos:
                raise FormatError(f"{what}: a field declares {length} bytes but {end - pos} are left")
            keep = only is None or number in only
            value, pos = (bytes(data[pos:pos + length]) if keep else b""), pos + length
        elif wire_type in (FIXED32, FIXED64):
            width = 4 if wire_type == FIXED32 else 8
            if width > end - pos:
                raise FormatError(f"{what}: truncated fixed-width field at byte {pos}")
            value, pos = int.from_bytes(data[pos:pos + width], "little"), pos + width
        else:
            raise FormatError(f"{what}: unsupported protobuf wire type {wire_type} at byte {pos}")
        count += 1
        if count > MAX_FIELDS:
            raise FormatError(f"{what}: more than {MAX_FIELDS} fields in one message")
        if only is None or number in only:
            fields.setdefault(number, []).append(value)
    return fields


def first(fields: dict[int, list[int | bytes]], number: int, default: int | bytes) -> int | bytes:
    """The last value of a singular field (protobuf's last-one-wins), or ``default`` when absent."""
    values = fields.get(number)
    return values[-1] if values else default


def integer(fields: dict[int, list[int | bytes]], number: int, what: str, default: int = 0) -> int:
    value = first(fields, number, default)
    if not isinstance(value, int):
        raise FormatError(f"{what}: field {number} should be a number; the file is damaged")
    return value


def text(fields: dict[int, list[int | bytes]], number: int, what: str, default: str = "") -> str:
    value = first(fields, number, default.encode())
    return _as_text(value, what)


def texts(fields: dict[int, list[int | bytes]], number: int, what: str) -> list[str]:
    return [_as_text(value, what) for value in fields.get(number, [])]


def messages(fields: dict[int, list[int | bytes]], number: int, what: str) -> list[bytes]:
    values = fields.get(number, [])
    if not all(isinstance(value, bytes) for value in values):
        raise FormatError(f"{what}: field {number} should be a message; the file is damaged")
    return values  # type: ignore[return-value]


def _as_text(value: int | bytes, what: str) -> str:
    if not isinstance(value, bytes):
        raise FormatError(f"{what}: a text field holds a number; the file is damaged")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FormatError(f"{what}: a text field is not UTF-8 ({error.reason})") from None
