"""Damaged bytes, moved aside: ``quarantine/`` keeps them, a warning says so once.

Nothing nbstep finds damaged is deleted: the bytes of a damaged or torn frame, an
unreadable database or a value file that no longer matches its checksum are copied
(or moved) into ``quarantine/`` under a name that says where they came from, so a
person (or a later nbstep) can still look at them.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path

from nbstep.errors import StoreDamagedWarning


class Quarantine:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._kept: set[tuple[str, int, int]] = set()
        self._lock = threading.Lock()

    def keep(self, source: Path, generation: int, offset: int, data: bytes, what: str) -> None:
        """Keep a copy of ``data`` found at ``offset`` of ``source``; warn the first time."""
        mark = (str(source), generation, offset)
        with self._lock:
            if mark in self._kept:
                return
            self._kept.add(mark)
        name = f"{source.name}.g{generation}.{offset}.bin"
        target = self.folder / name
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            where = f"copied to {target}"
        except OSError as e:
            where = f"and could not be copied aside ({e.strerror})"
        if what == "torn tail":
            return  # expected after a kill -9 mid-append: that step never returned
        warnings.warn(
            f"nbstep: {source} has {len(data)} damaged bytes at offset {offset} ({what}); "
            f"they were skipped, every intact record before and after them is kept, and the "
            f"bytes are {where}. `nbstep verify --repair` rewrites the log without them.",
            StoreDamagedWarning, stacklevel=6,
        )

    def move(self, path: Path, what: str) -> Path:
        """Move a whole damaged file aside; returns where it went."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
        os.replace(path, target)
        return target
