"""``step.inspect()``: a namespace's records as a pandas DataFrame.

The default frame is for reading: one row per current step (``history=True`` adds
the others: earlier, superseded, forgotten, whatever status the store gives), in the order
they were recorded, with ``key``, ``occurrence``, ``status``, ``recorded_at``,
``duration`` (seconds), ``saved`` (the time replays in this process saved, else the
duration: what each replay saves) and ``value``, a one-line summary
(:mod:`.summary`); ``results=True`` adds ``result``, the value itself, and
``results=False`` reads no value at all. It is a :class:`.steps_frame.StepsFrame`,
whose display shows durations and times as a person reads them.

``all_columns=True`` is the full frame: the seed's fields (``event_id``,
``namespace``, ``key``, ``sequence``, ``deterministic_inputs_hash``, ``result``,
``occurred_at``) first, then what nbstep adds: whether each record is ``current``
and its ``status``, the compute time, the value's size, codec and where it is
stored, the seed's ``identity``, why it was recorded, and who recorded it (a team
store's user; empty in a local store). It shows every record unless
``history=False``.

A ``%%step`` record's value is the cell's variables, ``{name: value}``; the
modules the cell bound (``import pandas as pd``) are imported again on replay but
are not variables, so neither ``value`` nor ``result`` lists them.
"""

from __future__ import annotations

from typing import Any

from nbstep.codecs.cell import is_cell_record, read_cell
from nbstep.core.record import RECORD_COLUMNS, Record
from nbstep.errors import NbstepError, StepReplayError
from nbstep.storage import StepStore

from .summary import summarize, summarize_variables

COLUMNS = [
    "event_id", "namespace", "key", "sequence", "deterministic_inputs_hash", "result",
    "occurred_at", "current", "status", "duration_s", "size_bytes", "codec", "stored",
    "identity", "reason", "recorded_by",
]


def records_frame(store: StepStore, namespace: str, *, results: bool | None = None,
                  history: bool | None = None, all_columns: bool = False,
                  user_ns: dict[str, Any] | None = None,
                  replays: dict[int, int] | None = None) -> Any:
    """The frame (module docstring); ``user_ns`` is the notebook's namespace when
    called from one (a ``%%step`` record's functions get it as their globals), and
    ``replays`` how often this process replayed each record, by event id."""
    if all_columns:
        return _full_frame(store, namespace, results=results is not False,
                           history=history is not False, user_ns=user_ns)
    return _readable_frame(store, namespace, results=results, history=bool(history),
                           user_ns=user_ns, replays=replays or {})


def _full_frame(store: StepStore, namespace: str, *, results: bool, history: bool,
                user_ns: dict[str, Any] | None) -> Any:
    import pandas as pd

    frame = _rows(store, namespace, results, history)
    if results:
        frame["result"] = _objects([_value(store, record, user_ns)
                                    for record in _records(frame)])
    frame["current"] = frame["status"] == "current"
    frame["stored"] = frame["object_sha256"].isna().map({True: "inline", False: "object"})
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at_us"], unit="us", utc=True).astype(
        "datetime64[us, UTC]")
    return frame[[c for c in COLUMNS if results or c != "result"]].reset_index(drop=True)


def _readable_frame(store: StepStore, namespace: str, *, results: bool | None, history: bool,
                    user_ns: dict[str, Any] | None, replays: dict[int, int]) -> Any:
    import pandas as pd

    from .steps_frame import StepsFrame

    read = results is not False
    frame = _rows(store, namespace, read, history)
    duration = frame["duration_s"].astype("float64")
    # Each replay saved the record's duration; a record this process did not replay
    # shows what one replay saves.
    replayed = frame["event_id"].map(replays).fillna(1.0) if replays else 1.0
    out = StepsFrame({
        "key": frame["key"],
        "occurrence": frame["sequence"].astype("int64"),
        "status": frame["status"],
        "recorded_at": pd.to_datetime(frame["occurred_at_us"], unit="us", utc=True).astype(
            "datetime64[us, UTC]"),
        "duration": duration,
        "saved": (duration * replayed).astype("float64"),
    })
    if read:
        read_back = [_read(store, record, user_ns) for record in _records(frame)]
        out["value"] = _objects([shown for _, shown in read_back])
        if results:
            out["result"] = _objects([value for value, _ in read_back])
    return out.reset_index(drop=True)


def _objects(values: list[Any]) -> Any:
    """A column of any values, each kept whole (an array is one cell, not a row)."""
    import numpy as np

    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        column[i] = value
    return column


def _rows(store: StepStore, namespace: str, values: bool, history: bool) -> Any:
    """The namespace's events, current ones only unless ``history``."""
    frame = store.admin().history(namespace, values=values)
    if not history:
        frame = frame[frame["status"] == "current"]
    return frame.reset_index(drop=True)


def _records(frame: Any) -> list[Record]:
    return [Record.from_row(row) for row in frame[list(RECORD_COLUMNS)].itertuples(index=False)]


def _value(store: StepStore, record: Record, user_ns: dict[str, Any] | None) -> Any:
    """A record's value as the frame shows it; one that cannot be read says why."""
    return _read(store, record, user_ns)[0]


def _read(store: StepStore, record: Record, user_ns: dict[str, Any] | None
          ) -> tuple[Any, str]:
    """A record's value as the frame shows it, and its one-line summary.

    A ``%%step`` record's value is the cell's container: it shows as its variables.
    """
    try:
        value = store.read(record)
    except StepReplayError as e:
        value = Unreadable(str(e))
        return value, summarize(value)
    if is_cell_record(value):
        try:
            cell = read_cell(value, user_ns)
        except NbstepError:  # a format this version cannot read: shown as it is
            return value, summarize(value)
        if not cell.variables and cell.has_result:  # a cell that only shows something
            return cell.variables, f"Out: {summarize(cell.result)}"
        return cell.variables, summarize_variables(cell.variables)
    return value, summarize(value)


class Unreadable:
    """Stands for a value that cannot be read back (its file is missing or damaged)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unreadable: {self.reason}>"
