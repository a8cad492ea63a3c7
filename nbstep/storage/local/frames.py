"""The frames of a namespace log: one event each, found again after any damage.

A frame is::

    magic   4 bytes   b"\\x93NBF"
    length  u32 LE    of the body
    crc     u32 LE    crc32 of the body
    body    u32 LE json_length, the event as UTF-8 JSON, then the inline value's
            bytes (if any) up to the end of the body

Plain data only: JSON text and raw bytes, so reading a log never needs a user's
class (or any Python at all). A frame is valid when its magic, length and crc agree.
:func:`scan` walks a log and reports every valid frame and every stretch of bytes
that is not one: damage in the middle (a flipped byte, a torn write that later
writes followed) is skipped by looking for the next valid frame, so every intact
frame before and after it is kept; damage at the very end that no valid frame
follows is a torn tail, the last append of a process that died before it returned.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

MAGIC = b"\x93NBF"
_HEAD = struct.Struct("<4sII")  # magic, length, crc
_JSON_LENGTH = struct.Struct("<I")
HEAD_SIZE = _HEAD.size
# A frame longer than this is damage, not data: an inline value is at most
# inline_limit bytes, and JSON around it a few KiB.
MAX_BODY = 1 << 30

_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                check_circular=False, allow_nan=False).encode
_json_decode = json.JSONDecoder().decode
_HEAD_UNPACK = _HEAD.unpack_from
_JSON_UNPACK = _JSON_LENGTH.unpack_from
_crc32 = zlib.crc32


def encode(event: dict[str, Any], blob: bytes | memoryview | None = None) -> bytes:
    """One frame holding ``event`` (plain JSON data) and, optionally, raw bytes."""
    text = _json_encode(event).encode("utf-8")
    body = b"".join((_JSON_LENGTH.pack(len(text)), text, blob if blob is not None else b""))
    return _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body


class Frame(NamedTuple):
    """A valid frame at ``offset`` (``end`` is where the next one starts); a named
    tuple, built fast: reading a log makes one per event."""

    offset: int
    end: int
    event: dict[str, Any]
    blob_start: int  # offset of the inline value's bytes in the log (== end: none)

    @property
    def has_blob(self) -> bool:
        return self.blob_start < self.end


class Damage(NamedTuple):
    """Bytes ``[offset, end)`` that are no valid frame; ``torn``: nothing valid follows."""

    offset: int
    end: int
    torn: bool


def decode_at(data: Any, offset: int, base: int = 0) -> Frame | None:
    """The valid frame starting exactly at ``offset`` of ``data``, else None.

    ``data`` is bytes read from a log at offset ``base``: the frame's offsets are
    the log's (``offset + base``).
    """
    size = len(data)
    if size - offset < HEAD_SIZE:
        return None
    magic, length, crc = _HEAD_UNPACK(data, offset)
    if magic != MAGIC or length < _JSON_LENGTH.size or length > MAX_BODY:
        return None
    start = offset + HEAD_SIZE
    end = start + length
    if end > size:
        return None
    view = memoryview(data)
    if _crc32(view[start:end]) != crc:
        return None
    text_start = start + _JSON_LENGTH.size
    text_end = text_start + _JSON_UNPACK(data, start)[0]
    if text_end > end:
        return None
    try:
        event = _json_decode(str(view[text_start:text_end], "utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if type(event) is not dict:
        return None
    return Frame(offset + base, end + base, event, text_end + base)


def scan(data: Any, offset: int = 0, base: int = 0) -> Iterator[Frame | Damage]:
    """Every valid frame and every damaged stretch of ``data`` from ``offset`` on
    (offsets in the log, where ``data`` starts at ``base``)."""
    size = len(data)
    while offset < size:
        frame = decode_at(data, offset, base)
        if frame is not None:
            yield frame
            offset = frame.end - base
            continue
        following = _next_frame(data, offset + 1)
        if following is None:
            yield Damage(offset + base, size + base, torn=True)
            return
        yield Damage(offset + base, following + base, torn=False)
        offset = following


def _next_frame(data: Any, offset: int) -> int | None:
    """The offset of the next valid frame at or after ``offset``, if any."""
    find = data.find
    while True:
        found = find(MAGIC, offset)
        if found < 0:
            return None
        if decode_at(data, found) is not None:
            return found
        offset = found + 1
