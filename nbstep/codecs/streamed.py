"""A value's bytes written straight to their file when stored, not gathered first.

Large arrays and frames are already in memory as the user's objects. Joining their
bytes into one buffer before writing would copy them (80 MB of a frame is 20-40 ms)
and hold twice the value in memory. A :class:`Streamed` knows its exact length up
front and writes itself to a file; the store writes it once, then hashes it.

Anything that needs the bytes themselves (an inline value, a test) gets them with
``bytes(streamed)``.
"""

from __future__ import annotations

import os
from typing import Any


class Streamed:
    """Bytes of a known length, written on demand."""

    nbytes: int

    def write_to(self, path: str) -> None:
        """Write exactly ``nbytes`` bytes to ``path`` (an existing, empty file)."""
        raise NotImplementedError

    def parts(self) -> list[memoryview] | None:
        """The bytes as buffers already in memory, if they are (hashed without
        reading the file back)."""
        return None

    def tobytes(self) -> bytes:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        return self.tobytes()

    def __len__(self) -> int:
        return self.nbytes


class Parts(Streamed):
    """Buffers written one after the other (a ``.npy`` header, then an array's memory)."""

    def __init__(self, parts: list[Any]) -> None:
        self._parts = [memoryview(part).cast("B") for part in parts]
        self.nbytes = sum(part.nbytes for part in self._parts)

    def write_to(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            for part in self._parts:
                written = 0
                while written < part.nbytes:
                    written += os.write(fd, part[written:written + WRITE_CHUNK])
        finally:
            os.close(fd)

    def parts(self) -> list[memoryview]:
        return list(self._parts)

    def tobytes(self) -> bytes:
        return b"".join(self._parts)


# os.write of more than 2 GiB at once is cut short on Linux: write in pieces.
WRITE_CHUNK = 1 << 30
