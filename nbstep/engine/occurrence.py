"""One occurrence of a step, from its lookup to its outcome: replayed or computed.

The seed's order: take an occurrence (a per-(namespace, key) counter, used up even
if the step later fails), look the slot up; the same input hash replays, another one
replays the slot's earlier version with that input if the store kept one
(``StepStore.versions``, ``keep_versions`` of them), and is otherwise a mismatch
(raised, or recomputed with ``on_mismatch="rerun"``); none computes.
Recording is the store's compare-and-set: when another process recorded the slot
while the handler ran, its value stands if the inputs agree (the seed's idempotent
append), and a different input is a mismatch again.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from nbstep.core.durations import duration
from nbstep.core.record import NewRecord, Record
from nbstep.errors import (
    NotPersistable,
    StepInputMismatch,
    StepNotPersistedWarning,
    StoreWriteError,
)

from .runtime import Runtime

if TYPE_CHECKING:
    from nbstep.storage import StepStore

class Outcome(NamedTuple):
    """What happened to one step: replayed, or computed (and recorded or not)."""

    value: Any
    replayed: bool
    record: Record | None
    previous: Record | None = None
    persisted: bool = True


RUN_FIX = 'pass rerun=True or on_mismatch="rerun"'


def mismatch_error(
    builtin: str,
    record: Record,
    input_hash: str,
    what_changed: str | None = None,
    fix: str = RUN_FIX,
    kept: int | None = None,
) -> StepInputMismatch:
    """The seed's mismatch error, plus when the record was made and how to recompute.

    ``fix`` says how to recompute in the caller's terms (the magic: ``--rerun``);
    ``kept``: how many earlier versions of the slot were compared too (none matched).
    """
    took = f"; the original run took {duration(record.duration_s)}" if record.duration_s else ""
    changed = f" What changed: {what_changed}." if what_changed else ""
    if kept is None:
        versions = ""
    elif kept:
        versions = (f" No kept version matches it either ({kept} earlier "
                    f"version{'s' if kept != 1 else ''} of this step kept).")
    else:
        versions = " No kept version matches it (no earlier version of this step is kept)."
    error = StepInputMismatch(
        f"{builtin}: deterministic input mismatch for key `{record.key}` occurrence "
        f"{record.sequence} in namespace `{record.namespace}` (cached {record.input_hash}, "
        f"current {input_hash}).{versions}{changed} The record was made "
        f"{record.occurred_at}{took}. "
        f"To recompute and record a new version, {fix}; "
        f"to drop the record, step.forget({record.key!r}, namespace={record.namespace!r})."
    )
    error.record = record  # type: ignore[attr-defined]
    error.current_hash = input_hash  # type: ignore[attr-defined]
    return error



def begin(
    runtime: Runtime,
    builtin: str,
    key: str,
    input_hash: str,
    namespace: str | None,
    on_mismatch: str | None,
    rerun: bool,
    what_changed: Callable[[Record], str | None] | None = None,
    matches: Callable[[Record], bool] | None = None,
    fix: str = RUN_FIX,
    earlier_matches: Callable[[Record], bool] | None = None,
) -> Occurrence:
    """Take an occurrence and look it up; the caller then replays or computes.

    When the record's input hash differs, ``matches(record)`` may still accept it
    (the magic: an input the record's own step produced is no change), and the
    step replays; else an earlier kept version of the slot with this input (or that
    ``earlier_matches``, by default ``matches``, accepts) replays, appending nothing;
    otherwise mode "error" raises the mismatch, naming ``what_changed(record)`` and
    saying ``fix``.
    """
    where = runtime.where()
    settings = runtime.settings(where=where)
    ns = namespace if namespace is not None else runtime.default_namespace(settings)
    mode = on_mismatch or settings.on_mismatch
    # configure(rerun=True) recomputes every step of this process (`nbstep run --rerun`).
    rerun = rerun or settings.rerun
    sequence = runtime.next_sequence(ns, key)
    store = runtime.store(where)
    record = store.lookup(ns, key, sequence)
    occurrence = Occurrence(runtime, store, builtin, ns, key, sequence, input_hash, mode, rerun,
                            record)
    if record is not None and not rerun and record.input_hash != input_hash:
        if matches is not None and matches(record):
            occurrence.input_hash = record.input_hash
            return occurrence
        earlier = store.versions(ns, key, sequence)
        found = earlier_match(earlier, input_hash,
                              earlier_matches if earlier_matches is not None else matches)
        if found is not None:
            # An input seen before: its version replays (the slot's current record
            # stays what it is; recording compares with that one).
            occurrence.record = found
            occurrence.input_hash = found.input_hash
        elif mode == "error":
            runtime.stats["failed"] += 1
            changed = what_changed(record) if what_changed else None
            raise mismatch_error(builtin, record, input_hash, changed, fix, kept=len(earlier))
    return occurrence


def earlier_match(earlier: list[Record], input_hash: str,
                  matches: Callable[[Record], bool] | None) -> Record | None:
    """The newest earlier version with this input hash, else the newest ``matches``
    accepts, else None."""
    for record in earlier:
        if record.input_hash == input_hash:
            return record
    if matches is not None:
        for record in earlier:
            if matches(record):
                return record
    return None


class Occurrence:
    """One occurrence of a step between its lookup and its outcome."""

    __slots__ = ("runtime", "store", "builtin", "namespace", "key", "sequence", "input_hash",
                 "mode", "rerun", "record", "current")

    def __init__(self, runtime: Runtime, store: StepStore, builtin: str, namespace: str, key: str,
                 sequence: int, input_hash: str, mode: str, rerun: bool,
                 record: Record | None) -> None:
        self.runtime, self.store, self.builtin = runtime, store, builtin
        self.namespace, self.key, self.sequence = namespace, key, sequence
        self.input_hash, self.mode, self.rerun, self.record = input_hash, mode, rerun, record
        # The slot's current record, which recording compares against; ``record`` is
        # the one to replay (an earlier version, when the input was seen before).
        self.current = record

    @property
    def replayable(self) -> bool:
        return (
            self.record is not None
            and not self.rerun
            and self.record.input_hash == self.input_hash
        )

    def replay(self) -> Outcome:
        assert self.record is not None
        value = self.store.read(self.record)
        self.runtime.count_replay(self.store, self.record)
        return Outcome(value, True, self.record)

    def identity(self) -> str:
        from nbstep.hashing import step_identity

        return step_identity(self.namespace, self.key, self.sequence, self.input_hash)

    def finish(
        self,
        value: Any,
        duration_s: float,
        details: dict[str, Any] | None = None,
        encoded: Any = None,
        stacklevel: int = 3,
    ) -> Outcome:
        """Record a computed value (or warn that it cannot be) and return the outcome."""
        from nbstep import codecs

        previous = self.record
        stats = self.runtime.stats
        stats["computed"] += 1
        stats["compute_s"] += duration_s
        if encoded is None:
            try:
                encoded = codecs.encode(value)
            except NotPersistable as e:
                return self._not_recorded(value, f"{e} The result is returned and the step "
                                          "will run again next time; return a value that "
                                          "pickles (plain data, a DataFrame, an array) to make "
                                          "it durable.", stacklevel)
        if previous is None:
            reason = "first"
        elif self.rerun:
            reason = "rerun"
        elif previous.input_hash != self.input_hash:
            reason = "input changed"
        else:
            reason = "recompute"
        expected = self.current.event_id if self.current is not None else None
        identity = self.identity()
        for _attempt in range(8):
            new = NewRecord(self.namespace, self.key, self.sequence, identity, self.input_hash,
                            encoded.codec, encoded.data, duration_s, reason, details)
            try:
                record, inserted = self.store.append(new, expected)
            except StoreWriteError as e:
                # A full disk or a read-only store: the value was computed; hand it back.
                return self._not_recorded(value, f"{e} The result is returned; the step "
                                          "runs again next time.", stacklevel)
            if inserted:
                return Outcome(value, False, record, previous)
            # Another process recorded this occurrence while the handler ran.
            if record.input_hash == self.input_hash:
                # The seed's idempotent append: the first writer's value stands.
                return Outcome(self.store.read(record), True, record, previous)
            if self.mode == "error" and not self.rerun:
                raise mismatch_error(self.builtin, record, self.input_hash)
            expected = record.event_id
        raise RuntimeError(f"{self.builtin}: the record for `{self.key}` kept changing")

    def _not_recorded(self, value: Any, why: str, stacklevel: int) -> Outcome:
        warnings.warn(
            StepNotPersistedWarning(
                f"step `{self.key}` occurrence {self.sequence} in namespace "
                f"`{self.namespace}` was not recorded: {why}"
            ),
            stacklevel=stacklevel + 1,
        )
        self.runtime.stats["not_persisted"] += 1
        return Outcome(value, False, None, self.record, persisted=False)
