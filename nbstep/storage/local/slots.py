"""The slot index of a namespace log: find a step's current frame without reading the log.

``logs/<id>.idx`` lists, for every current slot of the log up to ``covered`` bytes,
where its frame starts: fixed-size entries ``(key hash, sequence, offset)`` sorted by
``(key hash, sequence)``, so a lookup is a binary search in a memory map, whatever
the namespace's size. It is derived data: written atomically (temp file + rename)
when the part of the log it does not cover grows long, and by gc; one that is
missing, damaged or of another log generation is ignored, and the log read instead.

Layout (little endian)::

    magic b"NBSI" | u32 version | u64 generation | u64 covered | u64 max event id | u64 count
    count x (u64 key hash, u32 sequence, u64 frame offset)
    u32 crc32 of everything before it
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from nbstep.storage.objects import fsync_dir

_HEADER = struct.Struct("<4sIQQQQ")
_ENTRY = struct.Struct("<QIQ")
_CRC = struct.Struct("<I")
MAGIC = b"NBSI"
VERSION = 1


def key_hash(key: str) -> int:
    """64 bits of blake2b of the key's UTF-8 (stable across processes and machines)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class SlotIndex:
    """An index file, mapped; None-safe: ``open`` returns None for anything unusable."""

    def __init__(self, mapped: mmap.mmap, generation: int, covered: int, max_event_id: int,
                 count: int) -> None:
        self._map = mapped
        self.generation = generation
        self.covered = covered
        self.max_event_id = max_event_id
        self.count = count

    @classmethod
    def open(cls, path: Path, generation: int) -> SlotIndex | None:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < _HEADER.size + _CRC.size:
                    return None
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (FileNotFoundError, ValueError, OSError):
            return None
        magic, version, gen, covered, max_event_id, count = _HEADER.unpack_from(mapped, 0)
        expected = _HEADER.size + count * _ENTRY.size + _CRC.size
        if (magic != MAGIC or version != VERSION or gen != generation or size != expected
                or zlib.crc32(mapped[:size - _CRC.size]) != _CRC.unpack_from(mapped,
                                                                              size - _CRC.size)[0]):
            mapped.close()
            return None
        return cls(mapped, gen, covered, max_event_id, count)

    def _entry(self, i: int) -> tuple[int, int, int]:
        return _ENTRY.unpack_from(self._map, _HEADER.size + i * _ENTRY.size)

    def offsets(self, key: str, sequence: int) -> list[int]:
        """Frame offsets of entries for ``(key, sequence)`` (several on a hash collision)."""
        target = (key_hash(key), sequence)
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._entry(mid)[:2] < target:
                lo = mid + 1
            else:
                hi = mid
        found = []
        while lo < self.count:
            h, seq, offset = self._entry(lo)
            if (h, seq) != target:
                break
            found.append(offset)
            lo += 1
        return found

    def entries(self) -> list[tuple[int, int, int]]:
        start = _HEADER.size
        return list(_ENTRY.iter_unpack(self._map[start:start + self.count * _ENTRY.size]))

    def close(self) -> None:
        self._map.close()


def write(path: Path, generation: int, covered: int, max_event_id: int,
          entries: Iterable[tuple[int, int, int]]) -> None:
    """Write an index atomically: a temp file beside it, fsynced, renamed over it."""
    ordered = sorted(entries)
    body = b"".join([
        _HEADER.pack(MAGIC, VERSION, generation, covered, max_event_id, len(ordered)),
        *(_ENTRY.pack(*entry) for entry in ordered),
    ])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(body + _CRC.pack(zlib.crc32(body)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
