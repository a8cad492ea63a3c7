"""The DuckDB mirror of a local store's logs: the queryable ``events`` table.

Writing a step never touches it; ``step.inspect()``, ``nbstep ls`` and SQL do, and
bring it up to date first (:mod:`.sync`). Because every row comes from the logs, a
mirror that cannot be read (damaged, truncated, of another layout) is moved into
``quarantine/`` and rebuilt, with one warning. All of nbstep's SQL and its only
import of DuckDB are in this folder.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbstep.errors import StoreDamagedWarning
from nbstep.storage.local.layout import DB_NAME
from nbstep.storage.local.quarantine import Quarantine

if TYPE_CHECKING:
    from .attachment import Attachment, DatabaseUnreadable

# The modules that do the work (and DuckDB) load on the first query: a process that
# only runs steps never imports them.
__all__ = ["DB_NAME", "Mirror"]


class Mirror:
    """``steps.duckdb`` of a local store, attached only while a query runs."""

    def __init__(self, root: Path, logs: Path, quarantine: Quarantine, *,
                 busy_timeout: float, linger: float) -> None:
        self.root, self.logs, self.quarantine = root, logs, quarantine
        self.db_path = root / DB_NAME
        self._upgrading = False
        self._guard = threading.RLock()
        self._linger, self._busy_timeout = linger, busy_timeout
        self._attachment: Attachment | None = None

    @property
    def attachment(self) -> Attachment:
        if self._attachment is None:
            from .attachment import Attachment

            with self._guard:
                if self._attachment is None:
                    self._attachment = Attachment(
                        self.root, linger=self._linger, busy_timeout=self._busy_timeout,
                        on_attach=self._on_attach, before_detach=lambda con: None,
                        on_reset=lambda forked: None)
        return self._attachment

    @contextmanager
    def using(self, only: set[str] | None = None) -> Iterator[Any]:
        """The attached, up-to-date table (``only``: sync just these log files)."""
        from . import sync
        from .attachment import DatabaseUnreadable

        with self._guard:
            try:
                with self.attachment.use():
                    pass  # attach now: an unreadable file is set aside before any query
            except DatabaseUnreadable as e:
                self._set_aside(e)
            with self.attachment.use() as con:
                sync.sync(con, self.logs, self.db_path, only)
                yield con

    def _on_attach(self, con: Any) -> None:
        import duckdb

        from . import legacy, schema
        from .attachment import DatabaseUnreadable

        if self._upgrading:
            return
        try:
            version = schema.version(con)
            if version == schema.MIRROR_VERSION:
                return
            if (legacy.legacy_version(con) is not None
                    and not (self.root / "format").exists()):
                raise legacy_store_error(self.db_path)
            schema.create(con, self.db_path)  # derived data: rebuilt from the logs
        except duckdb.Error as e:
            raise DatabaseUnreadable(self.db_path, e) from e

    def _set_aside(self, error: DatabaseUnreadable) -> None:
        self.attachment.release()
        moved = [self.quarantine.move(path, "mirror")
                 for path in (self.db_path, self.db_path.with_name(DB_NAME + ".wal"))
                 if path.exists()]
        warnings.warn(
            f"nbstep: {error} The table is rebuilt from the store's logs, which hold every "
            f"record; the unreadable file was moved to {moved[0] if moved else 'nowhere'}.",
            StoreDamagedWarning, stacklevel=5,
        )

    def upgrade_legacy(self, write_format: Any) -> int | None:
        """Turn a format 1/2 store's table into logs; None if this is no such store."""
        if not self.db_path.exists():
            return None
        from . import legacy, schema, sync

        with self._guard:
            self._upgrading = True
            try:
                with self.attachment.use() as con:
                    if legacy.legacy_version(con) is None:
                        return None
                    count = legacy.export(con, self.root, self.logs, self.quarantine,
                                          write_format)
                    schema.create(con, self.db_path)
                    sync.sync(con, self.logs, self.db_path)
                    return count
            finally:
                self._upgrading = False

    def rebuild(self) -> None:
        """Build the table again from the logs (whatever state it was in)."""
        from . import schema
        from .attachment import DatabaseUnreadable

        with self._guard:
            try:
                with self.attachment.use() as con:
                    schema.create(con, self.db_path)
            except DatabaseUnreadable as e:
                self._set_aside(e)
            with self.using():
                pass

    def foreign_tables(self) -> set[str]:
        """The tables of a ``steps.duckdb`` that is no nbstep store at all."""
        from . import schema

        with self._guard:
            self._upgrading = True
            try:
                with self.attachment.use() as con:
                    return schema.tables(con)
            finally:
                self._upgrading = False

    def release(self) -> None:
        if self._attachment is not None:
            self._attachment.release()

    def close(self) -> None:
        if self._attachment is not None:
            self._attachment.close()


def legacy_store_error(path: Path) -> Exception:
    from nbstep.errors import StoreFormatError

    return StoreFormatError(
        f"{path} holds a store of nbstep 0.1 that was not upgraded (its `format` file is "
        "missing). Open it once with this nbstep (any step or `nbstep ls`) to upgrade it."
    )
