"""Stores of formats 1 and 2 (nbstep 0.1): their events become namespace logs.

Those stores kept the events in the DuckDB table itself, plus a ``journal`` of
pickled rows not yet folded into it. Opening one, this nbstep copies every event,
the journal's included, into per-namespace logs (same event ids, so records keep
their identity), writes the ``format`` file, and only then rebuilds the table as a
mirror. A crash midway leaves the old store as it was, and the next open starts over.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbstep.errors import StoreFormatError
from nbstep.storage.local import frames
from nbstep.storage.local.namespace_log import LOG_FORMAT, log_name
from nbstep.storage.local.quarantine import Quarantine
from nbstep.storage.objects import fsync_dir

from .schema import EVENTS, tables

LEGACY_FORMATS = (1, 2)
JOURNAL_NAME = "journal"
_FRAME = struct.Struct("<II")  # the old journal: length, crc32, pickled row
# The columns of an old events row, in table order (format 1 lacks the checksum).
_COLUMNS = ("event_id", "kind", "namespace", "key", "sequence", "identity",
            "deterministic_inputs_hash", "codec", "result_json", "result_blob",
            "object_sha256", "size_bytes", "duration_s", "occurred_at_us", "reason",
            "details", "pid", "host", "checksum")


def legacy_version(con: Any) -> int | None:
    """1 or 2 for a store of nbstep 0.1, else None."""
    if not {"meta", "events"} <= tables(con):
        return None
    row = con.execute("SELECT value FROM nbstep_store.meta WHERE name = 'format_version'"
                      ).fetchone()
    try:
        version = int(row[0]) if row else 0
    except ValueError:
        return None
    return version if version in LEGACY_FORMATS else None


def export(con: Any, root: Path, logs: Path, quarantine: Quarantine,
           write_format: Callable[[], None]) -> int:
    """Write every event of a legacy store into namespace logs; returns how many."""
    version = legacy_version(con)
    if version is None:
        raise StoreFormatError(f"{root} is not a store nbstep can upgrade")
    checksum = "checksum" if version >= 2 else "NULL AS checksum"
    rows = con.execute(
        f"SELECT event_id, kind, namespace, key, sequence, identity, "
        "deterministic_inputs_hash, codec, result_json, result_blob, object_sha256, "
        "size_bytes, duration_s, epoch_us(occurred_at), reason, details, pid, host, "
        f"{checksum} FROM {EVENTS} ORDER BY event_id"
    ).fetchall()
    events = {row[0]: list(row) for row in rows}
    for row in _journal_rows(root / JOURNAL_NAME, quarantine):
        events.setdefault(row[0], row + [None] * (len(_COLUMNS) - len(row)))
    by_namespace: dict[str, list[list[Any]]] = {}
    for event_id in sorted(events):
        row = events[event_id]
        by_namespace.setdefault(str(row[2]), []).append(row)
    logs.mkdir(parents=True, exist_ok=True)
    for namespace, namespace_rows in by_namespace.items():
        _write_log(logs / f"{log_name(namespace)}.log", namespace, namespace_rows)
    fsync_dir(logs)
    write_format()
    journal = root / JOURNAL_NAME
    if journal.exists():
        journal.unlink()
    return len(events)


def _write_log(path: Path, namespace: str, rows: list[list[Any]]) -> None:
    import json

    parts = [frames.encode({"nbstep_log": LOG_FORMAT, "namespace": namespace,
                            "generation": 1, "floor": 0})]
    for row in rows:
        values = dict(zip(_COLUMNS, row, strict=True))
        blob = values.pop("result_blob")
        values["namespace"] = namespace
        details = values.get("details")
        values["details"] = json.loads(details) if isinstance(details, str) and details else None
        event = {k: v for k, v in values.items() if v is not None}
        parts.append(frames.encode(event, bytes(blob) if blob is not None else None))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(b"".join(parts))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _journal_rows(path: Path, quarantine: Quarantine) -> list[list[Any]]:
    """The complete rows of an old journal; what cannot be read is set aside."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    rows = []
    offset = 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        payload = data[offset + _FRAME.size:offset + _FRAME.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            row = _Unpickler(io.BytesIO(payload)).load()
        except Exception:
            break
        if not isinstance(row, list):
            break
        rows.append([_plain(value) for value in row])
        offset += _FRAME.size + length
    if offset < len(data):
        quarantine.keep(path, 0, offset, data[offset:], "unreadable journal entries")
    return rows


def _plain(value: Any) -> Any:
    """A key saved as a str subclass (an Enum member) is its text."""
    return str.__str__(value) if isinstance(value, str) else value


class _Unpickler(pickle.Unpickler):
    """Old journals pickled keys that were str subclasses (``class Stage(str, Enum)``):
    a class this process may not have is read as plain ``str``."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (AttributeError, ImportError, ModuleNotFoundError):
            return str
