"""What a store's housekeeping reports: ``nbstep ls``, gc, verify, repair, usage.

Kept apart from :mod:`nbstep.storage.base` so that replaying a step never builds
these classes; ``nbstep.storage.base`` still exports every name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nbstep.core.record import RECORD_COLUMNS, Record


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


def decode_problem(read: Callable[[Record], Any], record: Record) -> str | None:
    """Why ``read(record)`` cannot decode the record's value (as ``verify`` says it),
    or None when it can."""
    from nbstep.errors import StepReplayError

    try:
        read(record)
    except StepReplayError as e:
        cause = e.__cause__ or e
        return f"the value does not decode as {record.codec} ({type(cause).__name__}: {cause})"
    return None


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

    def check_values(self, recorded: Iterable[tuple[Record, bool]], *, decode: bool,
                     decode_problem: Callable[[Record], str | None],
                     verify: Callable[[str, int], str | None]) -> set[str]:
        """Count and check every (record, current?) a backend read: an inline value
        must decode; a value file must ``verify`` (once per file, however many records
        share it) and, with ``decode``, decode for each of its records. The names of
        the value files referenced."""
        by_object: dict[str, list[tuple[Record, bool]]] = {}
        for record, current in recorded:
            self.records += 1
            if record.object_sha256 is None:
                self.inline += 1
                problem = decode_problem(record)
                if problem:
                    self.problems.append(Problem(record, current, problem))
            else:
                by_object.setdefault(record.object_sha256, []).append((record, current))
        for sha256, users in by_object.items():
            self.object_files += 1
            problem = verify(sha256, users[0][0].size_bytes)
            if problem is None:
                self.object_bytes += users[0][0].size_bytes
                if decode:
                    for record, current in users:
                        decoded = decode_problem(record)
                        if decoded:
                            self.problems.append(Problem(record, current, decoded))
                continue
            self.problems.extend(Problem(record, current, problem) for record, current in users)
        return set(by_object)


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


# The columns of StoreAdmin.history, in order: a record's fields plus its status.
HISTORY_COLUMNS = (*RECORD_COLUMNS, "status")


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
