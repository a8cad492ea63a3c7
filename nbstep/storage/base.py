"""The storage seam: what a backend provides, and nothing about how.

A backend is one folder under ``nbstep/storage/`` with a class that implements
:class:`StepStore` (what the engine needs to replay and record steps) and returns a
:class:`StoreAdmin` (what ``step.inspect()`` and the CLI need to look after a
store). ``tests/storage/`` is the contract every backend passes. Nothing above this
layer sees SQL, a connection or a file path of the store.

The model: an append-only log of events per store. A ``recorded`` event holds a
step's value, a ``forgotten`` event drops a slot; the latest event of a slot
``(namespace, key, sequence)`` decides what is current. Event ids increase in append
order and are never reused. A store keeps ``keep_versions`` versions of a slot (the
current record included): the recorded events a later ``recorded`` superseded stay
replayable (``versions``) until a ``forgotten`` event follows them or gc drops the
oldest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from nbstep.core.record import NewRecord, Record

if TYPE_CHECKING:
    from .reports import (
        CheckReport,
        GcReport,
        NamespaceSummary,
        PushReport,
        RepairReport,
        SharedStatus,
        Usage,
    )

# What housekeeping reports lives in .reports, loaded when first used: a process that
# only replays steps does not pay for building those classes. Importing them from
# here keeps working.
_REPORTS = ("NamespaceSummary", "GcReport", "Problem", "CheckReport", "Usage", "RepairReport",
            "HISTORY_COLUMNS", "check_grace", "MirrorLag", "SharedStatus", "PushReport")


def __getattr__(name: str) -> Any:
    if name in _REPORTS:
        from . import reports

        return getattr(reports, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StepStore(ABC):
    """One store, as the engine uses it. Safe to share between threads."""

    #: Where the store is, for messages (a directory, a URL without its password).
    location: str

    @abstractmethod
    def lookup(self, namespace: str, key: str, sequence: int) -> Record | None:
        """The current record of one step occurrence, or None."""

    @abstractmethod
    def versions(self, namespace: str, key: str, sequence: int) -> list[Record]:
        """The slot's earlier versions that still replay, newest first.

        The recorded events a later ``recorded`` event of the slot superseded, with no
        ``forgotten`` event after them, at most ``keep_versions - 1`` (the current
        record is not among them; a forgotten slot has none).
        """

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
        row) plus ``status``: ``current``, ``earlier`` (superseded, but kept and
        replayable: ``versions``), ``superseded`` (gc drops it) or ``forgotten``.
        Without ``values`` the value columns are empty (fast).
        """

    @abstractmethod
    def gc(self, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> GcReport:
        """Drop superseded and forgotten records and the value files nothing references.

        Each slot keeps ``keep_versions`` records: the current one and its earlier
        versions (a forgotten slot keeps none).

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

    @abstractmethod
    def move(self, source: str, target: str) -> int:
        """Move every current record of ``source`` to ``target``; how many.

        All or nothing as the reader sees it: each record, and before it each of its
        kept earlier versions (``versions``), oldest first, is copied to ``target``
        (its identity hash computed for the new namespace, ``details.moved_from``
        naming the event it came from), then the source's are forgotten. Refuses
        with :class:`~nbstep.errors.NbstepError` when ``target`` has records of its
        own. A move cut short is finished by running it again.
        """

    @abstractmethod
    def remove(self, namespace: str) -> int:
        """Drop every event of a namespace; how many current records it had."""


def check_move(source: str, target: str) -> None:
    from nbstep.errors import NbstepError

    if source == target:
        raise NbstepError(f"cannot move namespace `{source}` onto itself: name another "
                          "namespace (or notebook path) as the target")


def moved_from(record: Record) -> str | None:
    """The namespace a moved record came from (None: recorded where it is)."""
    found = (record.details or {}).get("moved_from")
    return found.get("namespace") if isinstance(found, dict) else None


def target_has_records(source: str, target: str, count: int) -> Exception:
    from nbstep.errors import NbstepError

    return NbstepError(
        f"cannot move `{source}` to `{target}`: `{target}` already has {count} records of "
        f"its own, and merging two notebooks' records would mix them. Forget them first "
        f"(`nbstep forget {target}`) or pick another target.")


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
