"""The offline journal: records made while the server could not be reached.

One file per record in ``.nbstep/team/<server>/journal/``: a JSON header line and the
encoded value, written to a temp file, fsynced and renamed (a crash leaves the whole
record or none). A journal record's ``event_id`` is negative: the server has not
numbered it yet. ``nbstep push`` (or the first step once the server is back) sends
them in the order they were made, each as a compare-and-set against what the step
saw: one another machine recorded meanwhile stands, and the journal's is dropped.
Files leave the journal only after the server has the record (or a winner).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbstep.core.record import NewRecord, Record
from nbstep.errors import StoreDamagedWarning
from nbstep.storage.objects import fsync_dir

SUFFIX = ".rec"


@dataclass(frozen=True)
class Pending:
    """One journal record: what the engine asked to record, and what it had seen."""

    path: Path
    record: Record
    new: NewRecord
    expected: int | None


class Journal:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._listing: tuple[int, list[Pending]] | None = None

    # -- writing -----------------------------------------------------------------------

    def add(self, new: NewRecord, expected: int | None) -> Record:
        """Keep a record durably; returns it as the engine sees it (a negative id)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        now_us = time.time_ns() // 1000
        event_id = -(now_us * 1000 + random.randrange(1000))
        data = bytes(memoryview(new.data).cast("B"))
        header = {
            "event_id": event_id, "namespace": new.namespace, "key": new.key,
            "sequence": new.sequence, "identity": new.identity, "input_hash": new.input_hash,
            "codec": new.codec, "duration_s": new.duration_s, "reason": new.reason,
            "details": new.details, "occurred_at_us": now_us, "expected": expected,
            "size_bytes": len(data),
        }
        name = f"{now_us:020d}-{os.getpid()}-{random.getrandbits(32):08x}{SUFFIX}"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(json.dumps(header).encode() + b"\n" + data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)
        fsync_dir(self.folder)
        self._listing = None
        return _record(header, data)

    def remove(self, pending: Pending) -> None:
        pending.path.unlink(missing_ok=True)
        self._listing = None

    # -- reading -----------------------------------------------------------------------

    def pending(self) -> list[Pending]:
        """Every journal record, oldest first (re-read when the folder changed)."""
        try:
            stamp = os.stat(self.folder).st_mtime_ns
        except FileNotFoundError:
            return []
        # File times come from a coarse clock: two changes within a few milliseconds
        # can leave one mtime, so a listing is reused only once the folder is quiet.
        quiet = time.time_ns() - stamp > 1_000_000_000
        if self._listing is not None and self._listing[0] == stamp and quiet:
            return self._listing[1]
        found = []
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            item = _load(path)
            if item is not None:
                found.append(item)
        self._listing = (stamp, found)
        return found

    def latest(self, namespace: str, key: str, sequence: int) -> Record | None:
        match = None
        for item in self.pending():
            r = item.record
            if (r.namespace, r.key, r.sequence) == (namespace, key, sequence):
                match = r
        return match

    def of(self, namespace: str) -> Iterator[Pending]:
        return (p for p in self.pending() if p.record.namespace == namespace)

    @contextmanager
    def pushing(self) -> Iterator[bool]:
        """One pusher at a time per machine; yields False when another is pushing."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder.parent / "journal.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            self._listing = None
            yield True
        finally:
            os.close(fd)


def _load(path: Path) -> Pending | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None  # pushed meanwhile by another process
    line, _, data = raw.partition(b"\n")
    try:
        header = json.loads(line)
        record = _record(header, data)
        new = NewRecord(header["namespace"], header["key"], header["sequence"],
                        header["identity"], header["input_hash"], header["codec"], data,
                        header["duration_s"], header["reason"], header["details"])
    except (ValueError, KeyError, TypeError) as e:
        # Written whole or not at all, so this is damage from outside: keep the file
        # (renamed, so it is not read again) and say so.
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        warnings.warn(f"nbstep: the journal record {path} cannot be read ({e}); it was "
                      f"renamed to {aside.name} and will not be pushed",
                      StoreDamagedWarning, stacklevel=4)
        return None
    return Pending(path, record, new, header["expected"])


def _record(header: dict[str, Any], data: bytes) -> Record:
    is_json = header["codec"] == "json"
    return Record(
        event_id=header["event_id"], namespace=header["namespace"], key=header["key"],
        sequence=header["sequence"], identity=header["identity"],
        input_hash=header["input_hash"], codec=header["codec"],
        result_json=data.decode("utf-8") if is_json else None,
        result_blob=None if is_json else data, object_sha256=None,
        size_bytes=header["size_bytes"], duration_s=header["duration_s"],
        occurred_at_us=header["occurred_at_us"], reason=header["reason"],
        details=header["details"], checksum=None, recorded_by=None,
    )
