"""The team store: steps shared by several machines through one PostgreSQL server.

Recording is one INSERT that is a compare-and-set on the step's slot (``sql.APPEND``),
so two machines computing the same step produce one record, and the loser gets the
winner's. A lookup is one indexed query. Values above ``inline_limit`` go to the
team's object store (:mod:`.objects`) first, while an advisory lock keeps gc away.

When the server cannot be reached a step still works: lookups answer from what
this process has seen, the offline journal and the local mirror, and a record goes
to the journal (:mod:`.journal`) with one :class:`~nbstep.errors.StoreOfflineWarning`;
the journal is pushed once the server is back. Every other fault is one
:class:`~nbstep.errors.TeamServerError` (:mod:`.faults`). The housekeeping half is
:class:`.admin.TeamAdmin`.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  (see _close_all)
import itertools
import os
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from nbstep.core.record import NewRecord, Record
from nbstep.errors import (
    NbstepError,
    StepNotPersistedWarning,
    StepReplayError,
    StoreOfflineWarning,
    StoreWriteError,
    TeamServerError,
)
from nbstep.storage import values
from nbstep.storage.base import PushReport, StepStore, StoreAdmin
from nbstep.storage.objects import Damaged
from nbstep.storage.versions import DEFAULT_KEEP

from . import faults, journal, schema, sql
from .admin import TeamAdmin
from .mirror import TeamMirror
from .mirror.tables import Update
from .objects import open_objects
from .server import Server
from .trust import Trust
from .url import parse

T = TypeVar("T")
HOST = socket.gethostname()
DEFAULT_INLINE_LIMIT = 64 * 1024
# Once no step has touched the server for this many seconds (a cell finished, a loop
# ended), the mirror catches up with the namespaces touched, in a background thread:
# near-current if the server goes down, and never in the way of a busy loop of steps.
MIRROR_DELAY = 2.0
SEEN_KEPT = 100_000


class NoObjects:
    """Stands for the object store when the ``objects`` setting is unset: large values
    stay in the database, and a record pointing to an object cannot be read here."""

    root = location = "(no `objects` setting)"

    def open(self, sha256: str, size: int, expected: str | None) -> Any:
        raise Damaged("its value is in the team's object store, and this machine has no "
                      "`objects` setting: set it as your team does ([tool.nbstep] objects = "
                      "..., or NBSTEP_OBJECTS)")

    def path(self, sha256: str) -> str:
        return f"<objects>/{sha256}"


class TeamStore(TeamAdmin, StepStore):
    """A ``postgresql://`` store, with this machine's mirror and journal in
    ``<local store dir>/team/<server>/``."""

    def __init__(self, url: str, local_dir: str | os.PathLike[str], *,
                 inline_limit: int = DEFAULT_INLINE_LIMIT, objects: str | None = None,
                 trust: tuple[str, ...] = (), busy_timeout: float = 60.0,
                 linger: float = 0.05, keep_versions: int = DEFAULT_KEEP,
                 create: bool = True) -> None:
        self.address = parse(url)
        self.location = self.address.shown
        self.folder = Path(local_dir) / "team" / self.address.ident
        self.inline_limit = inline_limit
        self.keep_versions = keep_versions
        self.server = Server(self.address, create=create)
        self.objects: Any = open_objects(objects, self.folder / "objects") or NoObjects()
        self.keeps_objects = objects is not None
        self.trust = Trust(trust)
        self.journal = journal.Journal(self.folder / "journal")
        self.mirror = TeamMirror(self.folder, busy_timeout=busy_timeout, linger=linger)
        self._lock = threading.RLock()
        self._syncing = threading.Lock()  # one mirror catch-up at a time; close waits
        self._seen: dict[tuple[str, str, int], Record | None] = {}
        self._resolved: dict[int, int] = {}  # journal id -> the server's id, once pushed
        self._registered: set[str] = set()
        self._dirty: set[str] = set()
        self._offline = False
        self._journal_checked = False
        self._closed = False
        self._keeper: threading.Timer | None = None
        self._last_touch = 0.0
        _open_stores.add(self)

    def __repr__(self) -> str:
        return f"TeamStore({self.location!r})"

    # -- the server, online or not ---------------------------------------------------------

    def _online(self, doing: str, work: Callable[[Any], T], retry: bool = True) -> T:
        """``work(con)`` on the server; raises ServerUnreachable when it is down."""
        if self._closed:
            raise NbstepError(f"the team store {self.location} was closed "
                              "(nbstep.configure(store=...) switched stores, or the "
                              "interpreter is exiting); run the step again")
        result = self.server.run(doing, work, retry=retry)
        if self._offline or not self._journal_checked:
            self._back_online()
        return result

    def _back_online(self) -> None:
        self._offline = False
        self._journal_checked = True
        if not self.journal.pending():
            return
        try:
            self.push()
        except TeamServerError as e:
            if isinstance(e, faults.ServerUnreachable):
                raise
            # (A login that may not record, say.) The step at hand goes on; the records
            # stay in the journal, and `nbstep push` says the same again.
            warnings.warn(StepNotPersistedWarning(
                f"nbstep: the records made while the server was unreachable could not be "
                f"pushed: {e} They stay in {self.journal.folder}; `nbstep push` tries "
                "again."), stacklevel=5)

    def _went_offline(self, error: NbstepError) -> None:
        if not self._offline:
            self._offline = True
            warnings.warn(StoreOfflineWarning(f"nbstep: {error}"), stacklevel=4)

    def me(self) -> str | None:
        """This machine's user on the server (from the URL until it has answered)."""
        return self.server.user or self.address.user

    # -- the seam ---------------------------------------------------------------------------

    def lookup(self, namespace: str, key: str, sequence: int) -> Record | None:
        if self._offline:
            pending = self.journal.latest(namespace, key, sequence)
            if pending is not None:
                return pending  # this machine's own record, made offline
        slot = (namespace, key, sequence)
        try:
            record = self._online("look up a step",
                                  lambda con: sql.lookup(con, namespace, key, sequence))
        except faults.ServerUnreachable as e:
            self._went_offline(e)
            return self.journal.latest(namespace, key, sequence) or self._offline_lookup(slot)
        # A journal record still here was not pushed (another process is pushing it).
        pending = self.journal.latest(namespace, key, sequence)
        self._remember(slot, record)
        self._touch(namespace)
        return pending or record

    def _remember(self, slot: tuple[str, str, int], record: Record | None) -> None:
        """What this process last saw of a slot, for lookups while the server is down
        (the newest SEEN_KEPT slots: the mirror has the rest)."""
        with self._lock:
            seen = self._seen
            seen.pop(slot, None)
            seen[slot] = record
            if len(seen) > SEEN_KEPT:
                for old in list(itertools.islice(seen, len(seen) - SEEN_KEPT // 2)):
                    del seen[old]

    def _offline_lookup(self, slot: tuple[str, str, int]) -> Record | None:
        if slot in self._seen:
            return self._seen[slot]
        try:
            return self.mirror.lookup(*slot)
        except NbstepError as e:
            # No mirror either: the step computes, and records to the journal.
            warnings.warn(f"nbstep: the local mirror cannot be read either ({e}); the step "
                          "runs", RuntimeWarning, stacklevel=4)
            return None

    def versions(self, namespace: str, key: str, sequence: int) -> list[Record]:
        try:
            return self._online("look up a step's earlier versions", lambda con: sql.versions(
                con, namespace, key, sequence, self.keep_versions))
        except faults.ServerUnreachable as e:
            self._went_offline(e)
            if self.journal.latest(namespace, key, sequence) is not None:
                return []  # recorded offline: the server's versions are not this slot's
            try:
                return self.mirror.versions(namespace, key, sequence, self.keep_versions)
            except NbstepError as error:
                warnings.warn(f"nbstep: the local mirror cannot be read either ({error}); "
                              "no earlier version replays", RuntimeWarning, stacklevel=4)
                return []

    def current(self, namespace: str) -> list[Record]:
        try:
            records = self._online("read a namespace",
                                   lambda con: sql.current_of(con, namespace))
        except faults.ServerUnreachable as e:
            self._went_offline(e)
            records = self._offline_current(namespace)
        return self._with_pending(namespace, records)

    def _offline_current(self, namespace: str) -> list[Record]:
        try:
            found = {(r.key, r.sequence): r for r in self.mirror.current(namespace)}
        except NbstepError as e:
            warnings.warn(f"nbstep: the local mirror cannot be read either ({e}); showing "
                          "only what this process has seen", RuntimeWarning, stacklevel=4)
            found = {}
        for (ns, key, sequence), record in self._seen.items():
            if ns == namespace:
                if record is None:
                    found.pop((key, sequence), None)
                elif record.event_id > getattr(found.get((key, sequence)), "event_id", 0):
                    found[(key, sequence)] = record
        return sorted(found.values(), key=lambda r: r.event_id)

    def _with_pending(self, namespace: str, records: list[Record]) -> list[Record]:
        by_slot = {(r.key, r.sequence): r for r in records}
        extra = []
        for item in self.journal.of(namespace):
            by_slot.pop((item.record.key, item.record.sequence), None)
            extra.append(item.record)
        latest = {(r.key, r.sequence): r for r in extra}
        return sorted(by_slot.values(), key=lambda r: r.event_id) + list(latest.values())

    def read(self, record: Record) -> Any:
        self.trust.check(record, self.me())
        return values.read(record, self.objects, self._inline_value)

    def _inline_value(self, record: Record) -> tuple[str | None, bytes | None]:
        try:
            found = self._online("read a value", lambda con: sql.value(con, record.event_id))
        except faults.ServerUnreachable as e:
            self._went_offline(e)
            found = self.mirror.value(record.event_id)
        if found is None:
            raise StepReplayError(
                f"cannot replay {record.where}: the team store no longer holds event "
                f"{record.event_id} (`nbstep gc` removed it meanwhile); run the step again")
        return found

    def append(self, new: NewRecord, expected_event_id: int | None) -> tuple[Record, bool]:
        try:
            return self._append_online(new, expected_event_id)
        except faults.ServerUnreachable as e:
            self._went_offline(e)
            try:
                record = self.journal.add(new, expected_event_id)
            except OSError as error:
                raise StoreWriteError(self.journal.folder, error) from error
            return record, True

    def _append_online(self, new: NewRecord, expected: int | None) -> tuple[Record, bool]:
        if expected is not None and expected < 0:
            expected = self._resolve_pending(expected)
        if values.needs_object(new, self.inline_limit) and self.keeps_objects:
            return self._online("record a step", lambda con: self._append_object(con, new,
                                                                                 expected))
        placed = values.place(new, self._limit(), self.objects)
        return self._online("record a step", lambda con: self._cas(con, new, placed, expected))

    def _append_object(self, con: Any, new: NewRecord, expected: int | None,
                       occurred_at_us: int | None = None) -> tuple[Record, bool]:
        # gc holds GC_LOCK alone while it decides which value files nothing references:
        # from before the file is written until its record is committed, it must wait.
        con.execute("SELECT pg_advisory_lock_shared(%s)", [schema.GC_LOCK])
        try:
            placed = values.place(new, self.inline_limit, self.objects)
            return self._cas(con, new, placed, expected, occurred_at_us)
        finally:
            if not con.broken:
                con.execute("SELECT pg_advisory_unlock_shared(%s)", [schema.GC_LOCK])

    def _cas(self, con: Any, new: NewRecord, placed: values.Placed, expected: int | None,
             occurred_at_us: int | None = None) -> tuple[Record, bool]:
        """Insert unless the slot changed; ``occurred_at_us``: when the record was made
        (a journal record's own time; default now)."""
        if new.namespace not in self._registered:
            sql.register(con, new.namespace)
            self._registered.add(new.namespace)
        slot = (new.namespace, new.key, new.sequence)
        for _attempt in range(16):
            at_us = occurred_at_us or time.time_ns() // 1000
            inserted = sql.append(con, new, placed, expected, at_us, os.getpid(), HOST)
            if inserted is not None:
                event_id, recorded_by = inserted
                record = _record(new, placed, event_id, at_us, recorded_by)
                self._remember(slot, record)
                self._touch(new.namespace)
                return record, True
            current = sql.lookup(con, *slot)
            if current is not None and current.event_id != expected:
                self._remember(slot, current)
                return current, False
            # The slot was forgotten meanwhile (or the winner was): take it again.
        raise NbstepError(f"the record of step `{new.key}` occurrence {new.sequence} in "
                          f"namespace `{new.namespace}` kept changing on {self.location}; "
                          "run the step again")

    def forget(self, namespace: str | None, key: str | None = None) -> int:
        count = self._online("forget steps", lambda con: sql.forget(
            con, namespace, key, "forget", os.getpid(), HOST))
        dropped = 0
        for item in self.journal.pending():
            r = item.record
            if (namespace is None or r.namespace == namespace) and (key is None or r.key == key):
                self.journal.remove(item)
                dropped += 1
        self._seen.clear()
        if namespace is not None:
            self._touch(namespace)
        return count + dropped

    def admin(self) -> StoreAdmin:
        return self

    def _after_change(self, namespaces: list[str]) -> None:
        """After a move or remove: this process's caches and the mirror catch up."""
        self._seen.clear()
        for namespace in namespaces:
            self._touch(namespace)

    def release(self) -> None:
        self.mirror.release()

    def close(self) -> None:
        if not self._closed and self._dirty:
            self._keep_mirror()  # what this process recorded, into the mirror
        with self._syncing, self._lock:
            self._closed = True
            if self._keeper is not None:
                self._keeper.cancel()
                self._keeper = None
        self.server.close()
        self.mirror.close()

    # -- the offline journal ----------------------------------------------------------------

    def _resolve_pending(self, expected: int) -> int | None:
        """A step that saw a journal record (a rerun of an offline step): push the
        journal, and compare with the record it became on the server."""
        if expected not in self._resolved:
            self.push()
        return self._resolved.get(expected)

    def push(self) -> PushReport:
        """Send the offline journal to the server, oldest first."""
        report = PushReport()
        self.server.retry_now()
        with self.journal.pushing() as mine:
            if not mine:
                report.left = len(self.journal.pending())
                return report
            resolved: dict[int, int | None] = {}
            items = self.journal.pending()
            for index, item in enumerate(items):
                expected = item.expected
                if expected is not None and expected < 0:
                    expected = resolved.get(expected)
                try:
                    record, inserted = self._push_one(item, expected)
                except faults.ServerUnreachable:
                    report.left = len(items) - index
                    break
                resolved[item.record.event_id] = record.event_id
                if inserted:
                    self._resolved[item.record.event_id] = record.event_id
                if inserted:
                    report.pushed += 1
                else:
                    report.superseded += 1
                self.journal.remove(item)
        return report

    def _push_one(self, item: journal.Pending, expected: int | None) -> tuple[Record, bool]:
        new, at_us = item.new, item.record.occurred_at_us
        if values.needs_object(new, self.inline_limit) and self.keeps_objects:
            return self.server.run("push the journal",
                                   lambda con: self._append_object(con, new, expected, at_us))
        placed = values.place(new, self._limit(), self.objects)
        return self.server.run("push the journal",
                               lambda con: self._cas(con, new, placed, expected, at_us))

    def _limit(self) -> int:
        """Values up to this size stay in the database: all of them without an object
        store (PostgreSQL keeps a large one out of line, compressed)."""
        return self.inline_limit if self.keeps_objects else 1 << 62

    # -- the mirror -------------------------------------------------------------------------

    def _touch(self, namespace: str) -> None:
        """Keep this namespace in the mirror; catch up once steps pause."""
        self._last_touch = time.monotonic()
        if namespace in self._dirty and self._keeper is not None:
            return
        with self._lock:
            self._dirty.add(namespace)
            if self._keeper is None and not self._closed:
                self._schedule(MIRROR_DELAY)

    def _schedule(self, delay: float) -> None:
        self._keeper = threading.Timer(delay, self._when_quiet)
        self._keeper.daemon = True
        self._keeper.start()

    def _when_quiet(self) -> None:
        with self._lock:
            quiet = time.monotonic() - self._last_touch
            if quiet < MIRROR_DELAY and not self._closed:
                self._schedule(MIRROR_DELAY - quiet)  # still busy: wait for the pause
                return
        self._keep_mirror()

    def _keep_mirror(self) -> None:
        with self._lock:
            if self._keeper is not None:
                self._keeper.cancel()
            self._keeper = None
            names, self._dirty = sorted(self._dirty), set()
            if self._closed or not names:
                return
        with self._syncing:
            self._catch_up(names)

    def _catch_up(self, names: list[str]) -> None:
        try:
            self.sync(names)
        except NbstepError as e:
            if not isinstance(e, faults.ServerUnreachable):
                warnings.warn(f"nbstep: the team store's local mirror could not catch up: {e}",
                              RuntimeWarning, stacklevel=2)

    def sync(self, namespaces: list[str]) -> None:
        """Bring the mirror up to date with these namespaces (see ``sql.SINCE``)."""
        if not namespaces:
            return
        known = self.mirror.cursors(namespaces)

        def fetch(con: Any) -> list[Update]:
            with con.transaction():
                con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snapshot = con.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
                generations = dict(con.execute(sql.GENERATIONS, [namespaces]).fetchall())
                updates = []
                for namespace in namespaces:
                    generation = int(generations.get(namespace, 0))
                    cursor = known.get(namespace)
                    if cursor is not None and cursor[0] == generation:
                        rows = con.execute(sql.SINCE, [namespace, cursor[1], cursor[1]]
                                           ).fetchall()
                        full = False
                    else:
                        rows = con.execute(sql.ALL_OF, [namespace]).fetchall()
                        full = True
                    updates.append(Update(namespace, generation, snapshot, rows, full))
                return updates

        updates = self._online("sync the local mirror", fetch)
        self.mirror.apply(updates)


def _record(new: NewRecord, placed: values.Placed, event_id: int, occurred_at_us: int,
            recorded_by: str) -> Record:
    return Record(
        event_id=event_id, namespace=new.namespace, key=new.key, sequence=new.sequence,
        identity=new.identity, input_hash=new.input_hash, codec=new.codec,
        result_json=placed.result_json,
        result_blob=placed.result_blob if placed.size <= sql.KEEP_INLINE else None,
        object_sha256=placed.object_sha256, size_bytes=placed.size,
        duration_s=new.duration_s, occurred_at_us=occurred_at_us, reason=new.reason,
        details=new.details, checksum=placed.checksum, recorded_by=recorded_by,
    )




# Every open team store, so interpreter exit brings their mirrors up to date.
_open_stores: weakref.WeakSet[TeamStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The keeper thread and the locks' holders are the parent's: start over (the
    # server connection is dropped by Server itself on first use).
    for store in list(_open_stores):
        store._lock = threading.RLock()
        store._syncing = threading.Lock()
        store._keeper = None


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_all() -> None:
    # Closing catches the mirror up, which may import DuckDB and pyarrow for the first
    # time. They import concurrent.futures.thread, whose import registers a threading
    # exit hook, refused once the interpreter is shutting down: imported above, it is
    # not imported again here.
    for store in list(_open_stores):
        store.close()
