"""``step.inspect()``: a namespace's records as a pandas DataFrame.

The seed's fields (``event_id``, ``namespace``, ``key``, ``sequence``,
``deterministic_inputs_hash``, ``result``, ``occurred_at``) come first, then what
nbstep adds: whether each record is ``current`` and its ``status`` (``current``,
``superseded`` by a later record, or ``forgotten``), the compute time, the value's
size, codec and where it is stored, the seed's ``identity``, why it was recorded, and
who recorded it (a team store's user; empty in a local store).
"""

from __future__ import annotations

from typing import Any

from nbstep.codecs.cell import readable_value
from nbstep.core.record import RECORD_COLUMNS, Record
from nbstep.errors import StepReplayError
from nbstep.storage import StepStore

COLUMNS = [
    "event_id", "namespace", "key", "sequence", "deterministic_inputs_hash", "result",
    "occurred_at", "current", "status", "duration_s", "size_bytes", "codec", "stored",
    "identity", "reason", "recorded_by",
]


def records_frame(store: StepStore, namespace: str, *, results: bool = True,
                  user_ns: dict[str, Any] | None = None) -> Any:
    """The frame; ``user_ns`` is the notebook's namespace when called from one (a
    ``%%step`` record's functions get it as their globals)."""
    import pandas as pd

    frame = store.admin().history(namespace, values=results)
    if results:
        frame["result"] = [_value(store, Record.from_row(row), user_ns)
                           for row in frame[list(RECORD_COLUMNS)].itertuples(index=False)]
    else:
        frame["result"] = pd.Series([None] * len(frame), dtype=object)
    frame["current"] = frame["status"] == "current"
    frame["stored"] = frame["object_sha256"].isna().map({True: "inline", False: "object"})
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at_us"], unit="us", utc=True).astype(
        "datetime64[us, UTC]")
    return frame[COLUMNS].reset_index(drop=True)


def _value(store: StepStore, record: Record, user_ns: dict[str, Any] | None) -> Any:
    """A record's value as the frame shows it; one that cannot be read says why."""
    try:
        value = store.read(record)
    except StepReplayError as e:
        return Unreadable(str(e))
    # A %%step record's value is the cell's container: show its variables instead.
    return readable_value(value, user_ns)


class Unreadable:
    """Stands for a value that cannot be read back (its file is missing or damaged)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unreadable: {self.reason}>"
