"""The questions asked of a mirror: one line per namespace, and one namespace's history.

Both DuckDB mirrors (this store's ``steps.duckdb`` and the team store's local copy)
ask them of an ``events`` table of the same columns; they differ only in what orders
a slot's events (here the event id, there the server's per-slot ``version``) and in
where ``recorded_by`` comes from. :class:`MirrorQueries` builds both.
"""

from __future__ import annotations

from typing import Any

from nbstep.core.record import FORGOTTEN, RECORDED

from .schema import EVENTS, RECORD_SELECT


class MirrorQueries:
    """``summary`` and ``history`` over a mirror whose slots are ordered by ``order``."""

    def __init__(self, order: str, record_select: str) -> None:
        self.record_select = record_select
        # Per event: `kept_rank`, its place among its slot's records after the slot's
        # last `forgotten` event, newest first (1: the current record,
        # 2..keep_versions: its earlier versions, replayable and kept by gc;
        # nbstep/storage/versions.py).
        slots = f"""
SELECT *,
    CASE WHEN kind = '{RECORDED}' AND slot_order > forgot_order THEN row_number() OVER (
        PARTITION BY namespace, key, sequence,
            kind = '{RECORDED}' AND slot_order > forgot_order
        ORDER BY slot_order DESC) END AS kept_rank
FROM (
    SELECT kind, {order} AS slot_order, {{columns}},
        max({order}) OVER slot AS last_order,
        max(CASE WHEN kind = '{RECORDED}' THEN {order} END) OVER slot AS last_recorded_order,
        coalesce(max(CASE WHEN kind = '{FORGOTTEN}' THEN {order} END) OVER slot, 0)
            AS forgot_order
    FROM {EVENTS} {{where}}
    WINDOW slot AS (PARTITION BY namespace, key, sequence)
)
"""
        # old_bytes: what gc would free (neither current nor an earlier version).
        self.summary_sql = f"""
SELECT namespace,
    count(*) FILTER (WHERE is_current) AS steps,
    count(DISTINCT key) FILTER (WHERE is_current) AS keys,
    coalesce(sum(size_bytes) FILTER (WHERE is_current), 0) AS size_bytes,
    coalesce(sum(size_bytes) FILTER (WHERE kind = '{RECORDED}' AND NOT is_current
                                     AND coalesce(kept_rank > $keep, true)), 0)
        AS old_bytes,
    max(epoch_us(occurred_at)) FILTER (WHERE kind = '{RECORDED}') AS last_us
FROM (
    SELECT *, kind = '{RECORDED}' AND slot_order = last_order AS is_current
    FROM ({slots.format(columns="namespace, key, sequence, size_bytes, occurred_at",
                        where="")})
)
GROUP BY namespace
ORDER BY namespace
"""
        # Every recorded event of one namespace in append order; `status` says which
        # are current, which are earlier versions still kept (and replayable), which a
        # later record superseded (gc drops them), and which `forget` dropped.
        self.history_sql = f"""
SELECT * EXCLUDE (kind, slot_order, last_order, last_recorded_order, forgot_order,
                  kept_rank),
    CASE WHEN slot_order = last_order THEN 'current'
         WHEN kept_rank <= $keep THEN 'earlier'
         WHEN slot_order < last_recorded_order THEN 'superseded'
         ELSE 'forgotten' END AS status
FROM ({slots.format(columns="{columns}", where="WHERE namespace = $namespace")})
WHERE kind = '{RECORDED}'
ORDER BY event_id
"""

    def summary(self, con: Any, keep: int) -> list[tuple[Any, ...]]:
        """(namespace, steps, keys, size_bytes, old_bytes, last_us) per namespace."""
        return con.execute(self.summary_sql, {"keep": keep}).fetchall()

    def history(self, con: Any, namespace: str, values: bool, keep: int) -> Any:
        """The recorded events of ``namespace`` with their status, as a DataFrame."""
        columns = self.record_select
        if not values:
            columns = columns.replace(
                "result_json, result_blob",
                "NULL::VARCHAR AS result_json, NULL::BLOB AS result_blob",
            )
        return con.execute(self.history_sql.format(columns=columns),
                           {"namespace": namespace, "keep": keep}).df()


LOCAL = MirrorQueries("event_id", RECORD_SELECT)
summary = LOCAL.summary
history = LOCAL.history
