"""The connection to the team store's server: opened on first use, opened again after
the server restarted, and every driver error turned into one clear nbstep error.

One connection per store object, in autocommit mode, used under a lock (a store is
shared by threads). psycopg is imported here, on first use, never by ``import nbstep``.
A connection a forked child inherited is the parent's: the child drops it unused and
connects on its own.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from nbstep.errors import TeamServerError

from . import faults, schema
from .url import ServerAddress

T = TypeVar("T")
CONNECT_TIMEOUT = 5  # seconds
# After the server could not be reached, try again at most this often (seconds), so a
# notebook run offline does not wait for a connection timeout on every step.
RETRY_AFTER = 5.0


class Server:
    """The team store's server, as one store object talks to it."""

    def __init__(self, address: ServerAddress, *, create: bool = True) -> None:
        self.address = address
        self.create = create
        self.lock = threading.RLock()
        self._con: Any = None
        self._pid = os.getpid()
        self._down_until = 0.0
        self.version: int | None = None
        self.user: str | None = None
        _servers.add(self)

    # -- using it ------------------------------------------------------------------------

    def run(self, doing: str, work: Callable[[Any], T], *, retry: bool = True) -> T:
        """``work(connection)``, with errors as nbstep errors naming ``doing``.

        A connection that broke (the server restarted) is opened again and ``work`` runs
        once more when ``retry``: every caller's work is safe to repeat (an append is a
        compare-and-set, so its repeat finds its own first attempt, if that committed).
        """
        import psycopg

        with self.lock:
            for attempt in (1, 2):
                con = self._connection()
                try:
                    return work(con)
                except psycopg.Error as e:
                    broken = con.closed or con.broken
                    if broken:
                        self._drop()
                    if broken and retry and attempt == 1:
                        continue
                    if broken:
                        self._down()
                        raise faults.unreachable(self.address, faults._first_line(e)) from e
                    raise faults.session_error(self.address, e, doing) from e
            raise AssertionError("unreachable")

    def available(self) -> bool:
        """False while a recent attempt found the server unreachable (see RETRY_AFTER)."""
        return time.monotonic() >= self._down_until

    # -- the connection --------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._pid != os.getpid():
            self._forget_inherited()
        if self._con is not None and not self._con.closed:
            return self._con
        if time.monotonic() < self._down_until:
            raise faults.unreachable(self.address, "it could not be reached moments ago; "
                                     f"nbstep tries again every {RETRY_AFTER:g} s")
        try:
            import psycopg
        except ImportError as e:
            raise faults.missing_driver(e) from e
        try:
            # prepare_threshold=0: a step's two statements are prepared on first use.
            con = psycopg.connect(self.address.url, autocommit=True, prepare_threshold=0,
                                  connect_timeout=CONNECT_TIMEOUT,
                                  application_name="nbstep")
        except psycopg.Error as e:
            error = faults.connect_error(self.address, e)
            if isinstance(error, faults.ServerUnreachable):
                self._down()
            raise error from e
        try:
            self._check_schema(con)
        except BaseException:
            con.close()
            raise
        self._con = con
        self._down_until = 0.0
        return con

    def _check_schema(self, con: Any) -> None:
        import psycopg

        try:
            self.user = con.execute("SELECT current_user").fetchone()[0]
            found = schema.version(con)
            if (found is None or found < schema.SCHEMA_VERSION) and self.create:
                # No tables yet, or an older nbstep's: create or upgrade them, if this
                # user may (else the messages below say who must).
                try:
                    found = schema.create(con, roles=False)
                except psycopg.errors.InsufficientPrivilege as e:
                    if found is None:
                        raise faults.schema_missing(self.address) from e
        except psycopg.Error as e:
            raise faults.session_error(self.address, e, "read the team store's schema") from e
        if found is None:
            raise faults.schema_missing(self.address)
        if found > schema.SCHEMA_VERSION:
            raise faults.schema_newer(self.address, found, schema.SCHEMA_VERSION)
        if found < schema.SCHEMA_VERSION:
            raise TeamServerError(
                f"the team store {self.address} has schema version {found}, older than this "
                f"nbstep's {schema.SCHEMA_VERSION}: an admin upgrades it with "
                "`nbstep --store URL team init` (every nbstep using it must be this "
                "version or newer)."
            )
        self.version = found

    def _down(self) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER

    def retry_now(self) -> None:
        """Forget that the server was down: the next use tries at once (`nbstep push`)."""
        self._down_until = 0.0

    def _drop(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            try:
                con.close()
            except Exception:
                pass  # already broken: the socket goes with the object

    def _forget_inherited(self) -> None:
        # A forked child: the connection's socket is the parent's session. Closing it
        # would end the parent's session; keep the object alive and unused instead.
        _inherited.append(self._con)
        self._con = None
        self.lock = threading.RLock()
        self._pid = os.getpid()

    def close(self) -> None:
        with self.lock:
            if self._pid != os.getpid():
                self._forget_inherited()
            self._drop()


_servers: weakref.WeakSet[Server] = weakref.WeakSet()
_inherited: list[Any] = []
