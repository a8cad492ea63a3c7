"""Looking after a local store: listing, history, gc and checks (the StoreAdmin side)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from nbstep.core.record import FORGOTTEN, RECORDED, Record
from nbstep.errors import StepReplayError
from nbstep.storage.base import CheckReport, GcReport, NamespaceSummary, Problem, StoreAdmin, Usage
from nbstep.storage.objects import ObjectFiles

from .attachment import Attachment
from .schema import ALIAS, DB_NAME, EVENTS, META, RECORD_SELECT, transaction

_SUMMARY = f"""
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
_HISTORY = f"""
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

_CHECKED = f"""
SELECT {RECORD_SELECT},
    event_id = max(event_id) OVER (PARTITION BY namespace, key, sequence) AS is_current
FROM {EVENTS}
WHERE kind = '{RECORDED}'
ORDER BY event_id
"""

# Superseded events, and forgotten slots' last events (the marks that forgot them).
_STALE = f"""
SELECT event_id FROM {EVENTS}
QUALIFY row_number() OVER (PARTITION BY namespace, key, sequence ORDER BY event_id DESC) > 1
UNION ALL
SELECT event_id FROM {EVENTS} e WHERE kind = '{FORGOTTEN}'
AND event_id = (SELECT max(event_id) FROM {EVENTS} x
                WHERE x.namespace = e.namespace AND x.key = e.key AND x.sequence = e.sequence)
"""


class DuckDBAdmin(StoreAdmin):
    """The StoreAdmin side of :class:`.store.DuckDBStore`, which inherits it."""

    root: Path
    db_path: Path
    attachment: Attachment
    objects: ObjectFiles
    index: dict[str, dict[tuple[str, int], Record]]
    known: tuple[int, str] | None
    max_event_id: int

    def fold(self, con: Any) -> None:
        raise NotImplementedError

    def validate_index(self, con: Any) -> None:
        raise NotImplementedError

    def read(self, record: Record) -> Any:
        raise NotImplementedError

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """A read-only query over the complete table (the journal folded first)."""
        with self.attachment.use() as con:
            self.fold(con)
            return con.execute(sql, params or []).fetchall()

    def namespaces(self) -> list[str]:
        rows = self._rows(f"SELECT DISTINCT namespace FROM {EVENTS} ORDER BY namespace")
        return [row[0] for row in rows]

    def summary(self) -> list[NamespaceSummary]:
        return [
            NamespaceSummary(namespace, int(steps), int(keys), int(size), int(old),
                             None if last is None else int(last))
            for namespace, steps, keys, size, old, last in self._rows(_SUMMARY)
        ]

    def history(self, namespace: str, *, values: bool = True) -> Any:
        columns = RECORD_SELECT
        if not values:
            columns = columns.replace(
                "result_json, result_blob",
                "NULL::VARCHAR AS result_json, NULL::BLOB AS result_blob",
            )
        with self.attachment.use() as con:
            self.fold(con)
            return con.execute(_HISTORY.format(columns=columns), [namespace]).df()

    def gc(self, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> GcReport:
        report = GcReport()
        with self.attachment.use() as con:
            self.fold(con)
            stale_ids = sorted({row[0] for row in con.execute(_STALE).fetchall()})
            report.events_dropped = len(stale_ids)
            live = {
                row[0]
                for row in con.execute(
                    f"SELECT DISTINCT object_sha256 FROM {EVENTS} WHERE "
                    "object_sha256 IS NOT NULL AND NOT list_contains(?::BIGINT[], event_id)",
                    [stale_ids],
                ).fetchall()
            }
            if stale_ids and not dry_run:
                with transaction(con, "drop superseded records", self.db_path):
                    con.execute(
                        f"DELETE FROM {EVENTS} WHERE event_id IN (SELECT unnest(?::BIGINT[]))",
                        [stale_ids],
                    )
                    epoch = int(self.known[1] if self.known else 0) + 1
                    con.execute(f"UPDATE {META} SET value = ? WHERE name = 'gc_epoch'",
                                [str(epoch)])
                    # Never hand out a deleted event's id again: a step computing since
                    # before this gc compares ids to tell whether its slot changed.
                    con.execute(f"INSERT OR REPLACE INTO {META} VALUES ('event_id_floor', ?)",
                                [str(self.max_event_id)])
                self.index.clear()
                self.validate_index(con)
            # Deleting files while attached: a writer reuses an existing file only after
            # checking, while attached, that it is still there.
            swept = self.objects.sweep(live, time.time() - grace_seconds, dry_run=dry_run)
            for name, count in swept.items():
                setattr(report, name, count)
            if not dry_run and stale_ids:
                con.execute(f"CHECKPOINT {ALIAS}")
        return report

    def check(self, *, decode: bool = False) -> CheckReport:
        report = CheckReport()
        by_object: dict[str, list[tuple[Record, bool]]] = {}
        for *row, is_current in self._rows(_CHECKED):
            record = Record.from_row(row)
            report.records += 1
            if record.object_sha256 is None:
                report.inline += 1
                problem = _decode_problem(self, record)
                if problem:
                    report.problems.append(Problem(record, bool(is_current), problem))
            else:
                by_object.setdefault(record.object_sha256, []).append((record, bool(is_current)))
        for sha256, users in by_object.items():
            report.object_files += 1
            problem = self.objects.verify(sha256, users[0][0].size_bytes)
            if problem is None:
                report.object_bytes += users[0][0].size_bytes
                if decode:
                    for record, current in users:
                        decoded = _decode_problem(self, record)
                        if decoded:
                            report.problems.append(Problem(record, current, decoded))
                continue
            report.problems.extend(Problem(record, current, problem) for record, current in users)
        report.unreferenced = sum(1 for p in self.objects.files() if p.name not in by_object)
        return report

    def usage(self) -> Usage:
        total = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    pass
        try:
            database: int | None = (self.root / DB_NAME).stat().st_size
        except FileNotFoundError:
            database = None
        return Usage(total, database, DB_NAME)


def _decode_problem(store: DuckDBAdmin, record: Record) -> str | None:
    try:
        store.read(record)
    except StepReplayError as e:
        cause = e.__cause__ or e
        return f"the value does not decode as {record.codec} ({type(cause).__name__}: {cause})"
    return None
