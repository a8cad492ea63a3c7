"""The local store: one DuckDB file of events, a journal, and content-addressed objects.

Layout of a store directory (``.nbstep/`` by default)::

    steps.duckdb         the event table (see docs/record-format.md)
    journal              events committed but not yet folded into the table
    objects/ab/<sha256>  values above ``inline_limit`` bytes, content-addressed
    objects/tmp/         half-written object files; gc removes stale ones
    steps.lock           flock()ed by the process that has the database attached
    lock.want            touched by a process that waits for the database
    .gitignore           "*": a store is never committed by accident

How processes share the file is :mod:`.attachment`; the journal is :mod:`.journal`.
Because only the attached process can write, an in-memory index of each namespace's
current records stays exact while the file is attached; on every re-attach it is
checked against ``(max(event_id), gc epoch)`` and brought up to date. So replays cost
one query per namespace, then a dict lookup.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from nbstep.core.record import FORGOTTEN, RECORDED, NewRecord, Record
from nbstep.errors import NbstepError, StepReplayError
from nbstep.storage import values
from nbstep.storage.base import StepStore, StoreAdmin
from nbstep.storage.objects import ObjectFiles

from .admin import DuckDBAdmin
from .attachment import DEFAULT_LINGER, Attachment
from .journal import JOURNAL_NAME, Journal
from .schema import EVENTS, META, RECORD_SELECT, ROW_PLACEHOLDERS, ROW_WIDTH, ensure, transaction

DEFAULT_BUSY_TIMEOUT = 60.0
DEFAULT_INLINE_LIMIT = 64 * 1024
# Values up to this size stay in the namespace index; larger inline values are read
# from the table when replayed, so a namespace of big values does not fill memory.
CACHED_VALUE_LIMIT = 4096
# RECORD_SELECT, without the value columns of large inline values.
INDEX_SELECT = RECORD_SELECT.replace(
    "result_json, result_blob",
    f"CASE WHEN length(result_json) <= {CACHED_VALUE_LIMIT} THEN result_json END, "
    f"CASE WHEN octet_length(result_blob) <= {CACHED_VALUE_LIMIT} THEN result_blob END",
)
_HOST = socket.gethostname()

Slot = tuple[str, int]


class DuckDBStore(DuckDBAdmin, StepStore):
    """A store directory: the DuckDB event table plus the object files."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        linger: float = DEFAULT_LINGER,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        inline_limit: int = DEFAULT_INLINE_LIMIT,
    ) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.inline_limit = inline_limit
        self.objects = ObjectFiles(self.root / "objects")
        self.journal = Journal(self.root / JOURNAL_NAME)
        self.attachment = Attachment(
            self.root, linger=linger, busy_timeout=busy_timeout, on_attach=self._attached,
            before_detach=self._detaching, on_reset=self._reset,
        )
        self.db_path = self.attachment.db_path
        # namespace -> {(key, sequence): current record}, exact while attached.
        self.index: dict[str, dict[Slot, Record]] = {}
        self.known: tuple[int, str] | None = None  # (max event id, gc epoch) last seen
        self.max_event_id = 0

    def __repr__(self) -> str:
        return f"DuckDBStore({self.location!r})"

    # -- the attachment's hooks ------------------------------------------------------

    def _attached(self, con: Any) -> None:
        ensure(con, self.db_path)
        left = self.journal.open()
        if left is not None:
            # What a crashed holder left: fold its complete entries, then clear the file.
            self.journal.pending = left
            self.fold(con)
            self.journal.clear()
        self.validate_index(con)

    def _detaching(self, con: Any) -> None:
        try:
            self.fold(con)
        finally:
            self.journal.close()

    def _reset(self, forked: bool) -> None:
        self.index = {}
        self.known = None
        if forked:
            self.journal.abandon()

    # -- reading ---------------------------------------------------------------------

    def lookup(self, namespace: str, key: str, sequence: int) -> Record | None:
        with self.attachment.use() as con:
            return self._namespace(con, namespace).get((key, sequence))

    def current(self, namespace: str) -> list[Record]:
        with self.attachment.use() as con:
            return sorted(self._namespace(con, namespace).values(), key=lambda r: r.event_id)

    def read(self, record: Record) -> Any:
        return values.read(record, self.objects, self._inline_value)

    def _inline_value(self, record: Record) -> tuple[str | None, bytes | None]:
        """An inline value too big for the namespace index: read it now."""
        with self.attachment.use() as con:
            self.fold(con)
            row = con.execute(
                f"SELECT result_json, result_blob FROM {EVENTS} WHERE event_id = ?",
                [record.event_id],
            ).fetchone()
        if row is None:
            raise StepReplayError(
                f"cannot replay {record.where}: its record (event {record.event_id}) was "
                "removed by `nbstep gc` while this process held it. Run the step again."
            )
        return row[0], row[1]

    def _namespace(self, con: Any, namespace: str) -> dict[Slot, Record]:
        index = self.index.get(namespace)
        if index is None:
            self.fold(con)
            rows = con.execute(
                f"SELECT kind, {INDEX_SELECT} FROM {EVENTS} WHERE namespace = ? "
                "QUALIFY row_number() OVER (PARTITION BY key, sequence ORDER BY event_id DESC) = 1",
                [namespace],
            ).fetchall()
            index = {
                (row[3], row[4]): Record.from_row(row[1:]) for row in rows if row[0] == RECORDED
            }
            self.index[namespace] = index
        return index

    def validate_index(self, con: Any) -> None:
        """Bring the namespace index up to date after (re-)attaching.

        The log is append-only between gcs, so when the gc epoch is unchanged the
        events after the last one this process knew are exactly what changed.
        Event ids are never reused: gc keeps the highest id it deleted as a floor.
        """
        row = con.execute(
            f"SELECT greatest((SELECT coalesce(max(event_id), 0) FROM {EVENTS}), "
            f"(SELECT coalesce(max(value::BIGINT), 0) FROM {META} "
            "WHERE name = 'event_id_floor')), "
            f"(SELECT value FROM {META} WHERE name = 'gc_epoch')"
        ).fetchone()
        known = (row[0], row[1])
        previous = self.known
        if previous is None or previous[1] != known[1] or known[0] < previous[0]:
            self.index.clear()
        elif known[0] > previous[0] and self.index:
            self._catch_up(con, previous[0])
        self.known = known
        self.max_event_id = row[0]

    def _catch_up(self, con: Any, since: int) -> None:
        rows = con.execute(
            f"SELECT kind, {INDEX_SELECT} FROM {EVENTS} WHERE event_id > ? "
            "ORDER BY event_id LIMIT 20001",
            [since],
        ).fetchall()
        if len(rows) > 20000:
            self.index.clear()  # cheaper to reload what is used than to patch
            return
        for kind, *event in rows:
            index = self.index.get(event[1])
            if index is None:
                continue
            if kind == RECORDED:
                index[(event[2], event[3])] = Record.from_row(event)
            else:
                index.pop((event[2], event[3]), None)

    # -- writing ---------------------------------------------------------------------

    def append(self, new: NewRecord, expected_event_id: int | None) -> tuple[Record, bool]:
        placed = values.place(new, self.inline_limit, self.objects)
        details_json = json.dumps(new.details, sort_keys=True) if new.details else None
        now_us = time.time_ns() // 1000
        with self.attachment.use() as con:
            index = self._namespace(con, new.namespace)
            current = index.get((new.key, new.sequence))
            if current is not None and current.event_id != expected_event_id:
                return current, False
            # (No current record although the caller saw one: it was forgotten meanwhile,
            # and the new value stands.)
            if placed.object_sha256 is not None and not self.objects.exists(placed.object_sha256):
                # gc removed a file we were about to reuse; it deletes only while attached,
                # which we are now, so writing it again here closes that window.
                placed = values.place(new, self.inline_limit, self.objects)
            event_id = self.max_event_id + 1
            row = [
                event_id, RECORDED, new.namespace, new.key, new.sequence, new.identity,
                new.input_hash, new.codec, placed.result_json, placed.result_blob,
                placed.object_sha256, placed.size, new.duration_s, now_us, new.reason,
                details_json, os.getpid(), _HOST, placed.checksum,
            ]
            try:
                self.journal.append(row)
            except OSError as e:
                raise NbstepError(
                    f"could not record step `{new.key}` in {self.journal.path} ({e}); nothing "
                    "was recorded. Check free disk space and permissions, then run the step "
                    "again."
                ) from e
            cached = placed.size <= CACHED_VALUE_LIMIT
            record = Record(
                event_id=event_id, namespace=new.namespace, key=new.key, sequence=new.sequence,
                identity=new.identity, input_hash=new.input_hash, codec=new.codec,
                result_json=placed.result_json if cached else None,
                result_blob=placed.result_blob if cached else None,
                object_sha256=placed.object_sha256, size_bytes=placed.size,
                duration_s=new.duration_s, occurred_at_us=now_us, reason=new.reason,
                details=new.details, checksum=placed.checksum,
            )
            index[(new.key, new.sequence)] = record
            self.committed(event_id)
            self._fold_if_due(con)
            return record, True

    def committed(self, max_event_id: int) -> None:
        self.max_event_id = max_event_id
        if self.known is not None:
            self.known = (max_event_id, self.known[1])

    def forget(self, namespace: str | None, key: str | None = None) -> int:
        with self.attachment.use() as con:
            self.fold(con)
            where = ["1 = 1"]
            params: list[Any] = []
            if namespace is not None:
                where.append("namespace = ?")
                params.append(namespace)
            if key is not None:
                where.append("key = ?")
                params.append(key)
            rows = con.execute(
                f"SELECT namespace, key, sequence, kind FROM {EVENTS} "
                f"WHERE {' AND '.join(where)} "
                "QUALIFY row_number() OVER "
                "(PARTITION BY namespace, key, sequence ORDER BY event_id DESC) = 1",
                params,
            ).fetchall()
            targets = [row[:3] for row in rows if row[3] == RECORDED]
            if not targets:
                return 0
            first = self.max_event_id + 1
            now_us = time.time_ns() // 1000
            with transaction(con, "forget steps", self.db_path):
                con.executemany(
                    f"INSERT INTO {EVENTS} (event_id, kind, namespace, key, sequence, "
                    "occurred_at, reason, pid, host) VALUES "
                    "(?, ?, ?, ?, ?, make_timestamptz(?), 'forget', ?, ?)",
                    [[first + i, FORGOTTEN, ns, k, seq, now_us, os.getpid(), _HOST]
                     for i, (ns, k, seq) in enumerate(targets)],
                )
            for ns, k, seq in targets:
                cached = self.index.get(ns)
                if cached is not None:
                    cached.pop((k, seq), None)
            self.committed(first + len(targets) - 1)
            return len(targets)

    # -- the journal -----------------------------------------------------------------

    def _fold_if_due(self, con: Any) -> None:
        """Fold a long journal; a failure here is reported, not raised.

        The steps are durable in the journal already, and the step that triggered the
        fold has returned its value; folding is retried before the next read of the
        table and at detach, where a lasting failure raises.
        """
        if not self.journal.due:
            return
        try:
            self.fold(con)
        except NbstepError as e:
            warnings.warn(
                f"nbstep: {e} The steps are safe in {self.journal.path}; folding is retried "
                "before the store is next read.",
                RuntimeWarning,
                stacklevel=5,
            )

    def fold(self, con: Any) -> None:
        """Move journaled events into the events table; lock held, attached."""
        if not self.journal.pending:
            return
        # A journal left by an nbstep of an older format has shorter rows: the columns
        # added since then are empty for those events.
        rows = [row + [None] * (ROW_WIDTH - len(row)) for row in self.journal.pending]
        with transaction(con, "fold the journal into the events table", self.db_path):
            for start in range(0, len(rows), 100):
                chunk = rows[start:start + 100]
                con.execute(
                    f"INSERT OR IGNORE INTO {EVENTS} VALUES "
                    + ",".join([ROW_PLACEHOLDERS] * len(chunk)),
                    [value for row in chunk for value in row],
                )
        self.journal.clear()

    # -- the rest of the seam --------------------------------------------------------

    def admin(self) -> StoreAdmin:
        return self

    def release(self) -> None:
        self.attachment.release()

    def close(self) -> None:
        self.attachment.close()
