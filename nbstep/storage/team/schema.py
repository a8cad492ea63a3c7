"""The team store's tables on the server, their version, and the roles that use them.

Everything lives in the schema ``nbstep`` of the database the URL names:

``events``
    The append-only log, as in a local store (docs/record-format.md), one row per
    event. ``version`` counts a slot's events from 1, and ``UNIQUE (namespace, key,
    sequence, version)`` is what makes an append a compare-and-set: two machines
    that saw version *n* both insert *n + 1*, and one of them gets the conflict.
    ``recorded_by`` is the server's ``current_user``, and ``txid`` the inserting
    transaction (``pg_current_xact_id()``): writers may not set either (column
    privileges), so the trust setting can rely on the one, the mirror on the other.
``namespaces``
    One row per namespace with a ``generation`` that ``gc`` bumps when it deletes
    events of it, so a mirror knows to fetch that namespace again whole.
``meta``
    ``schema_version``: a server of a newer version is refused, never changed.

Bump ``SCHEMA_VERSION`` on any change, with an upgrade step in ``UPGRADES``.
"""

from __future__ import annotations

from typing import Any

from nbstep.core.version import __version__

SCHEMA_VERSION = 1
SCHEMA = "nbstep"
EVENTS = f"{SCHEMA}.events"
NAMESPACES = f"{SCHEMA}.namespaces"
META = f"{SCHEMA}.meta"
# Advisory lock keys (pg_advisory_lock): setting the schema up, and gc against
# writers of value files (writers share it, gc takes it alone).
INIT_LOCK = 0x6E62_7374_6570_0001
GC_LOCK = 0x6E62_7374_6570_0002

TABLES = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE {META} (
    name text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE {NAMESPACES} (
    namespace text PRIMARY KEY,
    generation bigint NOT NULL DEFAULT 1
);
CREATE TABLE {EVENTS} (
    event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('recorded', 'forgotten')),
    namespace text NOT NULL,
    key text NOT NULL,
    sequence bigint NOT NULL,
    version bigint NOT NULL,
    identity text,
    deterministic_inputs_hash text,
    codec text,
    result_json text,
    result_blob bytea,
    object_sha256 text,
    checksum text,
    size_bytes bigint,
    duration_s double precision,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason text,
    details text,
    pid integer,
    host text,
    recorded_by text NOT NULL DEFAULT current_user,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_slot_version UNIQUE (namespace, key, sequence, version)
);
CREATE INDEX events_cursor ON {EVENTS} (namespace, txid);
"""

# The columns a writer may set; the rest come from their defaults.
WRITABLE = ("kind", "namespace", "key", "sequence", "version", "identity",
            "deterministic_inputs_hash", "codec", "result_json", "result_blob",
            "object_sha256", "checksum", "size_bytes", "duration_s", "occurred_at", "reason",
            "details", "pid", "host")

# Three roles to grant people (docs/team-store.md). Idempotent: run it again after
# nbstep adds a table. Roles are the cluster's, grants the database's.
ROLES = f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nbstep_reader') THEN
        CREATE ROLE nbstep_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nbstep_writer') THEN
        CREATE ROLE nbstep_writer NOLOGIN IN ROLE nbstep_reader;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nbstep_admin') THEN
        CREATE ROLE nbstep_admin NOLOGIN IN ROLE nbstep_writer;
    END IF;
END $$;
GRANT USAGE ON SCHEMA {SCHEMA} TO nbstep_reader;
GRANT SELECT ON {EVENTS}, {NAMESPACES}, {META} TO nbstep_reader;
GRANT INSERT ({", ".join(WRITABLE)}) ON {EVENTS} TO nbstep_writer;
GRANT INSERT ON {NAMESPACES} TO nbstep_writer;
GRANT DELETE ON {EVENTS} TO nbstep_admin;
GRANT UPDATE (generation) ON {NAMESPACES} TO nbstep_admin;
"""

# from_version -> the SQL that upgrades a schema of that version to the next one.
UPGRADES: dict[int, str] = {}


def version(con: Any) -> int | None:
    """The server's schema version; None when there is no team store there.

    Raises what the driver raises for anything but a missing schema.
    """
    row = con.execute(
        "SELECT to_regclass(%s) IS NOT NULL", [META]).fetchone()
    if not row or not row[0]:
        return None
    found = con.execute(f"SELECT value FROM {META} WHERE name = 'schema_version'").fetchone()
    return int(found[0]) if found else None


def create(con: Any, roles: bool = True) -> int:
    """Create (or upgrade) the tables, and the roles; the schema version now.

    Safe to run from several machines at once: an advisory lock takes them in turn.
    """
    # The lock is taken before the transaction begins, so the transaction sees the
    # tables another machine created while this one waited.
    con.execute("SELECT pg_advisory_lock(%s)", [INIT_LOCK])
    try:
        return _create(con, roles)
    finally:
        if not con.broken:
            con.execute("SELECT pg_advisory_unlock(%s)", [INIT_LOCK])


def _create(con: Any, roles: bool) -> int:
    with con.transaction():
        found = version(con)
        if found is None:
            for statement in _statements(TABLES):
                con.execute(statement)
            con.execute(f"INSERT INTO {META} VALUES ('schema_version', %s), "
                        "('created_by', %s)", [str(SCHEMA_VERSION), f"nbstep {__version__}"])
            found = SCHEMA_VERSION
        while found < SCHEMA_VERSION:
            for statement in _statements(UPGRADES[found]):
                con.execute(statement)
            found += 1
            con.execute(f"UPDATE {META} SET value = %s WHERE name = 'schema_version'",
                        [str(found)])
        if roles:
            for statement in _statements(ROLES):
                con.execute(statement)
    return found


def _statements(script: str) -> list[str]:
    """The statements of a script (a DO block is one, whatever its semicolons say)."""
    out, buffer, in_block = [], [], False
    for line in script.strip().splitlines():
        buffer.append(line)
        if line.strip().startswith("DO $$"):
            in_block = True
        if in_block:
            if line.strip().endswith("END $$;"):
                in_block = False
                out.append("\n".join(buffer).rstrip(";"))
                buffer = []
            continue
        if line.rstrip().endswith(";"):
            out.append("\n".join(buffer).rstrip().rstrip(";"))
            buffer = []
    if "".join(buffer).strip():
        out.append("\n".join(buffer))
    return [s for s in out if s.strip()]
