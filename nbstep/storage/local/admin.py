"""Looking after a local store: listing, history, gc, checks and repair.

Listing and history are questions to the DuckDB mirror (brought up to date first);
gc and checks read the logs themselves, so they work even when the mirror cannot.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbstep.core.record import RECORDED, Record
from nbstep.errors import StoreDamagedWarning
from nbstep.storage.base import StoreAdmin, check_move, moved_from, target_has_records
from nbstep.storage.objects import ObjectFiles

from . import events, frames
from .layout import Layout
from .mirror import Mirror
from .namespace_log import NamespaceLog, log_name
from .quarantine import Quarantine

if TYPE_CHECKING:
    from nbstep.storage.reports import (
        CheckReport,
        GcReport,
        NamespaceSummary,
        RepairReport,
        Usage,
    )

# The report classes and the mirror's queries are imported where they are used: this
# module is part of every LocalStore, and a process that only runs steps needs neither.


class LocalAdmin(StoreAdmin):
    """The StoreAdmin side of :class:`.store.LocalStore`, which inherits it."""

    root: Path
    layout: Layout
    objects: ObjectFiles
    mirror: Mirror
    quarantine: Quarantine
    keep_versions: int

    def log(self, namespace: str) -> NamespaceLog:
        raise NotImplementedError

    def read(self, record: Record) -> Any:
        raise NotImplementedError

    # -- listing ----------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return sorted(namespace for namespace, _path in self._log_files())

    def _log_files(self) -> Iterator[tuple[str, Path]]:
        """(namespace, log path) of every log, from the logs' headers (or, where a
        header is damaged, the first event that names its namespace)."""
        for path in sorted(self.layout.logs.glob("*.log")):
            try:
                with open(path, "rb") as f:
                    head = f.read(1 << 16)
            except FileNotFoundError:
                continue
            found = [item.event for item in frames.scan(head) if isinstance(item, frames.Frame)]
            named = next((event["namespace"] for event in found if "namespace" in event), None)
            # A log whose events were all removed (remove(), a move) is no namespace.
            if named is not None and (len(head) == 1 << 16
                                      or any("event_id" in event for event in found)):
                yield named, path

    def summary(self) -> list[NamespaceSummary]:
        from nbstep.storage.reports import NamespaceSummary

        from .mirror import queries as mirror_queries

        with self.mirror.using() as con:
            rows = mirror_queries.summary(con, self.keep_versions)
        return [NamespaceSummary(namespace, int(steps), int(keys), int(size), int(old),
                                 None if last is None else int(last))
                for namespace, steps, keys, size, old, last in rows]

    def history(self, namespace: str, *, values: bool = True) -> Any:
        from .mirror import queries as mirror_queries

        with self.mirror.using({f"{log_name(namespace)}.log"}) as con:
            return mirror_queries.history(con, namespace, values, self.keep_versions)

    # -- moving and removing namespaces -------------------------------------------------

    def move(self, source: str, target: str) -> int:
        """Every current record of ``source``, with its kept earlier versions, to
        ``target`` (docs/record-format.md, "Moving a namespace"). Copies first (one
        append to the target's log, in the source's log order, each copy naming the
        event it came from in ``details.moved_from``), then the source's records are
        forgotten. A move cut short (kill -9 between the two) leaves both, and running
        it again finishes it: copies already made count as done, the rest are copied,
        then the source is forgotten."""
        from nbstep.hashing import step_identity

        check_move(source, target)
        src, dst = self.log(source), self.log(target)
        wanted = src.kept_frames(self.keep_versions)
        # The slots' current records: the last kept frame of each slot.
        current = set({events.slot(f.event): f.event["event_id"] for f in wanted}.values())

        def build(now: list[Record], recorded: list[dict[str, Any]]
                  ) -> list[tuple[dict[str, Any], bytes | None]]:
            foreign = [r for r in now if moved_from(r) != source]
            if foreign:
                raise target_has_records(source, target, len(foreign))
            # A move run again counts what an earlier run moved as moved.
            current.update(int(r.details["moved_from"]["event_id"]) for r in now)
            done = {int(found["event_id"]) for found in
                    ((event.get("details") or {}).get("moved_from") for event in recorded)
                    if isinstance(found, dict) and found.get("namespace") == source}
            copies = []
            for frame in wanted:
                event = dict(frame.event)
                if event["event_id"] in done:
                    continue
                details = dict(event.get("details") or {})
                details["moved_from"] = {"namespace": source, "event_id": event["event_id"]}
                event.update(namespace=target, details=details, identity=step_identity(
                    target, event["key"], event["sequence"],
                    event["deterministic_inputs_hash"]))
                copies.append((event, src.frame_bytes(frame) if frame.has_blob else None))
            return copies

        dst.adopt(build)  # under the target's lock: a move run twice copies nothing twice
        src.forget(None, only=current, reason="moved")
        return len(current)

    def remove(self, namespace: str) -> int:
        """Drop a namespace's events; how many current records it had."""
        if not self.log(namespace).exists():
            return 0
        return self.log(namespace).clear()

    # -- gc ---------------------------------------------------------------------------

    def gc(self, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> GcReport:
        from nbstep.storage.reports import GcReport, check_grace

        check_grace(grace_seconds)
        report = GcReport()
        # gc's own exclusive lock on value files first: no writer is between writing a
        # value file and appending its record while gc decides what is referenced. A
        # dry run removes nothing: it shares the lock with writers, never stalling one.
        with self.objects.pinned() if dry_run else self.objects.exclusive():
            live: set[str] = set()
            for namespace, _path in self._log_files():
                dropped, used = self.log(namespace).compact(dry_run=dry_run,
                                                            keep=self.keep_versions)
                report.events_dropped += dropped
                live |= used
            swept = self.objects.sweep(live, time.time() - grace_seconds, dry_run=dry_run)
        for name, count in swept.items():
            setattr(report, name, count)
        return report

    # -- checks -----------------------------------------------------------------------

    def check(self, *, decode: bool = False) -> CheckReport:
        from nbstep.storage.reports import CheckReport

        report = CheckReport()
        recorded = (pair for namespace, path in self._log_files()
                    for pair in self._recorded(namespace, path, report))
        referenced = report.check_values(recorded, decode=decode,
                                         decode_problem=self._decode_problem,
                                         verify=self.objects.verify)
        report.unreferenced = sum(1 for p in self.objects.files() if p.name not in referenced)
        return report

    def _recorded(self, namespace: str, path: Path, report: CheckReport
                  ) -> list[tuple[Record, bool]]:
        """Every recorded event of a log as a Record with its value, and whether current."""
        data = path.read_bytes()
        recorded: list[Record] = []
        latest: dict[tuple[str, int], int] = {}
        for item in frames.scan(data):
            if isinstance(item, frames.Damage):
                what = "a torn last frame" if item.torn else "damaged frames"
                report.damage.append(f"{path}: {item.end - item.offset} bytes of {what} at "
                                     f"offset {item.offset} (namespace `{namespace}`)")
                continue
            event = item.event
            if "event_id" not in event:
                continue
            latest[events.slot(event)] = event["event_id"]
            if event["kind"] == RECORDED:
                blob = data[item.blob_start:item.end] if item.has_blob else None
                recorded.append(events.to_record(namespace, event, blob))
        return [(r, latest[(r.key, r.sequence)] == r.event_id) for r in recorded]

    def _decode_problem(self, record: Record) -> str | None:
        from nbstep.storage.reports import decode_problem

        return decode_problem(self.read, record)

    def repair(self) -> RepairReport:
        from nbstep.storage.reports import RepairReport

        report = RepairReport()
        with warnings.catch_warnings(), self.objects.exclusive():
            # The damage is what is being repaired; the report counts it.
            warnings.simplefilter("ignore", StoreDamagedWarning)
            for namespace, _path in self._log_files():
                damaged = self.log(namespace).rewrite_intact()
                if damaged:
                    report.logs_rewritten += 1
                    report.damaged_bytes += damaged
            check = self.check()
            lost: dict[str, set[int]] = {}
            for problem in check.problems:
                sha = problem.record.object_sha256
                path = self.objects.path(sha) if sha else None
                if path is not None and path.is_file():
                    self.quarantine.move(path, "value file")
                    report.objects_quarantined += 1
                if problem.current:
                    lost.setdefault(problem.record.namespace, set()).add(problem.record.event_id)
            for namespace, event_ids in lost.items():
                report.records_forgotten += self.log(namespace).forget(
                    None, only=event_ids, reason="repair")
        for index in self.layout.logs.glob("*.idx"):
            index.unlink(missing_ok=True)  # derived: written again as needed
        self.mirror.rebuild()
        report.table_rebuilt = True
        return report

    def usage(self) -> Usage:
        from nbstep.storage.reports import Usage

        total = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    pass
        logs = 0
        for path in self.layout.logs.glob("*.log"):
            try:
                logs += path.stat().st_size
            except FileNotFoundError:
                pass
        return Usage(total, logs, "event logs")
