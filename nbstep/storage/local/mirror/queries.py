"""The questions asked of the mirror: one line per namespace, and one namespace's history."""

from __future__ import annotations

from typing import Any

from nbstep.core.record import RECORDED

from .schema import EVENTS, RECORD_SELECT

SUMMARY = f"""
SELECT namespace,
    count(*) FILTER (WHERE is_current) AS steps,
    count(DISTINCT key) FILTER (WHERE is_current) AS keys,
    coalesce(sum(size_bytes) FILTER (WHERE is_current), 0) AS size_bytes,
    coalesce(sum(size_bytes) FILTER (WHERE kind = '{RECORDED}' AND NOT is_current), 0)
        AS old_bytes,
    max(occurred_at_us) FILTER (WHERE kind = '{RECORDED}') AS last_us
FROM (
    SELECT namespace, key, kind, size_bytes, epoch_us(occurred_at) AS occurred_at_us,
        kind = '{RECORDED}'
            AND event_id = max(event_id) OVER (PARTITION BY namespace, key, sequence)
            AS is_current
    FROM {EVENTS}
)
GROUP BY namespace
ORDER BY namespace
"""

# Every recorded event of one namespace in append order; `status` says which are
# current, which a later record superseded, and which `forget` dropped.
HISTORY = f"""
SELECT * EXCLUDE (kind, last_id, last_recorded_id),
    CASE WHEN event_id = last_id THEN 'current'
         WHEN event_id < last_recorded_id THEN 'superseded'
         ELSE 'forgotten' END AS status
FROM (
    SELECT kind, {{columns}},
        max(event_id) OVER slot AS last_id,
        max(CASE WHEN kind = '{RECORDED}' THEN event_id END) OVER slot AS last_recorded_id
    FROM {EVENTS} WHERE namespace = ?
    WINDOW slot AS (PARTITION BY key, sequence)
)
WHERE kind = '{RECORDED}'
ORDER BY event_id
"""


def summary(con: Any) -> list[tuple[Any, ...]]:
    """(namespace, steps, keys, size_bytes, old_bytes, last_us) per namespace."""
    return con.execute(SUMMARY).fetchall()


def history(con: Any, namespace: str, values: bool) -> Any:
    """The recorded events of ``namespace`` with their status, as a DataFrame."""
    columns = RECORD_SELECT
    if not values:
        columns = columns.replace(
            "result_json, result_blob",
            "NULL::VARCHAR AS result_json, NULL::BLOB AS result_blob",
        )
    return con.execute(HISTORY.format(columns=columns), [namespace]).df()
