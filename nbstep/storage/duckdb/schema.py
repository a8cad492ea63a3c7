"""The DuckDB store's tables, its format version, and the one transaction helper.

docs/record-format.md describes the columns. Every SQL statement of nbstep lives in
this folder; the names ``{ALIAS}.events`` and ``{ALIAS}.meta`` are the attached file's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbstep.core.version import __version__
from nbstep.errors import NbstepError, StoreFormatError

# Bump on a change of the tables below, add a migration in migrate(), and commit a
# store of the new format under tests/stores/ (tests/stores/make_store.py).
# 1: the first format. 2: events.checksum (xxh3-128 of an object file's bytes).
FORMAT_VERSION = 2
DB_NAME = "steps.duckdb"
ALIAS = "nbstep_store"
EVENTS = f"{ALIAS}.events"
META = f"{ALIAS}.meta"

SCHEMA = f"""
CREATE TABLE {META} (
    name VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE {EVENTS} (
    event_id BIGINT PRIMARY KEY,
    kind VARCHAR NOT NULL,
    namespace VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    sequence BIGINT NOT NULL,
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
    checksum VARCHAR
);
"""

# One events row in table order (the journal's rows have this shape), with the time
# given as microseconds since the epoch.
ROW_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, make_timestamptz(?), ?, ?, ?, ?, ?)"
ROW_WIDTH = ROW_PLACEHOLDERS.count("?")

# SELECT list giving nbstep.core.record.RECORD_COLUMNS.
RECORD_SELECT = (
    "event_id, namespace, key, sequence, identity, deterministic_inputs_hash, codec, "
    "result_json, result_blob, object_sha256, size_bytes, duration_s, "
    "epoch_us(occurred_at) AS occurred_at_us, reason, details, checksum"
)


@contextmanager
def transaction(con: Any, what: str, db_path: Path) -> Iterator[None]:
    """BEGIN ... COMMIT; on any error ROLLBACK and re-raise saying what was being done."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except Exception as e:
        _rollback(con)
        if isinstance(e, NbstepError):
            raise
        raise NbstepError(
            f"could not {what} in {db_path} ({type(e).__name__}: {e}); nothing was recorded."
        ) from e
    except BaseException:
        _rollback(con)
        raise
    try:
        con.execute("COMMIT")
    except Exception as e:
        _rollback(con)
        raise NbstepError(
            f"could not {what}: the commit to {db_path} failed ({type(e).__name__}: {e}); "
            "nothing was recorded. Check free disk space and permissions, then run the "
            "step again."
        ) from e


def _rollback(con: Any) -> None:
    try:
        con.execute("ROLLBACK")
    except Exception:
        # The transaction is already gone (DuckDB aborts it on some errors); the
        # original error is what the caller needs, and it is re-raised.
        pass


def ensure(con: Any, db_path: Path) -> None:
    """Create the tables in a new file, migrate an older format, refuse a newer one."""
    tables = {
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [ALIAS]
        ).fetchall()
    }
    if not tables:
        with transaction(con, "create the store's tables", db_path):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute(
                f"INSERT INTO {META} VALUES ('format_version', ?), ('gc_epoch', '0'), "
                "('created_by', ?)",
                [str(FORMAT_VERSION), f"nbstep {__version__}"],
            )
        return
    if "meta" not in tables or "events" not in tables:
        raise StoreFormatError(
            f"{db_path} is a DuckDB file but not an nbstep store (tables: "
            f"{', '.join(sorted(tables))}). Point NBSTEP_STORE at another directory."
        )
    row = con.execute(f"SELECT value FROM {META} WHERE name = 'format_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > FORMAT_VERSION:
        raise StoreFormatError(
            f"{db_path} was written by a newer nbstep (store format {version}; this "
            f"nbstep {__version__} reads format {FORMAT_VERSION} and older). Upgrade nbstep "
            "(pip install -U nbstep); the store was not changed."
        )
    if version < FORMAT_VERSION:
        migrate(con, db_path, version)


def migrate(con: Any, db_path: Path, version: int) -> None:
    """Bring an older store up to FORMAT_VERSION, in one transaction."""
    if version != 1:
        raise StoreFormatError(
            f"{db_path} has store format {version}, which this nbstep cannot "
            f"migrate (it reads formats 1 to {FORMAT_VERSION}). Move the store aside to "
            "start a new one."
        )
    with transaction(con, f"migrate the store from format {version}", db_path):
        # Format 2 adds a checksum for object files; format-1 records keep none and
        # are checked by size only, as before.
        con.execute(f"ALTER TABLE {EVENTS} ADD COLUMN checksum VARCHAR")
        con.execute(
            f"UPDATE {META} SET value = ? WHERE name = 'format_version'", [str(FORMAT_VERSION)]
        )
