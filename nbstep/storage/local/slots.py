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

    def position(self, target: tuple[int, int], lo: int = 0) -> int:
        """The index of the first entry at or after ``(key hash, sequence)``, from ``lo``."""
        hi = self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._entry(mid)[:2] < target:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def merged(self, changes: dict[tuple[int, int], int | None]) -> tuple[bytes, int]:
        """These entries with ``changes`` applied ((key hash, sequence) -> the slot's new
        frame offset, or None: no current record), packed and sorted, and how many.

        Copies the runs of unchanged entries as they are and looks up only the changed
        ones, so rewriting a big index costs about its size in bytes copied, not a
        Python object per entry."""
        start, size = _HEADER.size, _ENTRY.size
        chunks, count, at = [], 0, 0
        for target, offset in sorted(changes.items()):
            i = self.position(target, at)
            chunks.append(self._map[start + at * size:start + i * size])
            count += i - at
            if i < self.count and self._entry(i)[:2] == target:
                i += 1  # the slot's old entry: replaced or dropped
            if offset is not None:
                chunks.append(_ENTRY.pack(*target, offset))
                count += 1
            at = i
        chunks.append(self._map[start + at * size:start + self.count * size])
        count += self.count - at
        return b"".join(chunks), count

    def entries(self) -> list[tuple[int, int, int]]:
        start = _HEADER.size
        return list(_ENTRY.iter_unpack(self._map[start:start + self.count * _ENTRY.size]))

    def close(self) -> None:
        self._map.close()


def write(path: Path, generation: int, covered: int, max_event_id: int,
          entries: Iterable[tuple[int, int, int]]) -> None:
    """Write an index atomically: a temp file beside it, fsynced, renamed over it."""
    ordered = sorted(entries)
    write_packed(path, generation, covered, max_event_id,
                 b"".join(_ENTRY.pack(*entry) for entry in ordered), len(ordered))


def changes_of(index: SlotIndex | None, changes: dict[tuple[int, int], int | None]
               ) -> tuple[bytes, int]:
    """The packed entries of ``index`` (None: none yet) with ``changes`` applied."""
    if index is not None:
        return index.merged(changes)
    ordered = [(target, offset) for target, offset in sorted(changes.items())
               if offset is not None]
    return b"".join(_ENTRY.pack(*target, offset) for target, offset in ordered), len(ordered)


def write_packed(path: Path, generation: int, covered: int, max_event_id: int,
                 entries: bytes, count: int) -> None:
    """Write an index of ``count`` packed, sorted entries atomically."""
    body = _HEADER.pack(MAGIC, VERSION, generation, covered, max_event_id, count) + entries
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(body + _CRC.pack(zlib.crc32(body)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
