"""The mirror's tables in DuckDB, how a sync's rows go in, and the questions asked.

``events`` has the server's columns (``occurred_at`` a TIMESTAMPTZ), so SQL written
for a local store's ``steps.duckdb`` works here too, plus ``version`` and
``recorded_by``. ``cursors`` holds each mirrored namespace's generation and the
server snapshot its rows are complete up to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbstep.core.record import RECORDED, Record
from nbstep.core.version import __version__
from nbstep.storage.local.mirror.queries import MirrorQueries
from nbstep.storage.local.mirror.schema import ALIAS, insert_rows, transaction

MIRROR_VERSION = 1
DB_NAME = "steps.duckdb"
EVENTS = f"{ALIAS}.events"
CURSORS = f"{ALIAS}.cursors"
META = f"{ALIAS}.meta"

TABLES = f"""
CREATE TABLE {META} (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE {EVENTS} (
    event_id BIGINT PRIMARY KEY,
    kind VARCHAR NOT NULL,
    namespace VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    sequence BIGINT NOT NULL,
    version BIGINT NOT NULL,
    identity VARCHAR,
    deterministic_inputs_hash VARCHAR,
    codec VARCHAR,
    result_json VARCHAR,
    result_blob BLOB,
    object_sha256 VARCHAR,
    size_bytes BIGINT,
    duration_s DOUBLE,
    occurred_at TIMESTAMPTZ NOT NULL,
    reason VARCHAR,
    details VARCHAR,
    pid INTEGER,
    host VARCHAR,
    checksum VARCHAR,
    recorded_by VARCHAR
);
CREATE TABLE {CURSORS} (
    namespace VARCHAR PRIMARY KEY,
    generation BIGINT NOT NULL,
    snapshot VARCHAR NOT NULL,
    synced_at TIMESTAMPTZ NOT NULL
);
"""

RECORD_SELECT = (
    "event_id, namespace, key, sequence, identity, deterministic_inputs_hash, codec, "
    "result_json, result_blob, object_sha256, size_bytes, duration_s, "
    "epoch_us(occurred_at) AS occurred_at_us, reason, details, checksum, recorded_by"
)
_COLUMNS = ("event_id", "kind", "namespace", "key", "sequence", "version", "identity",
            "deterministic_inputs_hash", "codec", "result_json", "result_blob",
            "object_sha256", "size_bytes", "duration_s", "occurred_at_us", "reason",
            "details", "pid", "host", "checksum", "recorded_by")
_TYPES = {"event_id": "int64", "sequence": "int64", "version": "int64", "size_bytes": "int64",
          "duration_s": "float64", "occurred_at_us": "int64", "pid": "int32",
          "result_blob": "binary"}
_BLOB = _COLUMNS.index("result_blob")
_INSERT = (
    f"INSERT INTO {EVENTS} SELECT event_id, kind, namespace, key, sequence, version, identity, "
    "deterministic_inputs_hash, codec, result_json, result_blob, object_sha256, size_bytes, "
    "duration_s, make_timestamptz(occurred_at_us), reason, details, pid, host, checksum, "
    "recorded_by FROM batch ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True)
class Update:
    """One namespace's sync: its rows since the cursor (or all, ``full``), and the new
    cursor."""

    namespace: str
    generation: int
    snapshot: str
    rows: list[tuple[Any, ...]]
    full: bool


def tables(con: Any) -> set[str]:
    return {row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [ALIAS]).fetchall()}


def version(con: Any) -> int | None:
    if "meta" not in tables(con):
        return None
    row = con.execute(f"SELECT value FROM {META} WHERE name = 'mirror_version'").fetchone()
    return int(row[0]) if row and row[0].isdigit() else None


def create(con: Any, db_path: Path) -> None:
    with transaction(con, "create the team mirror's tables", db_path):
        for name in tables(con):
            con.execute(f"DROP TABLE {ALIAS}.{name}")
        for statement in TABLES.split(";"):
            if statement.strip():
                con.execute(statement)
        con.execute(f"INSERT INTO {META} VALUES ('mirror_version', ?), ('created_by', ?)",
                    [str(MIRROR_VERSION), f"nbstep {__version__}"])


def cursors(con: Any, namespaces: list[str]) -> dict[str, tuple[int, str]]:
    rows = con.execute(f"SELECT namespace, generation, snapshot FROM {CURSORS} "
                       "WHERE list_contains(?, namespace)", [namespaces]).fetchall()
    return {ns: (int(gen), snap) for ns, gen, snap in rows}


def cursors_all(con: Any) -> dict[str, tuple[int, str, int]]:
    rows = con.execute(f"SELECT namespace, generation, snapshot, epoch_us(synced_at) "
                       f"FROM {CURSORS}").fetchall()
    return {ns: (int(gen), snap, int(at)) for ns, gen, snap, at in rows}


def apply(con: Any, db_path: Path, updates: list[Update]) -> None:
    """Write a sync's rows and move the cursors, all in one transaction."""
    with transaction(con, "copy the team store's new rows into the mirror", db_path):
        rows = []
        for update in updates:
            if update.full:
                con.execute(f"DELETE FROM {EVENTS} WHERE namespace = ?", [update.namespace])
            rows.extend(update.rows)
            con.execute(f"INSERT OR REPLACE INTO {CURSORS} VALUES (?, ?, ?, now())",
                        [update.namespace, update.generation, update.snapshot])
        if rows:
            _insert(con, rows)


def _insert(con: Any, rows: list[tuple[Any, ...]]) -> None:
    # The driver hands a bytea over as a memoryview; Arrow takes bytes.
    rows = [row if row[_BLOB] is None else (*row[:_BLOB], bytes(row[_BLOB]), *row[_BLOB + 1:])
            for row in rows]
    insert_rows(con, _INSERT, _COLUMNS, rows, _TYPES)


# A slot's events are ordered by the server's per-slot version.
_QUERIES = MirrorQueries("version", RECORD_SELECT)
history = _QUERIES.history
summary = _QUERIES.summary


_CURRENT = f"""
SELECT {RECORD_SELECT} FROM {EVENTS}
WHERE namespace = ? {{extra}}
QUALIFY row_number() OVER (PARTITION BY key, sequence ORDER BY version DESC) = 1
    AND kind = '{RECORDED}'
ORDER BY event_id
"""


def current(con: Any, namespace: str) -> list[Record]:
    rows = con.execute(_CURRENT.format(extra=""), [namespace]).fetchall()
    return [Record.from_row(row) for row in rows]


def lookup(con: Any, namespace: str, key: str, sequence: int) -> Record | None:
    row = con.execute(
        f"SELECT kind, {RECORD_SELECT} FROM {EVENTS} WHERE namespace = ? AND key = ? "
        "AND sequence = ? ORDER BY version DESC LIMIT 1", [namespace, key, sequence]).fetchone()
    if row is None or row[0] != RECORDED:
        return None
    return Record.from_row(row[1:])


def versions(con: Any, namespace: str, key: str, sequence: int, keep: int) -> list[Record]:
    """The slot's earlier versions as of the last sync (nbstep/storage/versions.py)."""
    from nbstep.storage.versions import earlier

    if keep <= 1:
        return []
    rows = con.execute(
        f"SELECT kind, {RECORD_SELECT} FROM {EVENTS} WHERE namespace = ? AND key = ? "
        "AND sequence = ? ORDER BY version DESC LIMIT ?", [namespace, key, sequence, keep]
    ).fetchall()
    return [Record.from_row(row[1:]) for row in earlier(rows, keep, lambda row: row[0])]


def value(con: Any, event_id: int) -> tuple[str | None, bytes | None] | None:
    row = con.execute(f"SELECT result_json, result_blob FROM {EVENTS} WHERE event_id = ?",
                      [event_id]).fetchone()
    return None if row is None else (row[0], None if row[1] is None else bytes(row[1]))


def namespaces(con: Any) -> list[str]:
    return [row[0] for row in con.execute(
        f"SELECT DISTINCT namespace FROM {EVENTS} ORDER BY 1").fetchall()]
