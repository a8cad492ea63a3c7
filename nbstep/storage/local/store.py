"""The local store: namespace logs on one disk, value files beside them, a DuckDB mirror.

Recording a step appends one frame to its namespace's log under that log's own lock
(:mod:`.namespace_log`), durable when it returns; replaying reads the log (through
its slot index), never DuckDB. Processes in different notebooks never wait for each
other, and no query of the mirror (``step.inspect()``, ``nbstep ls``) stalls a step.
:mod:`.layout` lists the files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from nbstep.core.record import NewRecord, Record
from nbstep.errors import NbstepError, StoreFormatError
from nbstep.storage import values
from nbstep.storage.base import StepStore, StoreAdmin
from nbstep.storage.objects import ObjectFiles
from nbstep.storage.versions import DEFAULT_KEEP

from .admin import LocalAdmin
from .layout import DB_NAME, Layout
from .mirror import Mirror
from .namespace_log import NamespaceLog
from .quarantine import Quarantine

DEFAULT_BUSY_TIMEOUT = 60.0
DEFAULT_INLINE_LIMIT = 64 * 1024
DEFAULT_LINGER = 0.05


class LocalStore(LocalAdmin, StepStore):
    """A store directory (``.nbstep/`` by default)."""

    def __init__(self, root: str | os.PathLike[str], *, linger: float = DEFAULT_LINGER,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 inline_limit: int = DEFAULT_INLINE_LIMIT,
                 keep_versions: int = DEFAULT_KEEP) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.layout = Layout(self.root)
        self.busy_timeout = busy_timeout
        self.inline_limit = inline_limit
        self.keep_versions = keep_versions
        self.objects = ObjectFiles(self.layout.objects)
        self.quarantine = Quarantine(self.layout.quarantine)
        self.mirror = Mirror(self.root, self.layout.logs, self.quarantine,
                             busy_timeout=busy_timeout, linger=linger)
        self._logs: dict[str, NamespaceLog] = {}
        self._lock = threading.Lock()
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"LocalStore({self.location!r})"

    # -- opening ----------------------------------------------------------------------

    def _open(self) -> None:
        """Make the directory on first use, check its format, upgrade a 0.1 store."""
        if self._ready:
            return
        with self._lock:
            if self._closed:
                raise NbstepError(
                    f"the store {self.root} was closed (nbstep.configure(store=...) switched "
                    "stores, or the interpreter is exiting); run the step again"
                )
            if self._ready:
                return
            self.layout.make()
            if self.layout.version() is None:
                self._first_open()
            self._ready = True

    def _first_open(self) -> None:
        if (self.root / DB_NAME).exists():
            upgraded = self.mirror.upgrade_legacy(self.layout.write_format)
            if upgraded is not None or self.layout.version() is not None:
                return  # upgraded here, or by another process meanwhile
            if any(self.layout.logs.glob("*.log")):
                self.layout.write_format()  # a crash between logs and format file
                return
            tables = self.mirror.foreign_tables()
            if tables:
                raise StoreFormatError(
                    f"{self.root / DB_NAME} is a DuckDB file but not an nbstep store "
                    f"(tables: {', '.join(sorted(tables))}). Point NBSTEP_STORE at another "
                    "directory."
                )
        self.layout.write_format()

    def log(self, namespace: str) -> NamespaceLog:
        self._open()
        found = self._logs.get(namespace)
        if found is None:
            with self._lock:
                found = self._logs.setdefault(namespace, NamespaceLog(
                    self.layout.logs, namespace, busy_timeout=self.busy_timeout,
                    quarantine=self.quarantine))
        return found

    # -- the seam ---------------------------------------------------------------------

    def lookup(self, namespace: str, key: str, sequence: int) -> Record | None:
        return self.log(namespace).lookup(key, sequence)

    def versions(self, namespace: str, key: str, sequence: int) -> list[Record]:
        return self.log(namespace).versions(key, sequence, self.keep_versions)

    def current(self, namespace: str) -> list[Record]:
        return self.log(namespace).current()

    def read(self, record: Record) -> Any:
        return values.read(record, self.objects,
                           lambda r: self.log(r.namespace).inline_value(r))

    def append(self, new: NewRecord, expected_event_id: int | None) -> tuple[Record, bool]:
        log = self.log(new.namespace)
        if not values.needs_object(new, self.inline_limit):
            return log.append(new, values.place(new, self.inline_limit, self.objects),
                              expected_event_id)
        # A value file and the record pointing to it, with gc held off in between.
        with self.objects.pinned():
            return log.append(new, values.place(new, self.inline_limit, self.objects),
                              expected_event_id)

    def forget(self, namespace: str | None, key: str | None = None) -> int:
        names = [namespace] if namespace is not None else self.namespaces()
        return sum(self.log(name).forget(key) for name in names)

    def admin(self) -> StoreAdmin:
        self._open()
        return self

    def release(self) -> None:
        self.mirror.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ready = False
            logs, self._logs = list(self._logs.values()), {}
        for log in logs:
            log.close()
        self.mirror.close()
