"""Bringing the mirror up to date with the logs: only what was appended since last time.

The ``logs`` table remembers, per log file, its generation, inode and how many bytes
of it are in ``events``. A log that grew is read from there on; one that gc
compacted (a new generation or inode) is read again whole, its namespace's rows
replaced; a log that is gone takes its rows with it. Frames are read with the same
parser as every reader (:mod:`..frames`); a torn tail is left for the next sync.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from nbstep.storage.local import frames

from .schema import EVENTS, LOGS, insert_rows, transaction

_COLUMNS = ("event_id", "kind", "namespace", "key", "sequence", "identity",
            "deterministic_inputs_hash", "codec", "result_json", "result_blob",
            "object_sha256", "size_bytes", "duration_s", "occurred_at_us", "reason",
            "details", "pid", "host", "checksum")
_INSERT = (
    f"INSERT INTO {EVENTS} SELECT event_id, kind, namespace, key, sequence, identity, "
    "deterministic_inputs_hash, codec, result_json, result_blob, object_sha256, size_bytes, "
    "duration_s, make_timestamptz(occurred_at_us), reason, details, pid, host, checksum "
    "FROM batch"
)


class _Change(NamedTuple):
    """What one log adds to the table since the last sync."""

    file: str
    namespace: str
    generation: int
    inode: int
    synced: int  # bytes of the log in the table after this sync
    replace: bool  # the namespace's rows are replaced (a new log, or gc compacted it)
    rows: list[list[Any]]


def sync(con: Any, folder: Path, db_path: Path, only: set[str] | None = None) -> None:
    """Update the table from the logs in ``folder`` (``only``: these file names).

    Every change goes in one transaction, whatever the number of logs: a first
    `nbstep ls` over a thousand notebooks commits once, not a thousand times.
    """
    known = {row[0]: row[1:] for row in con.execute(
        f"SELECT file, namespace, generation, inode, synced FROM {LOGS}").fetchall()}
    present = {p.name: p for p in folder.glob("*.log")} if folder.is_dir() else {}
    removed = [name for name in sorted(set(known) - set(present))
               if only is None or name in only]
    changes = [change for name, path in sorted(present.items())
               if (only is None or name in only)
               and (change := _read_one(path, known.get(name))) is not None]
    if not removed and not changes:
        return
    with transaction(con, "bring the table up to date with the logs", db_path):
        gone = [known[name][0] for name in removed]
        gone += [change.namespace for change in changes if change.replace]
        if gone:
            con.execute(f"DELETE FROM {EVENTS} WHERE list_contains(?, namespace)", [gone])
        if removed:
            con.execute(f"DELETE FROM {LOGS} WHERE list_contains(?, file)", [removed])
        rows = [row for change in changes for row in change.rows]
        if rows:
            _insert(con, rows)
        if changes:
            _upsert_logs(con, changes)


def _read_one(path: Path, known: tuple[Any, ...] | None) -> _Change | None:
    """What ``path`` adds since the table last read it, or None (nothing)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None  # compacted away between listing and reading: the next sync sees it
    with f:
        stat = os.fstat(f.fileno())
        head = f.read(512)  # the header frame (about 100 bytes), in one small read
        header = frames.decode_at(head, 0)
        if header is None and len(head) == 512:
            head += f.read((1 << 16) - 512)  # a long or damaged header: look further
            header = frames.decode_at(head, 0)
        if header is not None and "nbstep_log" in header.event:
            namespace = header.event["namespace"]
            generation, events_start = int(header.event["generation"]), header.end
        else:
            # A damaged header: the events name their namespace (generation 0 until
            # `nbstep verify --repair` writes a new header).
            first = next((item for item in frames.scan(head) if isinstance(item, frames.Frame)
                          and "namespace" in item.event), None)
            if first is None:
                return None  # nothing readable (check() reports it)
            namespace, generation, events_start = first.event["namespace"], 0, 0
        if known is not None and (known[1], known[2]) == (generation, stat.st_ino):
            start, replace = known[3], False
            if start >= stat.st_size:
                return None
        else:
            start, replace = events_start, True
        f.seek(start)
        data = f.read()
    rows, synced = _rows(data, namespace)
    return _Change(path.name, namespace, generation, stat.st_ino, start + synced, replace, rows)


def _rows(data: bytes, namespace: str) -> tuple[list[list[Any]], int]:
    """The table rows of the frames in ``data``, and where the last complete one ends."""
    rows = []
    synced = 0
    for item in frames.scan(data):
        if isinstance(item, frames.Damage):
            if item.torn:
                break  # an append in progress, or a torn tail: a later sync sees it
            synced = item.end
            continue
        event = item.event
        synced = item.end
        if "event_id" not in event:
            continue
        blob = data[item.blob_start:item.end] if item.has_blob else None
        details = event.get("details")
        rows.append([
            event["event_id"], event["kind"], namespace, event["key"], event["sequence"],
            event.get("identity"), event.get("deterministic_inputs_hash"), event.get("codec"),
            event.get("result_json"), blob, event.get("object_sha256"), event.get("size_bytes"),
            event.get("duration_s"), event["occurred_at_us"], event.get("reason"),
            json.dumps(details, sort_keys=True) if details else None, event.get("pid"),
            event.get("host"), event.get("checksum"),
        ])
    return rows, synced


_TYPES = {"result_blob": "binary", "event_id": "int64", "sequence": "int64",
          "size_bytes": "int64", "duration_s": "float64", "occurred_at_us": "int64",
          "pid": "int32"}


def _insert(con: Any, rows: list[list[Any]]) -> None:
    insert_rows(con, _INSERT, _COLUMNS, rows, _TYPES)


def _upsert_logs(con: Any, changes: list[_Change]) -> None:
    import pyarrow as pa

    batch = pa.table({
        "file": pa.array([c.file for c in changes], pa.string()),
        "namespace": pa.array([c.namespace for c in changes], pa.string()),
        "generation": pa.array([c.generation for c in changes], pa.int64()),
        "inode": pa.array([c.inode for c in changes], pa.int64()),
        "synced": pa.array([c.synced for c in changes], pa.int64()),
    })
    con.register("logs_batch", batch)
    try:
        con.execute(f"INSERT OR REPLACE INTO {LOGS} SELECT * FROM logs_batch")
    finally:
        con.unregister("logs_batch")
