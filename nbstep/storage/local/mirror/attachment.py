"""Sharing one DuckDB file between processes: attach only while working, take turns.

DuckDB lets one process at a time open a database file, even read-only
(docs/design.md). So a process never keeps the file: each store owns an in-memory
DuckDB connection and ATTACHes the file only while it works (ATTACH + DETACH costs
~0.5 ms, where a fresh connect costs ~12 ms), holding an ``flock`` on ``steps.lock``
from before ATTACH until after DETACH: DuckDB's own lock is released before it has
finished closing the file, and a process attaching in that moment reads a stale
table. A background thread DETACHes once nothing has used the file for ``linger``
seconds (default 0.05), so a tight loop of steps keeps it attached, while an idle
kernel or a handler that runs longer than ``linger`` does not hold it. A process that
finds the file locked touches ``lock.want`` and retries with backoff; a holder that
has had the file for longer than ``FAIR_SLICE`` and sees a newer ``lock.want`` lets
go, so a busy loop cannot starve other processes. Only past ``busy_timeout`` does an
operation fail, with :class:`~nbstep.errors.StoreBusy`.

fork(): before it, every attachment detaches (DuckDB's process-wide registry of
attached files is copied into the child otherwise) and is locked; the child starts
with fresh state and attaches on its own.
"""

from __future__ import annotations

import atexit
import os
import random
import re
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbstep.errors import NbstepError, StoreBusy
from nbstep.storage.local.layout import DB_NAME

from .schema import ALIAS

LOCK_NAME = "steps.lock"
WANT_NAME = "lock.want"
# Taking turns: a waiter retries ATTACH (a failed one costs ~0.35 ms) at most every
# WAIT_STEP_MAX (x1.5 jitter); a holder that sees a waiter after FAIR_SLICE detaches
# and stays away YIELD_PAUSE, longer than a waiter sleeps, so the waiter gets in.
FAIR_SLICE = 0.05
YIELD_PAUSE = 0.01
WAIT_STEP_MAX = 0.004
WANT_FRESH_NS = 100_000_000
DEFAULT_LINGER = 0.05

_LOCK_PID = re.compile(r"PID (\d+)")


class DatabaseUnreadable(NbstepError):
    """The database file cannot be opened: damaged, truncated, not DuckDB, no access."""

    def __init__(self, path: Path, error: Exception) -> None:
        super().__init__(
            f"cannot open {path}: {type(error).__name__}: {str(error).splitlines()[0]}. "
            "Check the path and its permissions, or point NBSTEP_STORE elsewhere."
        )
        self.path = path
        self.error = error


def _is_lock_conflict(error: Exception) -> bool:
    # DuckDB has no distinct exception class for "another process holds the file":
    # it raises IOException with this text (duckdb 1.x-2.0).
    return "Could not set lock" in str(error) or "Conflicting lock" in str(error)


class Attachment:
    """The store file of one store object: attached while in use, detached when idle.

    ``on_attach(con)`` runs right after each ATTACH (schema, journal recovery, index
    validation) and ``before_detach(con)`` right before each DETACH (folding the journal);
    ``on_reset(forked)`` drops the owner's in-memory state when the connection is lost,
    and in a forked child (``forked=True``: descriptors are the parent's).
    """

    def __init__(self, root: Path, *, linger: float, busy_timeout: float,
                 on_attach: Callable[[Any], None], before_detach: Callable[[Any], None],
                 on_reset: Callable[[bool], None]) -> None:
        self.root = root
        self.db_path = root / DB_NAME
        self.lock_path = root / LOCK_NAME
        self.want_path = root / WANT_NAME
        self.linger = linger
        self.busy_timeout = busy_timeout
        self._on_attach = on_attach
        self._before_detach = before_detach
        self._on_reset = on_reset
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._con: Any = None
        self._lock_fd: int | None = None
        self.attached = False
        self._attached_at = 0.0
        self._last_use = 0.0
        self._backoff_until = 0.0
        self._next_want_check = 0.0
        self._closer: threading.Thread | None = None
        self._closed = False
        _attachments.add(self)

    # -- one unit of work --------------------------------------------------------------

    @contextmanager
    def use(self) -> Iterator[Any]:
        """The attached connection, for one unit of work (the lock is held throughout)."""
        with self.lock:
            self._ensure_attached()
            try:
                yield self._con
            finally:
                now = time.monotonic()
                self._last_use = now
                if now >= self._next_want_check and self._someone_waits():
                    # Let a waiting process in: detach, and stay away longer than a
                    # waiter sleeps between retries, so it gets the file.
                    self._backoff_until = now + YIELD_PAUSE
                    try:
                        self.detach()
                    except NbstepError as e:
                        # This operation succeeded; only the fold on the way out failed.
                        # The journal keeps the steps, and the next attach folds it.
                        warnings.warn(f"nbstep: {e}", RuntimeWarning, stacklevel=3)

    def release(self) -> None:
        """Detach now (the next operation re-attaches)."""
        with self.lock:
            self.detach()

    def close(self) -> None:
        """Detach the database file and stop the linger thread."""
        with self.lock:
            self._closed = True
            try:
                self.detach()
            finally:
                if self._con is not None:
                    self._con.close()
                    self._con = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None
                self._wake.notify_all()

    # -- attaching -----------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise NbstepError(
                f"the store path {self.root} exists and is not a directory. "
                "Set NBSTEP_STORE to a directory."
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".gitignore", "x") as f:
                f.write("# created by nbstep: a store is local state, never committed\n*\n")
        except FileExistsError:
            pass
        except OSError as e:
            raise NbstepError(
                f"cannot create the store directory {self.root}: {e.strerror}. "
                "Set NBSTEP_STORE to a writable directory."
            ) from e

    def _ensure_attached(self) -> None:
        """Attach the database file, waiting out other processes; lock held."""
        if self.attached:
            return
        if self._closed:
            raise NbstepError(
                f"the store {self.root} was closed (nbstep.configure(store=...) switched "
                "stores, or the interpreter is exiting); run the step again"
            )
        import duckdb

        if self._con is None:
            self._prepare_dir()
            self._con = duckdb.connect(":memory:")
        pause = self._backoff_until - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._attach_waiting(duckdb)
        self.attached = True
        self._attached_at = time.monotonic()
        self._last_use = self._attached_at
        self._next_want_check = self._attached_at + FAIR_SLICE
        try:
            self._on_attach(self._con)
        except BaseException:
            self.detach()
            raise
        if self._closer is None or not self._closer.is_alive():
            self._closer = threading.Thread(
                target=self._linger_loop, name=f"nbstep-store-linger-{id(self):x}", daemon=True
            )
            self._closer.start()
        else:
            self._wake.notify_all()

    def _attach_waiting(self, duckdb: Any) -> None:
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        path = str(self.db_path).replace("'", "''")
        while True:
            holder = self._take_file_lock()
            if holder is None:
                try:
                    self._con.execute(f"ATTACH '{path}' AS {ALIAS}")
                    return
                except duckdb.Error as e:
                    self._drop_file_lock()
                    if not (isinstance(e, duckdb.IOException) and _is_lock_conflict(e)):
                        raise DatabaseUnreadable(self.db_path, e) from e
                    match = _LOCK_PID.search(str(e))
                    holder = f"process {match.group(1)}" if match else "another process"
            now = time.monotonic()
            if now >= deadline:
                raise StoreBusy(
                    f"the store {self.db_path} has been held by {holder} for more than "
                    f"{self.busy_timeout:g} s. nbstep processes let go of it within "
                    f"{DEFAULT_LINGER:g} s of their last step, so that process is either "
                    "not nbstep (a `duckdb` shell or a script keeping the file open?) or "
                    "an nbstep process stuck in one long call that holds Python's GIL. "
                    "Close it or wait for it, or raise the wait with "
                    "nbstep.configure(busy_timeout=SECONDS)."
                )
            self._signal_want()
            time.sleep(min(delay * random.uniform(0.5, 1.5), max(deadline - now, 0)))
            delay = min(delay * 1.6, WAIT_STEP_MAX)

    def _take_file_lock(self) -> str | None:
        """Take ``steps.lock`` without waiting; None when taken, else who holds it.

        DuckDB's own file lock is not enough between processes: DuckDB 2.0 lets a
        second process open the file while the last holder is still closing it, and
        that process then reads the table as it was before the holder's last commit
        (a stale maximum event id, so reused ids and silently dropped steps;
        tests/test_concurrency.py shows it). An ``flock`` on a file of our own, taken
        before ATTACH and released only after DETACH has returned, makes the hand-over
        between nbstep processes exact.
        """
        import fcntl

        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise NbstepError(
                    f"cannot open the store's lock file {self.lock_path}: {e.strerror}. "
                    "Check the store directory's permissions, or point NBSTEP_STORE elsewhere."
                ) from e
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = int(os.pread(self._lock_fd, 32, 0).strip() or b"0")
            except (OSError, ValueError):
                pid = 0
            return f"nbstep process {pid}" if pid else "another nbstep process"
        os.pwrite(self._lock_fd, f"{os.getpid():>20}\n".encode(), 0)
        return None

    def _drop_file_lock(self) -> None:
        import fcntl

        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _signal_want(self) -> None:
        try:
            with open(self.want_path, "a"):
                pass
            os.utime(self.want_path)
        except OSError:
            pass  # a read-only store folder: fairness is lost, correctness is not

    def _someone_waits(self) -> bool:
        # A stat costs ~2 µs, a tenth of a replay: look at most once per millisecond,
        # and only after holding the file for FAIR_SLICE. A waiter touches lock.want on
        # every retry (at least every ~30 ms), so a recent touch means someone waits
        # now; file times come from a coarse clock, hence the generous window.
        self._next_want_check = max(time.monotonic() + 0.001, self._attached_at + FAIR_SLICE)
        try:
            return os.stat(self.want_path).st_mtime_ns > time.time_ns() - WANT_FRESH_NS
        except FileNotFoundError:
            return False

    # -- detaching -----------------------------------------------------------------------

    def detach(self) -> None:
        """Fold the journal (``before_detach``) and let go of the file; lock held."""
        if not self.attached:
            return
        fold_error: BaseException | None = None
        try:
            self._before_detach(self._con)
        except BaseException as e:
            # The journal stays on disk; whoever attaches next folds it. Detach anyway
            # so this process does not keep other processes out.
            fold_error = e
        self.attached = False
        try:
            self._con.execute(f"DETACH {ALIAS}")
        except Exception:
            # A DETACH that fails leaves the in-memory connection in an unknown state;
            # drop it so the next use starts clean (and the OS lock goes with it).
            con, self._con = self._con, None
            self._on_reset(False)
            con.close()
            raise
        finally:
            self._drop_file_lock()
        if fold_error is not None:
            raise fold_error

    def _linger_loop(self) -> None:
        with self.lock:
            while not self._closed:
                if not self.attached:
                    self._wake.wait()
                    continue
                idle = time.monotonic() - self._last_use
                if idle >= self.linger:
                    try:
                        self.detach()
                    except Exception:
                        # The journal is still on disk, and the next attach (by this
                        # process or another) folds it again; if that fails too, that
                        # operation raises, in the caller's thread, where it is seen.
                        pass
                    continue
                self._wake.wait(self.linger - idle)

    # -- fork ----------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Start over in a forked child, touching nothing the parent owns.

        The child inherits the parent's connection and descriptors; using or closing
        them would write to the store without holding its lock. They are dropped (the
        connection object is kept alive, so its destructor never runs here) and the
        child attaches on its own.
        """
        _inherited.append(self._con)
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._con = None
        self.attached = False
        self._closer = None
        if self._lock_fd is not None:
            # Not locked: the parent detached before the fork, which released it. A
            # descriptor of the child's own is opened on first use (an flock belongs
            # to the open file, shared with the parent through this descriptor).
            os.close(self._lock_fd)
            self._lock_fd = None
        self._on_reset(True)


# Every live attachment, for fork() and interpreter exit.
_attachments: weakref.WeakSet[Attachment] = weakref.WeakSet()
# Connections a forked child inherited and must neither use nor destroy.
_inherited: list[Any] = []
_forking: list[Attachment] = []


def _before_fork() -> None:
    # Hold every store's lock across fork(), so no store is mid-operation (in the
    # linger thread, say) in the child, where that thread does not exist. And let go
    # of the file first: DuckDB's process-wide registry of attached files is copied
    # into the child, which could then never attach the store itself.
    _forking[:] = list(_attachments)
    for attachment in _forking:
        attachment.lock.acquire()
        try:
            attachment.detach()
        except Exception as e:
            warnings.warn(f"nbstep: could not detach {attachment.db_path} before fork: {e}",
                          RuntimeWarning, stacklevel=2)


def _after_fork_in_parent() -> None:
    for attachment in _forking:
        attachment.lock.release()
    _forking.clear()


def _after_fork_in_child() -> None:
    for attachment in _forking:
        attachment._after_fork_in_child()
    _forking.clear()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


@atexit.register
def _close_all() -> None:
    for attachment in list(_attachments):
        try:
            attachment.close()
        except Exception:
            pass  # interpreter shutdown: the OS releases the file lock anyway
