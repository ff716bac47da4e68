"""What a zip archive declares about itself, read from its end record before ``zipfile`` reads its directory.

``zipfile.ZipFile`` builds one object per member as it opens an archive; a hostile file can declare millions.
``zip_member_count`` reads the count (zip64 included) from the last 64 KiB, so readers refuse such a file first.
"""
from __future__ import annotations

import struct
from typing import BinaryIO

from ..errors import FormatError

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"


def zip_member_count(handle: BinaryIO, size: int) -> int:
    """How many members a zip declares, from its end-of-central-directory record (zip64 too)."""
    tail_size = min(size, 65536 + 22)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise FormatError("the zip archive has no end-of-central-directory record; the file is truncated")
    count, cd_size, cd_offset = struct.unpack("<HII", tail[at + 10:at + 20])
    if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        locator = tail[at - 20:at] if at >= 20 else b""
        if not locator.startswith(_EOCD64_LOCATOR):
            raise FormatError("the zip archive's zip64 record is missing; the file is corrupt")
        (record_at,) = struct.unpack("<Q", locator[8:16])
        if record_at + 56 > size:
            raise FormatError("the zip archive's zip64 record lies outside the file; the file is corrupt")
        handle.seek(record_at)
        record = handle.read(56)
        count, cd_size = struct.unpack("<QQ", record[32:48])
    if cd_size > size:
        raise FormatError(f"the zip archive declares a directory of {cd_size} bytes in a file of {size}")
    return count


__all__ = ["zip_member_count"]
