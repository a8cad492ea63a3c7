"""``step.inspect()``: a namespace's records as a pandas DataFrame."""

from __future__ import annotations

from typing import Any

from .store import RECORDED, Record, Store

COLUMNS = [
    "event_id", "namespace", "key", "sequence", "deterministic_inputs_hash", "result",
    "occurred_at", "current", "status", "duration_s", "size_bytes", "codec", "stored",
    "identity", "reason",
]

# Every record of one namespace in append order; `status` says which are current,
# which a later record superseded, and which `forget` dropped.
_SQL = f"""
SELECT * EXCLUDE (kind, last_id, last_recorded_id),
    CASE WHEN event_id = last_id THEN 'current'
         WHEN event_id < last_recorded_id THEN 'superseded'
         ELSE 'forgotten' END AS status
FROM (
    SELECT event_id, kind, namespace, key, sequence, identity, deterministic_inputs_hash,
        codec, {{values}}, object_sha256, size_bytes, duration_s, occurred_at,
        epoch_us(occurred_at) AS occurred_at_us, reason, details, checksum,
        max(event_id) OVER slot AS last_id,
        max(CASE WHEN kind = '{RECORDED}' THEN event_id END) OVER slot AS last_recorded_id
    FROM {{{{events}}}} WHERE namespace = ?
    WINDOW slot AS (PARTITION BY key, sequence)
)
WHERE kind = '{RECORDED}'
ORDER BY event_id
"""


def records_frame(store: Store, namespace: str, *, results: bool = True) -> Any:
    import pandas as pd

    values = "result_json, result_blob" if results else "NULL AS result_json, NULL AS result_blob"
    frame = store.query_df(_SQL.format(values=values), [namespace])
    if results:
        # A %%step record's value is the cell's container; show its variables instead.
        from .api import runtime
        from .cellstep import readable_value

        ns = runtime().user_ns
        frame["result"] = [
            readable_value(store.load_value(_record(namespace, row)), ns)
            for row in frame.itertuples(index=False)
        ]
    else:
        frame["result"] = pd.Series([None] * len(frame), dtype=object)
    frame["current"] = frame["status"] == "current"
    frame["stored"] = frame["object_sha256"].isna().map({True: "inline", False: "object"})
    if len(frame):
        frame["occurred_at"] = frame["occurred_at"].dt.tz_convert("UTC")
    else:
        frame["occurred_at"] = pd.Series([], dtype="datetime64[us, UTC]")
    return frame[COLUMNS].reset_index(drop=True)


def _record(namespace: str, row: Any) -> Record:
    return Record(
        event_id=row.event_id, namespace=namespace, key=row.key, sequence=row.sequence,
        identity=row.identity, input_hash=row.deterministic_inputs_hash, codec=row.codec,
        result_json=None if _missing(row.result_json) else row.result_json,
        result_blob=None if _missing(row.result_blob) else bytes(row.result_blob),
        object_sha256=None if _missing(row.object_sha256) else row.object_sha256,
        size_bytes=int(row.size_bytes), duration_s=row.duration_s,
        occurred_at_us=int(row.occurred_at_us), reason=row.reason, details=None,
        checksum=None if _missing(row.checksum) else row.checksum,
    )


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or value is pd.NA or (isinstance(value, float) and value != value)
