"""A recorded step as every layer sees it, and the one place a row becomes one.

A store keeps an append-only log of *events*. A ``recorded`` event holds a step's
value; a ``forgotten`` event makes the slot it names recompute. The latest event of
a slot ``(namespace, key, sequence)`` decides what is current. docs/record-format.md
has the columns in full.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

RECORDED = "recorded"
FORGOTTEN = "forgotten"

# The columns a backend selects, in this order, for Record.from_row.
RECORD_COLUMNS = (
    "event_id", "namespace", "key", "sequence", "identity", "deterministic_inputs_hash",
    "codec", "result_json", "result_blob", "object_sha256", "size_bytes", "duration_s",
    "occurred_at_us", "reason", "details", "checksum", "recorded_by",
)


class Record(NamedTuple):
    """One recorded step as the store holds it (the value still encoded).

    ``result_json`` / ``result_blob`` carry an inline value; both are None when the
    value lives in an object file (``object_sha256``) or was not loaded with the
    record (a large inline value, read when it is replayed).

    Immutable, and a named tuple rather than a frozen dataclass: a process builds
    one per event of a namespace the first time it reads it, and a tuple is built
    in a fraction of the time (the first replay after a restart pays for it).
    """

    event_id: int
    namespace: str
    key: str
    sequence: int
    identity: str
    input_hash: str
    codec: str
    result_json: str | None
    result_blob: bytes | None
    object_sha256: str | None
    size_bytes: int
    duration_s: float | None
    occurred_at_us: int
    reason: str | None
    details: dict[str, Any] | None
    checksum: str | None = None
    # Who recorded it, as the team store's server names them (its ``current_user``);
    # None in a local store, and for a record still waiting in the offline journal.
    recorded_by: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Record:
        """A Record from a row of RECORD_COLUMNS, as any backend or DataFrame gives it.

        Missing values may come as None, NaN or pandas' NA; blobs as any buffer;
        ``details`` as JSON text or a dict.
        """
        (event_id, namespace, key, sequence, identity, input_hash, codec, result_json,
         result_blob, object_sha256, size_bytes, duration_s, occurred_at_us, reason, details,
         checksum, recorded_by) = (None if _missing(value) else value for value in row)
        if isinstance(details, str):
            details = json.loads(details) if details else None
        return cls(
            event_id=int(event_id),
            namespace=namespace,
            key=key,
            sequence=int(sequence),
            identity=identity,
            input_hash=input_hash,
            codec=codec,
            result_json=result_json,
            result_blob=None if result_blob is None else bytes(result_blob),
            object_sha256=object_sha256,
            size_bytes=int(size_bytes or 0),
            duration_s=None if duration_s is None else float(duration_s),
            occurred_at_us=int(occurred_at_us),
            reason=reason,
            details=details,
            checksum=checksum,
            recorded_by=recorded_by,
        )

    @property
    def occurred_at(self) -> str:
        """The record's time as ``YYYY-MM-DD HH:MM:SS UTC``, for messages."""
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.occurred_at_us / 1e6))

    @property
    def stored(self) -> str:
        """Where the value lives: ``inline`` (in the event) or ``object`` (a file)."""
        return "object" if self.object_sha256 else "inline"

    @property
    def where(self) -> str:
        """``step `k` occurrence 2 in namespace `nb```, for messages."""
        return f"step `{self.key}` occurrence {self.sequence} in namespace `{self.namespace}`"


class NewRecord(NamedTuple):
    """A computed step the engine asks a store to record."""

    namespace: str
    key: str
    sequence: int
    identity: str
    input_hash: str
    codec: str
    data: Any  # bytes-like; for "json" the UTF-8 bytes of the JSON text
    duration_s: float | None
    reason: str
    details: dict[str, Any] | None = None


def _missing(value: Any) -> bool:
    """None, a float NaN, or pandas' NA / NaT (without importing pandas)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return type(value).__name__ in ("NAType", "NaTType")
