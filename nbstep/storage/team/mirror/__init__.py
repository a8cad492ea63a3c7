"""The local DuckDB mirror of a team store: the namespaces this machine touched.

``.nbstep/team/<server>/steps.duckdb`` holds their events (every column of the
server's, values included) and, per namespace, the cursor of the last sync: the
server's snapshot then (``pg_current_snapshot()``) and the namespace's gc
generation. A sync asks only for rows committed since that snapshot (see
``sql.SINCE``); a namespace gc changed is fetched again whole. ``step.inspect()``,
``nbstep ls`` and your own SQL read this file, so they work while the server is down.

The file is shared by this machine's processes the way a local store's mirror is
(:class:`~nbstep.storage.local.mirror.attachment.Attachment`: attached only while
in use, taking turns). This folder and the local mirror's are the only places that
import DuckDB.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbstep.core.record import Record
from nbstep.storage.local.mirror.attachment import Attachment, DatabaseUnreadable

from . import tables


class TeamMirror:
    """``steps.duckdb`` of one team store on this machine."""

    def __init__(self, folder: Path, *, busy_timeout: float, linger: float) -> None:
        self.folder = folder
        self.db_path = folder / tables.DB_NAME
        self._guard = threading.RLock()
        self.attachment = Attachment(folder, linger=linger, busy_timeout=busy_timeout,
                                     on_attach=self._on_attach,
                                     before_detach=lambda con: None,
                                     on_reset=lambda forked: None)

    def _on_attach(self, con: Any) -> None:
        import duckdb

        try:
            if tables.version(con) != tables.MIRROR_VERSION:
                tables.create(con, self.db_path)  # derived data: fetched again
        except duckdb.Error as e:
            raise DatabaseUnreadable(self.db_path, e) from e

    @contextmanager
    def using(self) -> Iterator[Any]:
        with self._guard:
            try:
                with self.attachment.use() as con:
                    yield con
            except DatabaseUnreadable:
                # A cache: set the unreadable file aside and start it again empty.
                self.attachment.release()
                for path in (self.db_path, self.db_path.with_name(self.db_path.name + ".wal")):
                    if path.exists():
                        path.replace(path.with_name(path.name + ".unreadable"))
                with self.attachment.use() as con:
                    yield con

    # -- syncing -------------------------------------------------------------------------

    def cursors(self, namespaces: list[str]) -> dict[str, tuple[int, str]]:
        with self.using() as con:
            return tables.cursors(con, namespaces)

    def cursors_all(self) -> dict[str, tuple[int, str, int]]:
        """Every mirrored namespace: (generation, snapshot, synced at, µs since 1970)."""
        with self.using() as con:
            return tables.cursors_all(con)

    def apply(self, updates: list[tables.Update]) -> None:
        with self.using() as con:
            tables.apply(con, self.db_path, updates)

    def forget_cursors(self) -> None:
        """Fetch every namespace again whole on its next sync (``nbstep verify --repair``)."""
        with self.using() as con:
            tables.create(con, self.db_path)

    # -- questions -------------------------------------------------------------------------

    def history(self, namespace: str, values: bool, keep: int) -> Any:
        with self.using() as con:
            return tables.history(con, namespace, values, keep)

    def summary(self, keep: int) -> list[tuple[Any, ...]]:
        with self.using() as con:
            return tables.summary(con, keep)

    def versions(self, namespace: str, key: str, sequence: int, keep: int) -> list[Record]:
        with self.using() as con:
            return tables.versions(con, namespace, key, sequence, keep)

    def current(self, namespace: str) -> list[Record]:
        with self.using() as con:
            return tables.current(con, namespace)

    def lookup(self, namespace: str, key: str, sequence: int) -> Record | None:
        with self.using() as con:
            return tables.lookup(con, namespace, key, sequence)

    def value(self, event_id: int) -> tuple[str | None, bytes | None] | None:
        with self.using() as con:
            return tables.value(con, event_id)

    def namespaces(self) -> list[str]:
        with self.using() as con:
            return tables.namespaces(con)

    def release(self) -> None:
        self.attachment.release()

    def close(self) -> None:
        self.attachment.close()
