"""Every statement the team store sends its server (the tables are in :mod:`.schema`).

Rows come back as ``nbstep.core.record.RECORD_COLUMNS`` (``SELECT_RECORD``), so
``Record.from_row`` reads them. Values larger than ``KEEP_INLINE`` bytes are not
fetched with their record: a lookup that only compares input hashes does not
download a large value; ``value()`` fetches it when the step replays.
"""

from __future__ import annotations

import json
from typing import Any

from nbstep.core.record import FORGOTTEN, RECORDED, NewRecord, Record

from .schema import EVENTS, NAMESPACES

KEEP_INLINE = 64 * 1024



def _select_record(values: str) -> str:
    return (
        f"event_id, namespace, key, sequence, identity, deterministic_inputs_hash, codec, "
        f"{values}, object_sha256, size_bytes, duration_s, "
        "(extract(epoch FROM occurred_at) * 1000000)::bigint, reason, details, checksum, "
        "recorded_by"
    )


SELECT_RECORD = _select_record(f"CASE WHEN size_bytes <= {KEEP_INLINE} THEN result_json END, "
                               f"CASE WHEN size_bytes <= {KEEP_INLINE} THEN result_blob END")
SELECT_FULL_RECORD = _select_record("result_json, result_blob")
# What the mirror copies: every column, values included.
SELECT_EVENT = (
    "event_id, kind, namespace, key, sequence, version, identity, deterministic_inputs_hash, "
    "codec, result_json, result_blob, object_sha256, size_bytes, duration_s, "
    "(extract(epoch FROM occurred_at) * 1000000)::bigint, reason, details, pid, host, "
    "checksum, recorded_by"
)
EVENT_COLUMNS = ("event_id", "kind", "namespace", "key", "sequence", "version", "identity",
                 "deterministic_inputs_hash", "codec", "result_json", "result_blob",
                 "object_sha256", "size_bytes", "duration_s", "occurred_at_us", "reason",
                 "details", "pid", "host", "checksum", "recorded_by")

LOOKUP = f"""
SELECT kind, {SELECT_RECORD} FROM {EVENTS}
WHERE namespace = %s AND key = %s AND sequence = %s
ORDER BY version DESC LIMIT 1
"""

# The compare-and-set: insert version n + 1 of the slot unless its current record is
# another than the one the caller saw; the unique (slot, version) constraint settles
# a race with another machine (ON CONFLICT: nothing inserted, the caller looks again).
APPEND = f"""
WITH latest AS (
    SELECT event_id, kind, version FROM {EVENTS}
    WHERE namespace = %(namespace)s AND key = %(key)s AND sequence = %(sequence)s
    ORDER BY version DESC LIMIT 1
)
INSERT INTO {EVENTS} (kind, namespace, key, sequence, version, identity,
    deterministic_inputs_hash, codec, result_json, result_blob, object_sha256, checksum,
    size_bytes, duration_s, occurred_at, reason, details, pid, host)
SELECT '{RECORDED}', %(namespace)s, %(key)s, %(sequence)s,
    coalesce((SELECT version FROM latest), 0) + 1, %(identity)s, %(input_hash)s, %(codec)s,
    %(result_json)s, %(result_blob)s, %(object_sha256)s, %(checksum)s, %(size_bytes)s,
    %(duration_s)s, TIMESTAMPTZ 'epoch' + %(occurred_at_us)s * INTERVAL '1 microsecond',
    %(reason)s,
    %(details)s, %(pid)s, %(host)s
WHERE NOT EXISTS (SELECT FROM latest WHERE kind = '{RECORDED}'
                  AND event_id IS DISTINCT FROM %(expected)s)
ON CONFLICT ON CONSTRAINT events_slot_version DO NOTHING
RETURNING event_id, recorded_by
"""

# A slot's newest events, for its earlier versions (nbstep/storage/versions.py).
VERSIONS = f"""
SELECT kind, {SELECT_RECORD} FROM {EVENTS}
WHERE namespace = %s AND key = %s AND sequence = %s
ORDER BY version DESC LIMIT %s
"""

REGISTER = f"INSERT INTO {NAMESPACES} (namespace) VALUES (%s) ON CONFLICT DO NOTHING"

# The latest event of every slot of a namespace (or of every namespace).
_LATEST = f"""
SELECT DISTINCT ON (namespace, key, sequence) kind, {SELECT_RECORD}
FROM {EVENTS} {{where}}
ORDER BY namespace, key, sequence, version DESC
"""


def current_of(con: Any, namespace: str) -> list[Record]:
    rows = con.execute(_LATEST.format(where="WHERE namespace = %s"), [namespace]).fetchall()
    records = [Record.from_row(row[1:]) for row in rows if row[0] == RECORDED]
    return sorted(records, key=lambda r: r.event_id)


def lookup(con: Any, namespace: str, key: str, sequence: int) -> Record | None:
    row = con.execute(LOOKUP, [namespace, key, sequence]).fetchone()
    if row is None or row[0] != RECORDED:
        return None
    return Record.from_row(row[1:])


def versions(con: Any, namespace: str, key: str, sequence: int, keep: int) -> list[Record]:
    from nbstep.storage.versions import earlier

    if keep <= 1:
        return []
    rows = con.execute(VERSIONS, [namespace, key, sequence, keep]).fetchall()
    return [Record.from_row(row[1:]) for row in earlier(rows, keep, lambda row: row[0])]


def append(con: Any, new: NewRecord, placed: Any, expected: int | None, occurred_at_us: int,
           pid: int, host: str) -> tuple[int, str] | None:
    """(event id, recorded_by) of the inserted record, or None: the slot changed."""
    row = con.execute(APPEND, {
        "namespace": new.namespace, "key": new.key, "sequence": new.sequence,
        "identity": new.identity, "input_hash": new.input_hash, "codec": new.codec,
        "result_json": placed.result_json, "result_blob": placed.result_blob,
        "object_sha256": placed.object_sha256, "checksum": placed.checksum,
        "size_bytes": placed.size, "duration_s": new.duration_s,
        "occurred_at_us": occurred_at_us, "reason": new.reason,
        "details": json.dumps(new.details, sort_keys=True) if new.details else None,
        "pid": pid, "host": host, "expected": expected,
    }).fetchone()
    return None if row is None else (int(row[0]), row[1])


def register(con: Any, namespace: str) -> None:
    con.execute(REGISTER, [namespace])


FORGET = f"""
INSERT INTO {EVENTS} (kind, namespace, key, sequence, version, occurred_at, reason, pid, host)
SELECT '{FORGOTTEN}', namespace, key, sequence, version + 1, clock_timestamp(), %s, %s, %s
FROM (
    SELECT DISTINCT ON (namespace, key, sequence) namespace, key, sequence, version, kind,
        event_id
    FROM {EVENTS} {{where}}
    ORDER BY namespace, key, sequence, version DESC
) latest
WHERE kind = '{RECORDED}' {{only}}
ON CONFLICT ON CONSTRAINT events_slot_version DO NOTHING
"""


def forget(con: Any, namespace: str | None, key: str | None, reason: str, pid: int,
           host: str, only: set[int] | None = None) -> int:
    """Insert a ``forgotten`` event for each current record that matches; how many."""
    conditions, params = [], []
    if namespace is not None:
        conditions.append("namespace = %s")
        params.append(namespace)
    if key is not None:
        conditions.append("key = %s")
        params.append(key)
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    only_sql = "AND event_id = ANY(%s)" if only is not None else ""
    statement = FORGET.format(where=where, only=only_sql)
    # In the statement's order: the SELECT list's, the subquery's WHERE, then `only`.
    values = [reason, pid, host, *params] + ([sorted(only)] if only is not None else [])
    return con.execute(statement, values).rowcount


def value(con: Any, event_id: int) -> tuple[str | None, bytes | None] | None:
    row = con.execute(f"SELECT result_json, result_blob FROM {EVENTS} WHERE event_id = %s",
                      [event_id]).fetchone()
    return None if row is None else (row[0], None if row[1] is None else bytes(row[1]))


# Every namespace with an event: a loose index scan (one index probe per namespace,
# not a read of every event).
NAMESPACE_LIST = f"""
WITH RECURSIVE found AS (
    (SELECT namespace FROM {EVENTS} ORDER BY namespace LIMIT 1)
    UNION ALL
    SELECT (SELECT e.namespace FROM {EVENTS} e WHERE e.namespace > found.namespace
            ORDER BY e.namespace LIMIT 1)
    FROM found WHERE found.namespace IS NOT NULL
)
SELECT namespace FROM found WHERE namespace IS NOT NULL
"""

# Per event: `kept_rank`, its place among its slot's records after the slot's last
# `forgotten` event, newest first (1: the current record, 2..keep_versions: its
# earlier versions, kept by gc; nbstep/storage/versions.py).
_SLOTS = f"""
SELECT *,
    CASE WHEN kind = '{RECORDED}' AND version > forgot_version THEN row_number() OVER (
        PARTITION BY namespace, key, sequence,
            kind = '{RECORDED}' AND version > forgot_version
        ORDER BY version DESC) END AS kept_rank
FROM (
    SELECT event_id, namespace, key, sequence, kind, version, size_bytes, occurred_at,
        max(version) OVER slot AS last_version,
        coalesce(max(CASE WHEN kind = '{FORGOTTEN}' THEN version END) OVER slot, 0)
            AS forgot_version
    FROM {EVENTS}
    WINDOW slot AS (PARTITION BY namespace, key, sequence)
) events_by_slot
"""

# old_bytes: what gc would free (neither current nor an earlier version).
SUMMARY = f"""
SELECT namespace,
    count(*) FILTER (WHERE is_current) AS steps,
    count(DISTINCT key) FILTER (WHERE is_current) AS keys,
    coalesce(sum(size_bytes) FILTER (WHERE is_current), 0) AS size_bytes,
    coalesce(sum(size_bytes) FILTER (WHERE kind = '{RECORDED}' AND NOT is_current
                                     AND coalesce(kept_rank > %(keep)s, true)), 0)
        AS old_bytes,
    max((extract(epoch FROM occurred_at) * 1000000)::bigint)
        FILTER (WHERE kind = '{RECORDED}') AS last_us
FROM (
    SELECT *, kind = '{RECORDED}' AND version = last_version AS is_current
    FROM ({_SLOTS}) ranked
) slots
GROUP BY namespace
ORDER BY namespace
"""

# Every recorded event with whether it is its slot's current record (check, gc).
RECORDED_EVENTS = f"""
SELECT {SELECT_FULL_RECORD},
    version = max(version) OVER (PARTITION BY namespace, key, sequence) AS is_current
FROM {EVENTS} WHERE kind = '{RECORDED}'
ORDER BY event_id
"""

# gc: every event that is neither the current record of its slot nor one of its
# keep_versions - 1 earlier versions.
STALE = f"""
SELECT event_id, namespace FROM ({_SLOTS}) ranked
WHERE NOT coalesce(kept_rank <= %(keep)s, false)
"""

LIVE_OBJECTS = f"SELECT DISTINCT object_sha256 FROM {EVENTS} WHERE object_sha256 IS NOT NULL"

# The mirror's cursor: rows committed after the snapshot the mirror last saw. A row
# whose transaction is below that snapshot's xmin was visible to it; among the others,
# the snapshot says which it saw (ids only growing would miss a transaction that
# started earlier and committed later).
SINCE = f"""
SELECT {SELECT_EVENT} FROM {EVENTS}
WHERE namespace = %s AND txid >= pg_snapshot_xmin(%s::pg_snapshot)
    AND NOT pg_visible_in_snapshot(txid, %s::pg_snapshot)
ORDER BY event_id
"""
ALL_OF = f"SELECT {SELECT_EVENT} FROM {EVENTS} WHERE namespace = %s ORDER BY event_id"
GENERATIONS = f"SELECT namespace, generation FROM {NAMESPACES} WHERE namespace = ANY(%s)"


# A move: a copy of each current record of the source in the target (the next version
# of its slot there), its identity and details given; in the mover's transaction.
MOVE_COPY = f"""
INSERT INTO {EVENTS} (kind, namespace, key, sequence, version, identity,
    deterministic_inputs_hash, codec, result_json, result_blob, object_sha256, checksum,
    size_bytes, duration_s, occurred_at, reason, details, pid, host)
SELECT '{RECORDED}', %(target)s, e.key, e.sequence,
    coalesce((SELECT max(t.version) FROM {EVENTS} t WHERE t.namespace = %(target)s
              AND t.key = e.key AND t.sequence = e.sequence), 0) + 1,
    %(identity)s, e.deterministic_inputs_hash, e.codec, e.result_json, e.result_blob,
    e.object_sha256, e.checksum, e.size_bytes, e.duration_s, e.occurred_at, e.reason,
    %(details)s, e.pid, e.host
FROM {EVENTS} e WHERE e.event_id = %(event_id)s
"""
# What a move copies: each slot's current record and its keep_versions - 1 earlier
# versions (the records after the slot's last `forgotten` event), oldest first, so
# the copies keep their order as versions of the target's slot.
KEPT = f"""
SELECT {SELECT_RECORD} FROM (
    SELECT *, row_number() OVER (PARTITION BY key, sequence ORDER BY version DESC) AS rank
    FROM {EVENTS} e
    WHERE namespace = %(namespace)s AND kind = '{RECORDED}' AND version > coalesce((
        SELECT max(f.version) FROM {EVENTS} f WHERE f.namespace = e.namespace
        AND f.key = e.key AND f.sequence = e.sequence AND f.kind = '{FORGOTTEN}'), 0)
) kept
WHERE rank <= %(keep)s
ORDER BY key, sequence, version
"""
# The events of a source the target holds copies of (a move's, current or not).
MOVED_FROM = f"""
SELECT details::jsonb -> 'moved_from' ->> 'event_id' FROM {EVENTS}
WHERE namespace = %(target)s AND kind = '{RECORDED}' AND details LIKE '%%moved_from%%'
    AND details::jsonb -> 'moved_from' ->> 'namespace' = %(source)s
"""
# Moves of one namespace wait for each other (writers of steps do not take it).
MOVE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))"


def current_full(con: Any, namespace: str) -> list[Record]:
    rows = con.execute(_LATEST.replace(SELECT_RECORD, SELECT_FULL_RECORD).format(
        where="WHERE namespace = %s"), [namespace]).fetchall()
    records = [Record.from_row(row[1:]) for row in rows if row[0] == RECORDED]
    return sorted(records, key=lambda r: r.event_id)


def kept_of(con: Any, namespace: str, keep: int) -> list[Record]:
    """Every current record of a namespace and its earlier versions (see KEPT)."""
    rows = con.execute(KEPT, {"namespace": namespace, "keep": max(keep, 1)}).fetchall()
    return [Record.from_row(row) for row in rows]


def moved_here(con: Any, source: str, target: str) -> set[int]:
    """The event ids of ``source`` that ``target`` holds copies of."""
    rows = con.execute(MOVED_FROM, {"source": source, "target": target}).fetchall()
    return {int(row[0]) for row in rows if row[0] is not None}
