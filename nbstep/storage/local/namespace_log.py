"""One namespace's log: its events appended by any process, read by all without locks.

``logs/<id>.log`` starts with a header frame (the namespace, the log's generation,
and the event id floor), then one frame per event, appended. Appending holds an
``flock`` on the log itself for a fraction of a millisecond: catch up with what other
processes appended, compare-and-set the slot, write the frame, fdatasync, let go.
So processes recording in different notebooks never wait for each other, and two
racing for one slot record it once. Reading takes no lock: the log only grows
(within a generation), so a process parses what was appended since it last looked.
gc compacts a log by writing the next generation beside it and renaming it over;
processes notice the new file and read it again.

A lookup never reads the whole log of a big namespace: the slot index
(:mod:`.slots`) says where a slot's current frame is, and only the part of the log
the index does not cover yet is parsed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbstep.core.record import FORGOTTEN, RECORDED, NewRecord, Record
from nbstep.errors import (
    NbstepError,
    StoreBusy,
    StoreDamagedWarning,
    StoreFormatError,
    StoreWriteError,
)
from nbstep.storage.objects import fsync_dir
from nbstep.storage.values import Placed

from . import events, frames, slots
from .quarantine import Quarantine

LOG_FORMAT = 3
# Re-index when this many events lie beyond the slot index.
INDEX_AFTER = 2048
# How often (seconds) a reader checks whether gc replaced the log.
RECHECK = 0.05
# The key of the frame gc and repair append to a log file they replaced.
MOVED = "nbstep_log_moved"
# Bytes read at once when frames are found through the slot index.
WINDOW = 256 * 1024
# After looking up 1 in this many of an index's slots, a process reads the log whole.
READ_WHOLE_AFTER = 8

Slot = tuple[str, int]


def log_name(namespace: str) -> str:
    """The file name of a namespace's log, without extension (a hash: any text fits)."""
    return hashlib.sha256(namespace.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class NamespaceLog:
    """The log of one namespace, as this process sees it."""

    # Every open log, for fork(): see _before_fork below.
    _open_logs: weakref.WeakSet[NamespaceLog] = weakref.WeakSet()

    def __init__(self, folder: Path, namespace: str, *, busy_timeout: float,
                 quarantine: Quarantine) -> None:
        self.namespace = namespace
        name = log_name(namespace)
        self.path = folder / f"{name}.log"
        self.index_path = folder / f"{name}.idx"
        self.busy_timeout = busy_timeout
        self.quarantine = quarantine
        self.lock = threading.RLock()
        self._fd: int | None = None
        self._inode: int | None = None
        self._checked = 0.0
        self._unsynced = False  # frames written under the lock, not yet flushed
        self._read_only: OSError | None = None  # why the log could only be opened to read
        self._reset()
        NamespaceLog._open_logs.add(self)

    def _reset(self) -> None:
        self.generation = 0
        self.max_event_id = 0
        self.parsed_to = 0  # offset up to which frames beyond the index are parsed
        self.index: slots.SlotIndex | None = None
        # Slots whose latest event lies beyond the index: (record or None if
        # forgotten, frame offset).
        self.recent: dict[Slot, tuple[Record | None, int]] = {}
        self.cached: dict[Slot, Record] = {}  # read through the index
        self.values_at: dict[int, int] = {}  # event id -> frame offset, values not kept
        self.moved = False  # this file was replaced by the log's next generation
        self._window: tuple[int, bytes] = (0, b"")  # bytes of the log read last, and where
        self._index_hits = 0
        # The cache holds every current record of the part the index covers (so a
        # slot it lacks has none there): set once a process read that part whole.
        self.read_whole = False
        # Every slot's events as (recorded?, frame offset), in log order, up to
        # ``history_to``: built by the first ``versions`` call, then only extended.
        self.history: dict[Slot, list[tuple[bool, int]]] | None = None
        self.history_to = 0

    # -- reading -----------------------------------------------------------------------

    def lookup(self, key: str, sequence: int) -> Record | None:
        with self.lock:
            self._refresh()
            return self._current((key, sequence))

    def _current(self, slot: Slot) -> Record | None:
        recent = self.recent.get(slot)
        if recent is not None:
            return recent[0]
        record = self.cached.get(slot)
        if record is None and self.index is not None and not self.read_whole:
            for offset in self.index.offsets(*slot):
                frame = self._frame_at(offset)
                if frame is not None and events.slot(frame.event) == slot:
                    record = self._record(frame, self._blob(frame))
                    self.cached[slot] = record
                    break
            if record is not None:
                # Counted on a hit only: a process recording new steps misses every
                # time, and reading the log whole would cost it a stall (0.5 s at
                # 30,000 records) for nothing it needs.
                self._index_hits += 1
                if self._index_hits * READ_WHOLE_AFTER >= self.index.count:
                    # This process replays much of the namespace (Run All does):
                    # reading the part of the log the index covers, once, costs less
                    # than going on looking up slot after slot through the index.
                    self._read_covered()
        return record

    def _read_covered(self) -> None:
        """Every current record of the part of the log the index covers, into the
        cache (which then answers for that part alone: ``read_whole``)."""
        assert self.index is not None
        start, end = self._header_end(), self.index.covered
        data = self._read(start, end)
        latest: dict[Slot, Record | None] = {}
        for item in frames.scan(data, base=start):
            if type(item) is frames.Damage:
                self._set_aside(item, data, start)
                continue
            event = item.event
            if "event_id" not in event or event.get("namespace", self.namespace) != self.namespace:
                continue
            slot = (event["key"], event["sequence"])
            if event["kind"] != RECORDED:
                latest[slot] = None
                continue
            blob = None
            if item.blob_start < item.end <= item.blob_start + events.CACHED_VALUE_LIMIT:
                blob = data[item.blob_start - start:item.end - start]
            latest[slot] = self._record(item, blob)
        for slot, record in latest.items():
            if record is None:
                self.cached.pop(slot, None)
            else:
                self.cached[slot] = record
        self.read_whole = True

    def current(self) -> list[Record]:
        """Every current record, in append order (reads the whole log)."""
        with self.lock:
            self._refresh()
            if self._fd is None:
                return []  # nothing recorded in this namespace yet
            latest: dict[Slot, Record | None] = {}
            for frame in self._frames(self._header_end(), self._size()):
                event = frame.event
                latest[events.slot(event)] = (self._record(frame, self._blob(frame))
                                              if event["kind"] == RECORDED else None)
            return sorted((r for r in latest.values() if r is not None),
                          key=lambda r: r.event_id)

    def versions(self, key: str, sequence: int, keep: int) -> list[Record]:
        """The slot's earlier versions, newest first (:mod:`nbstep.storage.versions`).

        Asked only when a step's input differs from its current record's. The first
        call reads the whole log into a map of every slot's event offsets; later calls
        read only what was appended since (a loop of mismatching steps stays linear).
        """
        from nbstep.storage.versions import earlier

        if keep <= 1:
            return []
        with self.lock:
            self._refresh()
            if self._fd is None:
                return []
            if self.history is None:
                self.history, self.history_to = {}, self._header_end()
            history = self.history
            for frame in self._frames(self.history_to, self._size()):
                history.setdefault(events.slot(frame.event), []).append(
                    (frame.event["kind"] == RECORDED, frame.offset))
                self.history_to = frame.end
            found = earlier(reversed(history.get((key, sequence), [])), keep,
                            lambda item: RECORDED if item[0] else FORGOTTEN)
            records = []
            for _recorded, offset in found:
                frame = self._frame_at(offset)
                if frame is None:
                    raise NbstepError(f"the log {self.path} changed under this process "
                                      f"while reading `{key}`'s versions; run the step again")
                records.append(self._record(frame, self._blob(frame)))
            return records

    def inline_value(self, record: Record) -> tuple[str | None, bytes | None]:
        """A value the record was loaded without (too big to keep in memory)."""
        with self.lock:
            offset = self.values_at.get(record.event_id)
            frame = self._frame_at(offset) if offset is not None else None
            if frame is None or frame.event.get("event_id") != record.event_id:
                raise NbstepError(
                    f"the log {self.path} no longer holds event {record.event_id} of "
                    f"{record.where} (`nbstep gc` compacted it meanwhile); run the step again"
                )
            blob = self._read(frame.blob_start, frame.end) if frame.has_blob else None
            return frame.event.get("result_json"), blob

    def exists(self) -> bool:
        return self.path.exists()

    # -- appending ----------------------------------------------------------------------

    def append(self, new: NewRecord, placed: Placed, expected: int | None
               ) -> tuple[Record, bool]:
        """Compare-and-set the slot, then append its record durably."""
        slot = (new.key, new.sequence)
        with self._writing():
            current = self._current(slot)
            if current is not None and current.event_id != expected:
                return current, False
            event = events.recorded(self.max_event_id + 1, new, placed)
            offset = self._append([frames.encode(event, placed.result_blob)])
            frame = frames.Frame(offset, 0, event, 0)
            record = self._record(frame, placed.result_blob)
            self.recent[slot] = (record, offset)
            self.max_event_id = event["event_id"]
            self._maybe_index()
            return record, True

    def forget(self, key: str | None, *, only: set[int] | None = None,
               reason: str = "forget") -> int:
        """Append a ``forgotten`` event for each current record (of ``key``, or all;
        ``only``: just the current records with these event ids)."""
        if not self.path.exists():
            return 0
        with self._writing():
            targets = [r for r in self._all_current()
                       if (key is None or r.key == key) and (only is None or r.event_id in only)]
            if not targets:
                return 0
            batch = []
            for i, record in enumerate(targets, start=self.max_event_id + 1):
                batch.append(frames.encode(events.forgotten(i, self.namespace, record.key,
                                                            record.sequence, reason)))
            offset = self._append(batch)
            for record, frame in zip(targets, batch, strict=True):
                self.recent[(record.key, record.sequence)] = (None, offset)
                offset += len(frame)
            self.max_event_id += len(targets)
            return len(targets)

    def _all_current(self) -> list[Record]:
        slots_seen: set[Slot] = set(self.recent)
        found = [r for r, _ in self.recent.values() if r is not None]
        if self.index is not None:
            for _h, _seq, offset in self.index.entries():
                frame = self._frame_at(offset)
                if frame is None:
                    continue
                slot = events.slot(frame.event)
                if slot not in slots_seen:
                    slots_seen.add(slot)
                    found.append(self._record(frame, self._blob(frame)))
        return found

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The log locked, opened (created if new) and read to its end.

        What ``_append`` wrote is flushed to disk after the lock is let go, before this
        returns: other writers append meanwhile, and one flush covers every frame
        written before it (group commit). Holding the lock through the flush made
        eight processes on one notebook wait for each other's disk flushes in turn.
        """
        sync_fd = None
        with self.lock:
            fd = self._lock_for_write()
            try:
                self._catch_up_for_write(fd)
                self._unsynced = False
                yield
                if self._unsynced:
                    sync_fd = os.dup(fd)  # the log may be closed (gc) before the flush
            finally:
                if self._fd == fd:  # (compaction closes it: closing let the lock go)
                    fcntl.flock(fd, fcntl.LOCK_UN)
        if sync_fd is not None:
            try:
                os.fdatasync(sync_fd)
            except OSError as e:
                raise StoreWriteError(self.path, e) from e
            finally:
                os.close(sync_fd)

    def _lock_for_write(self) -> int:
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.00002  # a writer holds the lock for tens of microseconds
        while True:
            fd = self._open(create=True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"the log {self.path} of namespace `{self.namespace}` has been locked "
                        f"for more than {self.busy_timeout:g} s; a process holding it is "
                        "stuck (nbstep holds it well under a millisecond per step). Find it "
                        "with `fuser` and stop it, or raise nbstep.configure(busy_timeout=)."
                    ) from None
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 1.5, 0.001)
                continue
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)  # gc replaced the log meanwhile: the new one
            self._close()

    def _catch_up_for_write(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0:
            self._write_header(fd)
            return
        if self.generation == 0:
            self._load()
        else:
            self._parse(self.parsed_to, size, final=False)
        # Nobody appends while we hold the lock: what is left unparsed is a torn tail.
        for item in self._scan(self.parsed_to, size):
            if isinstance(item, frames.Damage) and item.torn:
                # What a process killed mid-append left (its step never returned):
                # keep the bytes aside, and append after the last valid frame.
                self.quarantine.keep(self.path, self.generation, item.offset,
                                     self._read(item.offset, item.end), "torn tail")
                os.ftruncate(fd, item.offset)
                os.fsync(fd)

    def _append(self, batch: list[bytes]) -> int:
        """Write frames at the end (``_writing`` flushes them to disk before it
        returns); return where the first one starts."""
        fd = self._fd
        assert fd is not None
        data = b"".join(batch)
        offset = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write (the disk is full?)")
            self._unsynced = True  # flushed by _writing once the lock is let go
        except OSError as e:
            # A partial frame must not stay: later frames would follow a torn one.
            try:
                os.ftruncate(fd, offset)
            except OSError:
                pass  # the next writer cuts it off (a torn tail), under the lock
            raise StoreWriteError(self.path, e) from e
        self.parsed_to = offset + len(data)
        return offset

    def _write_header(self, fd: int) -> None:
        header = frames.encode({"nbstep_log": LOG_FORMAT, "namespace": self.namespace,
                                "generation": 1, "floor": 0})
        try:
            os.write(fd, header)
            os.fsync(fd)
            fsync_dir(self.path.parent)  # the new file's name survives power loss
        except OSError as e:
            os.ftruncate(fd, 0)
            raise StoreWriteError(self.path, e) from e
        self._reset()
        self.generation = 1
        self.parsed_to = len(header)

    def _maybe_index(self) -> None:
        if len(self.recent) < INDEX_AFTER:
            return
        try:
            self.reindex()
        except OSError as e:
            # The index is an optimisation: the log is intact without it.
            warnings.warn(f"nbstep: could not write the slot index {self.index_path} ({e}); "
                          "lookups read more of the log until it is written",
                          StoreDamagedWarning, stacklevel=5)

    def reindex(self) -> None:
        """Write the slot index for the whole log as this process has read it."""
        # Only the slots appended to since the index was written change: the rest of
        # it is copied as it is (a per-entry rewrite took ~60 ms at 30,000 slots, in
        # the step that happened to cross INDEX_AFTER).
        changes: dict[tuple[int, int], int | None] = {}
        for (key, seq), (record, offset) in self.recent.items():
            changes[(slots.key_hash(key), seq)] = None if record is None else offset
        packed, count = slots.changes_of(self.index, changes)
        slots.write_packed(self.index_path, self.generation, self.parsed_to,
                           self.max_event_id, packed, count)
        index = slots.SlotIndex.open(self.index_path, self.generation)
        if index is not None:
            # What `recent` said now comes from the index: keep its records, and drop
            # every forgotten slot from the cache, or a lookup would find the record
            # the forget superseded.
            for slot, (record, _offset) in self.recent.items():
                if record is None:
                    self.cached.pop(slot, None)
                else:
                    self.cached[slot] = record
            if self.index is not None:
                self.index.close()
            self.index, self.recent = index, {}

    # -- moving a namespace ---------------------------------------------------------------

    def kept_frames(self, keep: int) -> list[frames.Frame]:
        """The frame of every current record and of its ``keep - 1`` earlier versions
        (what gc keeps), in log order (values included: the raw frames carry them)."""
        with self.lock:
            self._refresh()
            if self._fd is None:
                return []
            return self._compacted(keep)[0]

    def frame_bytes(self, frame: frames.Frame) -> bytes:
        with self.lock:
            return self._read(frame.blob_start, frame.end) if frame.has_blob else b""

    def adopt(self, build: Callable[[list[Record], list[dict[str, Any]]],
                                    list[tuple[dict[str, Any], bytes | None]]]) -> None:
        """Append the events ``build(current records, every recorded event)`` returns
        (their ids are given here) in one write, all under the log's lock."""
        with self._writing():
            recorded = [frame.event for frame in self._frames(self._header_end(), self._size())
                        if frame.event["kind"] == RECORDED]
            copies = build(self._all_current(), recorded)
            batch = []
            for i, (event, blob) in enumerate(copies, start=self.max_event_id + 1):
                batch.append(frames.encode(dict(event, event_id=i), blob))
            if batch:
                self._append(batch)
                self.max_event_id += len(batch)
        self.close()  # read again from the log on next use (simpler than updating caches)

    def clear(self) -> int:
        """Drop every event (the next generation is empty; event ids go on from the
        old floor); how many current records there were."""
        if not self.path.exists():
            return 0
        with self._writing():
            count = len(self._all_current())
            self._rewrite([])
        return count


    def compact(self, *, dry_run: bool = False, keep: int = 1) -> tuple[int, set[str]]:
        """Drop superseded records, forgotten ones and their marks: the next generation.

        Each slot keeps its ``keep`` newest records after its last ``forgotten``
        event (the current one and its earlier versions); a forgotten slot, none.

        Returns how many events were (or would be) dropped, and the object files the
        kept records use. The new log is written beside the old one and renamed over
        it; other processes notice and read it anew. Event ids go on from the old
        log's highest (its ``floor``), so none is ever handed out twice.
        """
        if not self.path.exists():
            return 0, set()
        if dry_run:
            # Only reading: no lock on the log, so steps go on recording meanwhile
            # (`nbstep gc --dry-run` on a store in use never stalls a kernel).
            with self.lock:
                self._refresh()
                if self._fd is None:
                    return 0, set()
                ordered, dropped = self._compacted(keep)
            return dropped, {f.event["object_sha256"] for f in ordered
                             if f.event.get("object_sha256")}
        with self._writing():
            ordered, dropped = self._compacted(keep)
            live = {f.event["object_sha256"] for f in ordered if f.event.get("object_sha256")}
            if dropped:
                self._rewrite(ordered)
            return dropped, live

    def _compacted(self, keep: int) -> tuple[list[frames.Frame], int]:
        """The frames the next generation keeps, in log order, and how many it drops."""
        kept: dict[Slot, list[frames.Frame]] = {}
        total = 0
        for frame in self._frames(self._header_end(), self._size()):
            total += 1
            slot = events.slot(frame.event)
            if frame.event["kind"] == RECORDED:
                versions = kept.setdefault(slot, [])
                versions.append(frame)
                if len(versions) > keep:
                    del versions[0]
            else:
                kept.pop(slot, None)  # forgotten: no version before it replays
        ordered = sorted((f for versions in kept.values() for f in versions),
                         key=lambda f: f.offset)
        return ordered, total - len(ordered)

    def rewrite_intact(self) -> int:
        """Write the log again without its damaged bytes (kept in quarantine/); how many
        bytes were left out. Every valid frame stays, history included."""
        if not self.path.exists():
            return 0
        with self._writing():
            end = self._size()
            start = self._header_end()
            kept = list(self._frames(start, end))
            intact = sum(frame.end - frame.offset for frame in kept)
            damaged = end - start - intact
            if damaged:
                self._rewrite(kept)
            return damaged

    def _rewrite(self, kept: list[frames.Frame]) -> None:
        """Write the next generation holding ``kept`` and make it the log; lock held."""
        generation = self.generation + 1
        header = frames.encode({"nbstep_log": LOG_FORMAT, "namespace": self.namespace,
                                "generation": generation, "floor": self.max_event_id})
        data = self._read(0, self._size())
        parts, offset = [header], len(header)
        latest: dict[Slot, int] = {}
        for frame in kept:
            raw = data[frame.offset:frame.end]
            parts.append(raw)
            slot = events.slot(frame.event)
            latest.pop(slot, None)
            if frame.event["kind"] == RECORDED:
                latest[slot] = offset
            offset += len(raw)
        entries = [(slots.key_hash(key), seq, at) for (key, seq), at in latest.items()]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(parts))
            f.flush()
            os.fsync(f.fileno())
        slots.write(self.index_path, generation, offset, self.max_event_id, entries)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        self._mark_moved(generation)
        self._close()  # the old generation: read the new one from the start

    def _mark_moved(self, generation: int) -> None:
        """Tell readers holding the old file open that it was replaced.

        A reader sees the log grow on its next lookup (it checks the size anyway) and
        reads this frame, so it never answers from the old generation after the new
        one holds a later event: nothing is appended to the new file before this
        returns, as the lock is still held. Should the write fail (a full disk), a
        reader still notices by the file's inode within RECHECK seconds.
        """
        assert self._fd is not None
        try:
            os.write(self._fd, frames.encode({MOVED: generation}))
        except OSError as e:
            warnings.warn(f"nbstep: could not mark {self.path}'s old generation as replaced "
                          f"({e.strerror}); other kernels see the new one within {RECHECK} s",
                          StoreDamagedWarning, stacklevel=4)

    # -- the file -------------------------------------------------------------------------

    def _open(self, create: bool) -> int:
        if self._fd is None:
            flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
            try:
                self._fd = os.open(self.path, flags, 0o644)
            except FileNotFoundError:
                raise
            except OSError as e:
                if e.errno in (errno.EROFS, errno.EACCES) and not create:
                    self._fd = os.open(self.path, os.O_RDONLY)
                    self._read_only = e  # replays work; recording says why it cannot
                else:
                    raise StoreWriteError(self.path, e) from e
            self._inode = os.fstat(self._fd).st_ino
            self._checked = time.monotonic()
        if create and self._read_only is not None:
            raise StoreWriteError(self.path, self._read_only)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._inode = None
        self._read_only = None
        if self.index is not None:
            self.index.close()
        self._reset()

    def close(self) -> None:
        with self.lock:
            self._close()

    def _size(self) -> int:
        return os.fstat(self._fd).st_size if self._fd is not None else 0

    def _read(self, start: int, end: int) -> bytes:
        assert self._fd is not None
        return os.pread(self._fd, end - start, start)

    def _refresh(self) -> None:
        """See what was appended (or replaced) since this process last looked."""
        if self._fd is None:
            try:
                self._open(create=False)
            except FileNotFoundError:
                return  # no step of this namespace recorded yet
            self._load()
            return
        now = time.monotonic()
        if now - self._checked >= RECHECK:
            self._checked = now
            try:
                replaced = os.stat(self.path).st_ino != self._inode
            except FileNotFoundError:
                replaced = True
            if replaced:
                self._close()
                self._refresh()
                return
        size = self._size()
        if size > self.parsed_to:
            self._parse(self.parsed_to, size, final=False)
            if self.moved:  # gc or repair wrote the next generation: read that one
                self._close()
                self._refresh()

    def _load(self) -> None:
        """Read the header, the slot index if it fits, and the log beyond it."""
        size = self._size()
        head = self._read(0, min(size, 1 << 16))
        header = frames.decode_at(head, 0) if size else None
        self._reset()
        if header is None or "nbstep_log" not in header.event:
            self._damaged_header(head)
            self._parse(0, size, final=False)
            return
        info = header.event
        if info["nbstep_log"] > LOG_FORMAT:
            raise StoreFormatError(
                f"{self.path} was written by a newer nbstep (log format {info['nbstep_log']}; "
                f"this nbstep reads {LOG_FORMAT}). Upgrade nbstep (pip install -U nbstep)."
            )
        self.generation = int(info["generation"])
        self.max_event_id = int(info.get("floor", 0))
        self.parsed_to = header.end
        index = slots.SlotIndex.open(self.index_path, self.generation)
        if index is not None and header.end <= index.covered <= size:
            self.index = index
            self.parsed_to = index.covered
            self.max_event_id = max(self.max_event_id, index.max_event_id)
        elif index is not None:
            index.close()
        self._parse(self.parsed_to, size, final=False)

    def _damaged_header(self, head: bytes) -> None:
        """A log whose header is damaged still holds its events: read them (generation
        0: no slot index applies); `nbstep verify --repair` writes a new header."""
        following = next((item.offset for item in frames.scan(head)
                          if isinstance(item, frames.Frame)), len(head))
        if following:
            self.quarantine.keep(self.path, 0, 0, head[:following], "damaged log header")
        self.generation = 0

    def _header_end(self) -> int:
        """Where events start: after the header, or at 0 when the header is damaged."""
        header = frames.decode_at(self._read(0, min(self._size(), 1 << 16)), 0)
        return header.end if header is not None and "nbstep_log" in header.event else 0

    def _parse(self, start: int, end: int, final: bool) -> None:
        if end <= start:
            return
        data = self._read(start, end)
        namespace = self.namespace
        recent = self.recent
        for item in frames.scan(data, base=start):
            if type(item) is frames.Damage:
                if item.torn and not final:
                    break  # an append in progress, or a torn tail the next writer cuts
                self._set_aside(item, data, start)
                continue
            event = item.event
            if "event_id" not in event or event.get("namespace", namespace) != namespace:
                self.moved = self.moved or MOVED in event
                self.parsed_to = item.end
                continue
            if event["event_id"] > self.max_event_id:
                self.max_event_id = event["event_id"]
            kind = event["kind"]
            if kind == RECORDED:
                blob = None
                if item.blob_start < item.end <= item.blob_start + events.CACHED_VALUE_LIMIT:
                    blob = data[item.blob_start - start:item.end - start]
                recent[(event["key"], event["sequence"])] = (self._record(item, blob),
                                                              item.offset)
            elif kind == FORGOTTEN:
                recent[(event["key"], event["sequence"])] = (None, item.offset)
            self.parsed_to = item.end

    def _scan(self, start: int, end: int) -> Iterator[frames.Frame | frames.Damage]:
        """Frames (offsets in the log) of ``[start, end)``; damage is set aside once."""
        if end <= start:
            return
        data = self._read(start, end)
        for item in frames.scan(data, base=start):
            if type(item) is frames.Damage:
                self._set_aside(item, data, start)
            yield item

    def _set_aside(self, damage: frames.Damage, data: bytes, start: int) -> None:
        """Keep damaged bytes in quarantine (a torn tail is not damage: it is cut)."""
        if not damage.torn:
            self.quarantine.keep(self.path, self.generation, damage.offset,
                                 data[damage.offset - start:damage.end - start],
                                 "damaged frame")

    def _frames(self, start: int, end: int) -> Iterator[frames.Frame]:
        for item in self._scan(start, end):
            if (isinstance(item, frames.Frame) and "event_id" in item.event
                    and item.event.get("namespace", self.namespace) == self.namespace):
                yield item

    def _frame_at(self, offset: int) -> frames.Frame | None:
        """The valid frame at ``offset``, read through a window of the log: a replay
        usually asks for the frames of one run in order, so one read serves many."""
        start, window = self._window
        if not start <= offset <= start + len(window) - frames.HEAD_SIZE:
            start, window = offset, self._read(offset, offset + WINDOW)
            self._window = (start, window)
        frame = frames.decode_at(window, offset - start, base=start)
        if frame is not None or len(window) - (offset - start) >= frames.MAX_BODY:
            return frame
        # Longer than what is left of the window (or not a frame at all): read it whole.
        head = self._read(offset, offset + frames.HEAD_SIZE)
        if len(head) < frames.HEAD_SIZE:
            return None
        length = int.from_bytes(head[4:8], "little")
        if length > frames.MAX_BODY:
            return None
        return frames.decode_at(self._read(offset, offset + frames.HEAD_SIZE + length), 0,
                                base=offset)

    def _blob(self, frame: frames.Frame) -> bytes | None:
        """The inline value of a frame, when small enough to keep in memory."""
        if not frame.has_blob or frame.end - frame.blob_start > events.CACHED_VALUE_LIMIT:
            return None
        start, window = self._window
        if start <= frame.blob_start and frame.end <= start + len(window):
            return window[frame.blob_start - start:frame.end - start]
        return self._read(frame.blob_start, frame.end)

    def _record(self, frame: frames.Frame, blob: bytes | None) -> Record:
        event = frame.event
        size = event.get("size_bytes") or 0
        kept = size <= events.CACHED_VALUE_LIMIT
        if not kept:
            self.values_at[event["event_id"]] = frame.offset
            event = dict(event, result_json=None)
        return events.to_record(self.namespace, event, blob if kept else None)


# fork(): a child shares its parent's open logs, and an flock belongs to the open file,
# so a child that appended through an inherited descriptor while the parent held the
# lock would write at the same time. So no append is in progress at the fork (every
# log's lock is held across it), and the child opens the logs again itself.
_forking: list[NamespaceLog] = []


def _before_fork() -> None:
    _forking[:] = list(NamespaceLog._open_logs)
    for log in _forking:
        log.lock.acquire()


def _after_fork_in_parent() -> None:
    for log in _forking:
        log.lock.release()
    _forking.clear()


def _after_fork_in_child() -> None:
    for log in _forking:
        log.lock = threading.RLock()
        if log._fd is not None:
            os.close(log._fd)  # the parent's lock, if it had one, is not released by this
        log._fd = None
        log._inode = None
        if log.index is not None:
            log.index.close()
        log._reset()
    _forking.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
