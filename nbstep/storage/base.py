"""The storage seam: what a backend provides, and nothing about how.

A backend is one folder under ``nbstep/storage/`` with a class that implements
:class:`StepStore` (what the engine needs to replay and record steps) and returns a
:class:`StoreAdmin` (what ``step.inspect()`` and the CLI need to look after a
store). ``tests/storage/`` is the contract every backend passes. Nothing above this
layer sees SQL, a connection or a file path of the store.

The model: an append-only log of events per store. A ``recorded`` event holds a
step's value, a ``forgotten`` event drops a slot; the latest event of a slot
``(namespace, key, sequence)`` decides what is current. Event ids increase in append
order and are never reused.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from nbstep.core.record import RECORD_COLUMNS, NewRecord, Record


class StepStore(ABC):
    """One store, as the engine uses it. Safe to share between threads."""

    #: Where the store is, for messages (a directory, a URL without its password).
    location: str

    @abstractmethod
    def lookup(self, namespace: str, key: str, sequence: int) -> Record | None:
        """The current record of one step occurrence, or None."""

    @abstractmethod
    def current(self, namespace: str) -> list[Record]:
        """Every current record of a namespace, in append order."""

    @abstractmethod
    def read(self, record: Record) -> Any:
        """The record's value, decoded; a fresh object on every call.

        Raises :class:`~nbstep.errors.StepReplayError` naming the step, what is wrong
        and how to recompute it, when the value cannot be read back.
        """

    @abstractmethod
    def append(self, new: NewRecord, expected_event_id: int | None) -> tuple[Record, bool]:
        """Record a step, unless its slot changed since the caller looked (compare-and-set).

        ``expected_event_id`` is the id of the current record the caller saw (None:
        it saw none). If the slot's current record is another one, nothing is written
        and ``(that record, False)`` comes back: another writer recorded the step
        meanwhile. Otherwise the record is durable when this returns: ``(it, True)``.
        A slot that was forgotten meanwhile takes the new record.
        """

    @abstractmethod
    def forget(self, namespace: str | None, key: str | None = None) -> int:
        """Append a ``forgotten`` event for each matching current record; how many.

        ``namespace=None`` means every namespace; ``key=None`` every key.
        """

    @abstractmethod
    def admin(self) -> StoreAdmin:
        """The housekeeping side of this store."""

    @abstractmethod
    def release(self) -> None:
        """Let go of shared resources now (the next operation takes them again)."""

    @abstractmethod
    def close(self) -> None:
        """Release everything; the store cannot be used afterwards."""


@dataclass(frozen=True)
class NamespaceSummary:
    """One notebook's line in ``nbstep ls``."""

    namespace: str
    steps: int  # current records
    keys: int
    size_bytes: int  # of the current records' values
    old_bytes: int  # of superseded records' values, which gc would free
    last_recorded_us: int | None


@dataclass
class GcReport:
    """What ``gc`` dropped (or would drop, in a dry run)."""

    events_dropped: int = 0
    objects_removed: int = 0
    tmp_removed: int = 0
    bytes_freed: int = 0
    # Unreferenced value files kept because they are younger than the grace period.
    young_kept: int = 0
    young_kept_bytes: int = 0


@dataclass(frozen=True)
class Problem:
    """A record whose value cannot be read back, and why."""

    record: Record
    current: bool
    what: str


@dataclass
class CheckReport:
    """What ``check`` (``nbstep verify``) found."""

    records: int = 0
    inline: int = 0
    object_files: int = 0
    object_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    unreferenced: int = 0
    damage: list[str] = field(default_factory=list)  # what was found damaged, as text

    @property
    def ok(self) -> bool:
        """No damage, and every current record's value reads back (a superseded one
        that does not is never replayed: gc drops it)."""
        return not self.damage and not any(p.current for p in self.problems)


@dataclass(frozen=True)
class Usage:
    """The store's footprint."""

    total_bytes: int
    database_bytes: int | None  # where the events themselves are, where a backend says
    database_name: str = "database"


@dataclass
class RepairReport:
    """What ``repair`` (``nbstep verify --repair``) did."""

    logs_rewritten: int = 0  # written again without their damaged bytes
    damaged_bytes: int = 0  # left out of them (kept in quarantine)
    objects_quarantined: int = 0  # value files that did not match their hash, moved aside
    records_forgotten: int = 0  # current records whose value was lost: they recompute
    table_rebuilt: bool = False  # the query table, built again from the records


# The columns of StoreAdmin.history, in order: a record's fields plus its status.
HISTORY_COLUMNS = (*RECORD_COLUMNS, "status")


class StoreAdmin(ABC):
    """Looking after a store: listing, history, gc and checks."""

    @abstractmethod
    def namespaces(self) -> list[str]:
        """Every namespace with at least one event, sorted."""

    @abstractmethod
    def summary(self) -> list[NamespaceSummary]:
        """One line per namespace, sorted by namespace."""

    @abstractmethod
    def history(self, namespace: str, *, values: bool = True) -> Any:
        """Every recorded event of a namespace, in append order, as a pandas DataFrame.

        Columns: ``nbstep.core.record.RECORD_COLUMNS`` (so ``Record.from_row`` reads a
        row) plus ``status``: ``current``, ``superseded`` or ``forgotten``. Without
        ``values`` the value columns are empty (fast).
        """

    @abstractmethod
    def gc(self, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> GcReport:
        """Drop superseded and forgotten records and the value files nothing references.

        Files younger than ``grace_seconds`` are kept even when unreferenced: a writer
        may be about to commit the record that points to one.
        """

    @abstractmethod
    def check(self, *, decode: bool = False) -> CheckReport:
        """Check every recorded value can be read back (``decode``: decode them all)."""

    @abstractmethod
    def repair(self) -> RepairReport:
        """Rebuild what can be rebuilt, set the rest aside, and say what was done.

        Damaged records are left out (their bytes kept aside), value files that do not
        match their hash are moved aside, and current records whose value is gone are
        forgotten, so their steps recompute instead of failing to replay.
        """

    @abstractmethod
    def usage(self) -> Usage:
        """How much space the store takes."""


@dataclass(frozen=True)
class MirrorLag:
    """How far this machine's copy of one namespace is behind the server."""

    namespace: str
    synced_at_us: int | None  # when it last caught up
    behind: int | None  # events on the server it has not copied yet (None: unknown)


@dataclass
class SharedStatus:
    """``nbstep team status``: the server, this machine's mirror and its journal."""

    location: str  # the server, without its password
    reachable: bool
    problem: str | None  # why it cannot be used, when it cannot
    user: str | None  # this machine's user there
    schema_version: int | None
    objects: str  # where large values go
    mirror: str  # the local mirror's file
    lag: list[MirrorLag] = field(default_factory=list)
    pending: int = 0  # records in the offline journal, waiting for `nbstep push`
    oldest_pending_us: int | None = None


@dataclass
class PushReport:
    """What ``push`` did with the offline journal."""

    pushed: int = 0  # recorded on the server
    superseded: int = 0  # another machine had recorded the step meanwhile: theirs stands
    left: int = 0  # still waiting (the server went away again, or another process pushes)


class SharedAdmin(ABC):
    """What a store shared by several machines adds (the team store): its status, the
    offline journal, and setting the server up."""

    @abstractmethod
    def status(self) -> SharedStatus:
        """The server's state as this machine sees it; never raises for a server fault."""

    @abstractmethod
    def push(self) -> PushReport:
        """Send the records made while the server was unreachable."""

    @abstractmethod
    def init(self, *, roles: bool = True) -> int:
        """Create (or upgrade) the server's tables, and the roles; the schema version."""


def check_grace(grace_seconds: object) -> float:
    """gc's grace period: a finite number of seconds, at least 0."""
    import math

    if (isinstance(grace_seconds, bool) or not isinstance(grace_seconds, (int, float))
            or not math.isfinite(grace_seconds) or grace_seconds < 0):
        raise ValueError(
            f"gc's grace period must be a finite number of seconds >= 0, got {grace_seconds!r}"
            " (0 removes unreferenced files at once: only when no kernel is recording)"
        )
    return float(grace_seconds)
