"""Buffers a decoder may take over: a private (copy-on-write) memory map.

A store hands a large value to the decoders as an ``mmap`` of its object file opened
with ``access=mmap.ACCESS_COPY``: writable and private, so arrays can be writable
views into it (no copy), and writes never reach the file or another decode. Any other
buffer (``bytes``, a read-only mapping) is copied where the result must be writable.
"""

from __future__ import annotations

import mmap
from typing import Any


def is_private(data: Any) -> bool:
    """A writable mmap: MAP_PRIVATE, so views into it alias nothing else."""
    if not isinstance(data, mmap.mmap):
        return False
    with memoryview(data) as view:
        return not view.readonly
