"""The mirror's tables in ``steps.duckdb``, and the one transaction helper.

The mirror is derived from the namespace logs (docs/record-format.md): a table that
is missing, of another layout or unreadable is rebuilt from them, never migrated.
Every SQL statement of nbstep lives in this folder; ``{ALIAS}.events`` and
``{ALIAS}.meta`` name the attached file's tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbstep.core.version import __version__
from nbstep.errors import NbstepError

# Bump when the tables below change: a mirror of another version is rebuilt.
MIRROR_VERSION = 3
ALIAS = "nbstep_store"
EVENTS = f"{ALIAS}.events"
META = f"{ALIAS}.meta"
LOGS = f"{ALIAS}.logs"

TABLES = f"""
CREATE TABLE {META} (
    name VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE {EVENTS} (
    event_id BIGINT NOT NULL,
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
CREATE TABLE {LOGS} (
    file VARCHAR PRIMARY KEY,
    namespace VARCHAR NOT NULL,
    generation BIGINT NOT NULL,
    inode BIGINT NOT NULL,
    synced BIGINT NOT NULL
);
"""

# SELECT list giving nbstep.core.record.RECORD_COLUMNS.
RECORD_SELECT = (
    "event_id, namespace, key, sequence, identity, deterministic_inputs_hash, codec, "
    "result_json, result_blob, object_sha256, size_bytes, duration_s, "
    "epoch_us(occurred_at) AS occurred_at_us, reason, details, checksum, "
    "NULL::VARCHAR AS recorded_by"
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
            f"could not {what} in {db_path} ({type(e).__name__}: {e}); nothing was changed."
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
            "nothing was changed. Check free disk space and permissions."
        ) from e


def _rollback(con: Any) -> None:
    try:
        con.execute("ROLLBACK")
    except Exception:
        # The transaction is already gone (DuckDB aborts it on some errors); the
        # original error is what the caller needs, and it is re-raised.
        pass


def insert_rows(con: Any, insert_sql: str, names: tuple[str, ...], rows: list[Any],
                types: dict[str, str]) -> None:
    """Run ``insert_sql`` (which reads the table ``batch``) over ``rows``, each a
    sequence in ``names`` order, handed to DuckDB as one Arrow table; ``types`` maps a
    column to its pyarrow type name (default ``string``)."""
    import pyarrow as pa

    columns = list(zip(*rows, strict=True))
    batch = pa.table({name: pa.array(values, type=getattr(pa, types.get(name, "string"))())
                      for name, values in zip(names, columns, strict=True)})
    con.register("batch", batch)
    try:
        con.execute(insert_sql)
    finally:
        con.unregister("batch")


def tables(con: Any) -> set[str]:
    return {row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [ALIAS]).fetchall()}


def version(con: Any) -> int | None:
    """The mirror layout of the attached file; None when it has no nbstep tables."""
    names = tables(con)
    if not names:
        return None
    if "meta" not in names:
        return -1
    row = con.execute(
        f"SELECT value FROM {META} WHERE name IN ('mirror_version', 'format_version') "
        "ORDER BY name DESC LIMIT 1").fetchone()
    try:
        return int(row[0]) if row else -1
    except ValueError:
        return -1


def create(con: Any, db_path: Path) -> None:
    """Drop whatever the file holds and create the mirror's tables, empty."""
    with transaction(con, "create the mirror's tables", db_path):
        for name in tables(con):
            con.execute(f"DROP TABLE {ALIAS}.{name}")
        for statement in TABLES.split(";"):
            if statement.strip():
                con.execute(statement)
        con.execute(f"INSERT INTO {META} VALUES ('mirror_version', ?), ('created_by', ?)",
                    [str(MIRROR_VERSION), f"nbstep {__version__}"])
