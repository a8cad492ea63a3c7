"""The questions asked of the mirror: one line per namespace, and one namespace's history."""

from __future__ import annotations

from typing import Any

from nbstep.core.record import FORGOTTEN, RECORDED

from .schema import EVENTS, RECORD_SELECT

# Per event: `kept_rank`, its place among its slot's records after the slot's last
# `forgotten` event, newest first (1: the current record, 2..keep_versions: its
# earlier versions, replayable and kept by gc; nbstep/storage/versions.py).
SLOTS = f"""
SELECT *,
    CASE WHEN kind = '{RECORDED}' AND event_id > forgot_id THEN row_number() OVER (
        PARTITION BY namespace, key, sequence, kind = '{RECORDED}' AND event_id > forgot_id
        ORDER BY event_id DESC) END AS kept_rank
FROM (
    SELECT kind, {{columns}},
        max(event_id) OVER slot AS last_id,
        max(CASE WHEN kind = '{RECORDED}' THEN event_id END) OVER slot AS last_recorded_id,
        coalesce(max(CASE WHEN kind = '{FORGOTTEN}' THEN event_id END) OVER slot, 0)
            AS forgot_id
    FROM {EVENTS} {{where}}
    WINDOW slot AS (PARTITION BY namespace, key, sequence)
)
"""

# old_bytes: what gc would free (neither current nor an earlier version).
SUMMARY = f"""
SELECT namespace,
    count(*) FILTER (WHERE is_current) AS steps,
    count(DISTINCT key) FILTER (WHERE is_current) AS keys,
    coalesce(sum(size_bytes) FILTER (WHERE is_current), 0) AS size_bytes,
    coalesce(sum(size_bytes) FILTER (WHERE kind = '{RECORDED}' AND NOT is_current
                                     AND coalesce(kept_rank > $keep, true)), 0)
        AS old_bytes,
    max(occurred_at_us) FILTER (WHERE kind = '{RECORDED}') AS last_us
FROM (
    SELECT *, kind = '{RECORDED}' AND event_id = last_id AS is_current
    FROM ({SLOTS.format(columns="namespace, key, sequence, event_id, size_bytes, "
                                "epoch_us(occurred_at) AS occurred_at_us", where="")})
)
GROUP BY namespace
ORDER BY namespace
"""

# Every recorded event of one namespace in append order; `status` says which are
# current, which are earlier versions still kept (and replayable), which a later record
# superseded (gc drops them), and which `forget` dropped.
HISTORY = f"""
SELECT * EXCLUDE (kind, last_id, last_recorded_id, forgot_id, kept_rank),
    CASE WHEN event_id = last_id THEN 'current'
         WHEN kept_rank <= $keep THEN 'earlier'
         WHEN event_id < last_recorded_id THEN 'superseded'
         ELSE 'forgotten' END AS status
FROM ({SLOTS.format(columns="{columns}", where="WHERE namespace = $namespace")})
WHERE kind = '{RECORDED}'
ORDER BY event_id
"""


def summary(con: Any, keep: int) -> list[tuple[Any, ...]]:
    """(namespace, steps, keys, size_bytes, old_bytes, last_us) per namespace."""
    return con.execute(SUMMARY, {"keep": keep}).fetchall()


def history(con: Any, namespace: str, values: bool, keep: int) -> Any:
    """The recorded events of ``namespace`` with their status, as a DataFrame."""
    columns = RECORD_SELECT
    if not values:
        columns = columns.replace(
            "result_json, result_blob",
            "NULL::VARCHAR AS result_json, NULL::BLOB AS result_blob",
        )
    return con.execute(HISTORY.format(columns=columns),
                       {"namespace": namespace, "keep": keep}).df()
