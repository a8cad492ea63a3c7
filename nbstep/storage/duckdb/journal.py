"""The journal: recorded events that are durable but not yet in the events table.

A DuckDB commit costs ~1-1.4 ms here, most of it DuckDB's own WAL work; an append +
fdatasync to a plain file costs ~0.15 ms. So a recorded event is first appended to
``journal`` (durable when ``step.run`` returns), and folded into the events table in
one transaction before the file is detached, before any query that reads the table,
and every ``FOLD_AT`` events. The journal is written only while this process has the
database attached (and holds the store's lock), and a process that attaches folds
whatever a crashed holder left in it first, so the events table is complete whenever
anyone can read it. Entries are length + crc32 framed; a torn last entry (a crash
mid-write: that step never returned) is dropped. Folding is idempotent (INSERT OR
IGNORE on event_id), so a crash between the fold's commit and the journal's
truncation is harmless.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

from nbstep.storage.objects import fsync_dir

JOURNAL_NAME = "journal"
FOLD_AT = 512
FOLD_BYTES = 4 * 1024 * 1024
_FRAME = struct.Struct("<II")


class Journal:
    """The store's journal file, open while the store is attached."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.pending: list[list[Any]] = []  # appended since the last fold, in order
        self.pending_bytes = 0

    def open(self) -> list[list[Any]] | None:
        """Open the file; the complete entries a crashed holder left in it, or None.

        When there was anything (``[]``: only a torn entry), the caller folds the
        entries, then :meth:`clear` s the file, so that nothing new is appended after a
        torn entry (recovery stops reading at the first bad frame).
        """
        created = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if created:
            fsync_dir(self.path.parent)  # the journal's entry in the folder survives power loss
        self.pending = []
        self.pending_bytes = 0
        if not os.fstat(self.fd).st_size:
            return None
        return _read(self.fd)

    def append(self, row: list[Any]) -> None:
        """Append one event durably; on failure cut the partial entry off again and raise."""
        fd = self.fd
        assert fd is not None
        payload = pickle.dumps(row, protocol=5)
        entry = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, entry) != len(entry):
                raise OSError("short write")
            os.fdatasync(fd)
        except OSError:
            # Later entries must not follow a torn one, or recovery would stop reading
            # at it and drop them.
            os.ftruncate(fd, size)
            raise
        self.pending.append(row)
        self.pending_bytes += len(entry)

    @property
    def due(self) -> bool:
        """Long enough to fold now rather than at detach."""
        return len(self.pending) >= FOLD_AT or self.pending_bytes >= FOLD_BYTES

    def clear(self) -> None:
        """Everything in the file is in the table now: empty it, durably."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.fsync(self.fd)
        self.pending = []
        self.pending_bytes = 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.pending = []
        self.pending_bytes = 0

    def abandon(self) -> None:
        """After fork(), in the child: the descriptor is the parent's; never touch it."""
        self.fd = None
        self.pending = []
        self.pending_bytes = 0


def _read(fd: int) -> list[list[Any]]:
    """The complete entries of a journal file; a torn or damaged tail is dropped."""
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    rows = []
    offset = 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        payload = data[offset + _FRAME.size:offset + _FRAME.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        rows.append(pickle.loads(payload))
        offset += _FRAME.size + length
    return rows
