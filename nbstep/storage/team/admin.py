"""Looking after a team store: listing, history, gc, checks and repair.

Listing and checks ask the server; history is the local mirror, synced first, so
``step.inspect()`` works while the server is down (as of the last sync, with a
warning). gc needs the admin role: it deletes rows, and it takes the advisory lock
every writer of a value file shares, so no record is about to point at a file it
removes, on any machine.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from nbstep.core.record import Record
from nbstep.errors import NbstepError, StoreOfflineWarning
from nbstep.storage.base import (
    CheckReport,
    GcReport,
    MirrorLag,
    NamespaceSummary,
    RepairReport,
    SharedAdmin,
    SharedStatus,
    StoreAdmin,
    Usage,
    check_grace,
    check_move,
    moved_from,
    target_has_records,
)
from nbstep.storage.reports import decode_problem

from . import faults, schema, sql


class TeamAdmin(StoreAdmin, SharedAdmin):
    """The StoreAdmin side of :class:`.store.TeamStore`, which inherits it."""

    objects: Any
    mirror: Any
    location: str
    keeps_objects: bool
    trust: Any
    server: Any
    journal: Any
    keep_versions: int

    def _online(self, doing: str, work: Any, retry: bool = True) -> Any:
        raise NotImplementedError

    def sync(self, namespaces: list[str]) -> None:
        raise NotImplementedError

    def read(self, record: Record) -> Any:
        raise NotImplementedError

    def me(self) -> str | None:
        raise NotImplementedError

    # -- listing ---------------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        try:
            return self._online("list namespaces", lambda con: [
                row[0] for row in con.execute(sql.NAMESPACE_LIST).fetchall()])
        except faults.ServerUnreachable as e:
            self._stale(e, "the namespaces this machine has mirrored")
            return self.mirror.namespaces()

    def summary(self) -> list[NamespaceSummary]:
        try:
            rows = self._online("summarize the store",
                                lambda con: con.execute(sql.SUMMARY, {"keep": self.keep_versions}
                                                       ).fetchall())
        except faults.ServerUnreachable as e:
            self._stale(e, "the namespaces this machine has mirrored")
            rows = self.mirror.summary(self.keep_versions)
        return [NamespaceSummary(namespace, int(steps), int(keys), int(size), int(old),
                                 None if last is None else int(last))
                for namespace, steps, keys, size, old, last in rows]

    def history(self, namespace: str, *, values: bool = True) -> Any:
        try:
            self.sync([namespace])
        except faults.ServerUnreachable as e:
            self._stale(e, f"`{namespace}` as of the mirror's last sync")
        return self.mirror.history(namespace, values, self.keep_versions)

    def _stale(self, error: NbstepError, what: str) -> None:
        warnings.warn(StoreOfflineWarning(f"nbstep: {error} Showing {what}."), stacklevel=4)

    # -- moving and removing namespaces ---------------------------------------------------

    def move(self, source: str, target: str) -> int:
        """Every current record of ``source``, with its kept earlier versions, to
        ``target``, in one transaction: a copy of each in ``target`` (oldest first, so
        they stay versions of the slot in order; its identity for the new namespace,
        the event it came from in ``details.moved_from``), and a ``forgotten`` event
        for each current record in ``source``. Inserts only, so a writer may move; the
        copies are recorded by the mover (``recorded_by``), whose pickles others load
        only if they trust them. A killed mover's transaction is rolled back by the
        server: nothing moved."""
        import json

        from nbstep.hashing import step_identity

        check_move(source, target)
        waiting = [p for p in self.journal.pending()
                   if p.record.namespace in (source, target)]
        if waiting:
            raise NbstepError(
                f"cannot move `{source}` to `{target}`: {len(waiting)} of their records are "
                "still in this machine's offline journal. Run `nbstep team push` when the "
                "server is back, then move.")

        def work(con: Any) -> int:
            with con.transaction():
                for name in sorted((source, target)):
                    con.execute(sql.MOVE_LOCK, [name])
                now = sql.current_of(con, target)
                foreign = [r for r in now if moved_from(r) != source]
                if foreign:
                    raise target_has_records(source, target, len(foreign))
                done = sql.moved_here(con, source, target)
                sql.register(con, target)
                kept = sql.kept_of(con, source, self.keep_versions)
                # The slots' current records: the newest kept record of each slot.
                current = set({(r.key, r.sequence): r.event_id for r in kept}.values())
                moved = current | {int(r.details["moved_from"]["event_id"]) for r in now}
                for record in kept:
                    if record.event_id in done:
                        continue
                    details = dict(record.details or {})
                    details["moved_from"] = {"namespace": source, "event_id": record.event_id}
                    con.execute(sql.MOVE_COPY, {
                        "target": target, "event_id": record.event_id,
                        "identity": step_identity(target, record.key, record.sequence,
                                                  record.input_hash),
                        "details": json.dumps(details, sort_keys=True)})
                if current:
                    sql.forget(con, source, None, "moved", os.getpid(), self._host(),
                               only=current)
                return len(moved)

        count = self._online("move a namespace", work, retry=False)
        self._after_change([source, target])
        return count

    def remove(self, namespace: str) -> int:
        """Delete a namespace's events (the admin role: it deletes rows, as gc does)."""
        def work(con: Any) -> int:
            allowed = con.execute("SELECT has_table_privilege(%s, 'DELETE')",
                                  [schema.EVENTS]).fetchone()[0]
            if not allowed:
                raise faults.not_permitted(self.server.address, "remove a namespace",
                                           f"no DELETE privilege on {schema.EVENTS}")
            with con.transaction():
                count = len(sql.current_of(con, namespace))
                con.execute(f"DELETE FROM {schema.EVENTS} WHERE namespace = %s", [namespace])
                con.execute(f"INSERT INTO {schema.NAMESPACES} (namespace) VALUES (%s) "
                            "ON CONFLICT DO NOTHING", [namespace])
                con.execute(f"UPDATE {schema.NAMESPACES} SET generation = generation + 1 "
                            "WHERE namespace = %s", [namespace])
                return count

        count = self._online("remove a namespace", work, retry=False)
        for item in list(self.journal.of(namespace)):
            self.journal.remove(item)
        self._after_change([namespace])
        return count

    def _host(self) -> str:
        import socket

        return socket.gethostname()

    def _after_change(self, namespaces: list[str]) -> None:
        raise NotImplementedError

    # -- gc ----------------------------------------------------------------------------------

    def gc(self, *, dry_run: bool = False, grace_seconds: float = 3600.0) -> GcReport:
        check_grace(grace_seconds)
        report = GcReport()

        def collect(con: Any) -> dict[str, int]:
            allowed = con.execute("SELECT has_table_privilege(%s, 'DELETE')",
                                  [schema.EVENTS]).fetchone()[0]
            if not allowed and not dry_run:
                raise faults.not_permitted(self.server.address, "run gc",
                                           f"no DELETE privilege on {schema.EVENTS}")
            # gc holds GC_LOCK alone while it decides which value files nothing
            # references; a dry run removes nothing and shares it with the writers of
            # value files, never stalling one.
            lock, unlock = (("pg_advisory_lock_shared", "pg_advisory_unlock_shared") if dry_run
                            else ("pg_advisory_lock", "pg_advisory_unlock"))
            con.execute(f"SELECT {lock}(%s)", [schema.GC_LOCK])
            try:
                with con.transaction():
                    stale = con.execute(sql.STALE, {"keep": self.keep_versions}).fetchall()
                    report.events_dropped = len(stale)
                    if stale and not dry_run:
                        ids = [row[0] for row in stale]
                        touched = sorted({row[1] for row in stale})
                        con.execute(f"DELETE FROM {schema.EVENTS} WHERE event_id = ANY(%s)",
                                    [ids])
                        con.execute(f"INSERT INTO {schema.NAMESPACES} (namespace) "
                                    "SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                                    [touched])
                        con.execute(f"UPDATE {schema.NAMESPACES} SET generation = "
                                    "generation + 1 WHERE namespace = ANY(%s)", [touched])
                    if dry_run:
                        live = self._live_after(con, {row[0] for row in stale})
                    else:
                        live = {row[0] for row in con.execute(sql.LIVE_OBJECTS).fetchall()}
                if not self.keeps_objects:
                    return {}
                return self.objects.sweep(live, time.time() - grace_seconds, dry_run=dry_run)
            finally:
                if not con.broken:
                    con.execute(f"SELECT {unlock}(%s)", [schema.GC_LOCK])

        swept = self._online("run gc", collect, retry=False)
        for name, count in swept.items():
            setattr(report, name, count)
        return report

    @staticmethod
    def _live_after(con: Any, dropped: set[int]) -> set[str]:
        rows = con.execute(f"SELECT event_id, object_sha256 FROM {schema.EVENTS} "
                           "WHERE object_sha256 IS NOT NULL").fetchall()
        return {sha for event_id, sha in rows if event_id not in dropped}

    # -- checks --------------------------------------------------------------------------------

    def check(self, *, decode: bool = False) -> CheckReport:
        report = CheckReport()
        rows = self._online("check the store",
                            lambda con: con.execute(sql.RECORDED_EVENTS).fetchall())
        referenced = report.check_values(
            ((Record.from_row(row[:-1]), bool(row[-1])) for row in rows), decode=decode,
            decode_problem=self._decode_problem,
            verify=(self.objects.verify if self.keeps_objects
                    else lambda _sha, _size: "this machine has no `objects` setting"))
        if self.keeps_objects:
            report.unreferenced = sum(1 for name, _size, _mtime in self.objects.listing()
                                      if name not in referenced)
        return report

    def _decode_problem(self, record: Record) -> str | None:
        if not self.trust.allows(record, self.me()):
            return None  # not decoded here: loading it would run its writer's code
        return decode_problem(self.read, record)

    def repair(self) -> RepairReport:
        report = RepairReport()
        check = self.check()
        lost: set[int] = set()
        for problem in check.problems:
            sha = problem.record.object_sha256
            if sha and self.keeps_objects and self.objects.set_aside(sha):
                report.objects_quarantined += 1
            if problem.current:
                lost.add(problem.record.event_id)
        if lost:
            report.records_forgotten = self._online("forget lost records", lambda con: sql.forget(
                con, None, None, "repair", os.getpid(), "repair", only=lost))
        self.mirror.forget_cursors()
        report.table_rebuilt = True
        return report

    def usage(self) -> Usage:
        database = int(self._online("measure the store", lambda con: con.execute(
            "SELECT pg_total_relation_size(%s) + pg_total_relation_size(%s)",
            [schema.EVENTS, schema.NAMESPACES]).fetchone()[0]))
        objects = (sum(size for _name, size, _mtime in self.objects.listing())
                   if self.keeps_objects else 0)
        return Usage(database + objects, database, "server tables")

    # -- the team ------------------------------------------------------------------------------

    def init(self, *, roles: bool = True) -> int:
        return self._online("set up the team store's tables and roles",
                            lambda con: schema.create(con, roles=roles))

    def status(self) -> SharedStatus:
        pending = self.journal.pending()
        status = SharedStatus(
            location=self.location, reachable=False, problem=None, user=None,
            schema_version=None, objects=self.objects.location,
            mirror=str(self.mirror.db_path), pending=len(pending),
            oldest_pending_us=min((p.record.occurred_at_us for p in pending), default=None))
        try:
            cursors = self.mirror.cursors_all()
        except NbstepError as e:
            cursors = {}
            status.problem = f"the local mirror cannot be read: {e}"

        def ask(con: Any) -> list[MirrorLag]:
            lag = []
            for namespace, (_generation, snapshot, synced_us) in sorted(cursors.items()):
                behind = con.execute(f"SELECT count(*) FROM ({sql.SINCE}) s",
                                     [namespace, snapshot, snapshot]).fetchone()[0]
                lag.append(MirrorLag(namespace, synced_us, int(behind)))
            return lag

        self.server.retry_now()
        try:
            status.lag = self._online("read the mirror's lag", ask)
        except NbstepError as e:
            status.problem = str(e)
            status.lag = [MirrorLag(ns, synced, None)
                          for ns, (_g, _s, synced) in sorted(cursors.items())]
            return status
        status.reachable = True
        status.user = self.server.user
        status.schema_version = self.server.version
        return status
