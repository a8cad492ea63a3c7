"""The storage seam: the only module that talks to DuckDB or the object files.

Layout of a store directory (``.nbstep/`` by default)::

    steps.duckdb         the event table (see docs/record-format.md)
    journal              events committed but not yet folded into the table
    objects/ab/<sha256>  values above ``inline_limit`` bytes, content-addressed
    objects/tmp/         half-written object files; gc removes stale ones
    steps.lock           flock()ed by the process that has the database attached
    lock.want            touched by a process that waits for the database
    .gitignore           "*": a store is never committed by accident

Sharing one store between processes
-----------------------------------
DuckDB lets one process at a time open a database file, even read-only
(docs/design.md). So a process never keeps the file: each ``Store`` owns an
in-memory DuckDB connection and ATTACHes the file only while it works, holding an
``flock`` on ``steps.lock`` from before ATTACH until after DETACH (DuckDB's own lock
is released before it has finished closing the file) (ATTACH +
DETACH costs ~0.5 ms, where a fresh connect costs ~12 ms). A background thread
DETACHes it once nothing has used it for ``linger`` seconds (default 0.05), so a
tight loop of steps keeps it attached, while an idle kernel or a handler that runs
longer than ``linger`` does not hold it. A process that finds the file locked
touches ``lock.want`` and retries with backoff; a holder that has had the file for
longer than ``FAIR_SLICE`` and sees a newer ``lock.want`` lets go, so a busy loop
cannot starve other processes. Only past ``busy_timeout`` does an operation fail,
with :class:`~nbstep.errors.StoreBusy`.

Because only the attached process can write, an in-memory index of each
namespace's current records stays exact while the file is attached; on every
re-attach it is checked against ``(max(event_id), gc epoch)`` and dropped if
another process wrote in between. So replays cost one query per namespace, then
a dict lookup.

Crash safety: an object file is written to ``objects/tmp``, fsynced and renamed
into place (and the folder fsynced) *before* the event that points to it is
written, so no event ever points at a partial file. A recorded event is durable
once its journal entry is fdatasynced (see "journal" below); folds into the
table are single DuckDB transactions. What a crash leaves behind (temp files,
objects no event references) is removed by :meth:`Store.gc`, never by a reader.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import mmap
import os
import pickle
import random
import re
import socket
import struct
import threading
import time
import warnings
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import NbstepError, StepReplayError, StoreBusy, StoreFormatError

# Bump on a change of the tables below, add a migration in _migrate(), and commit a
# store of the new format under tests/stores/ (tests/stores/make_store.py).
# 1: the first format. 2: events.checksum (xxh3-128 of an object file's bytes).
FORMAT_VERSION = 2
DB_NAME = "steps.duckdb"
ALIAS = "nbstep_store"
# Taking turns: a waiter retries ATTACH (a failed one costs ~0.35 ms) at most every
# WAIT_STEP_MAX (x1.5 jitter); a holder that sees a waiter after FAIR_SLICE detaches
# and stays away YIELD_PAUSE, longer than a waiter sleeps, so the waiter gets in.
FAIR_SLICE = 0.05
YIELD_PAUSE = 0.01
WAIT_STEP_MAX = 0.004
WANT_FRESH_NS = 100_000_000
DEFAULT_LINGER = 0.05
DEFAULT_BUSY_TIMEOUT = 60.0
DEFAULT_INLINE_LIMIT = 64 * 1024
TMP_GRACE_SECONDS = 3600.0
JOURNAL_NAME = "journal"
LOCK_NAME = "steps.lock"
PARALLEL_HASH_AT = 4 * 1024 * 1024
WRITE_CHUNK = 64 * 1024 * 1024
JOURNAL_FOLD_AT = 512
JOURNAL_FOLD_BYTES = 4 * 1024 * 1024
# Values up to this size stay in the namespace index; larger inline values are read
# from the table when replayed, so a namespace of big values does not fill memory.
CACHED_VALUE_LIMIT = 4096
_FRAME = struct.Struct("<II")
_ROW_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, make_timestamptz(?), ?, ?, ?, ?, ?)"
_ROW_WIDTH = _ROW_PLACEHOLDERS.count("?")

_SCHEMA = f"""
CREATE TABLE {ALIAS}.meta (
    name VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE {ALIAS}.events (
    event_id BIGINT PRIMARY KEY,
    kind VARCHAR NOT NULL,
    namespace VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    sequence BIGINT NOT NULL,
    identity VARCHAR,
    deterministic_inputs_hash VARCHAR,
    codec VARCHAR,
    result_json VARCHAR,
    result_blob BLOB,
    object_sha256 VARCHAR,
    size_bytes BIGINT,
    duration_s DOUBLE,
    occurred_at TIMESTAMPTZ NOT NULL,
    reason VARCHAR,
    details VARCHAR,
    pid INTEGER,
    host VARCHAR,
    checksum VARCHAR
);
"""

RECORDED = "recorded"
FORGOTTEN = "forgotten"

_EVENT_COLUMNS = (
    "event_id, kind, key, sequence, identity, deterministic_inputs_hash, codec, "
    "result_json, result_blob, object_sha256, size_bytes, duration_s, "
    "epoch_us(occurred_at), reason, details, checksum"
)

# The columns the namespace index holds: values only when small (CACHED_VALUE_LIMIT).
_EVENT_COLUMNS_CACHED = _EVENT_COLUMNS.replace(
    "result_json, result_blob",
    f"CASE WHEN length(result_json) <= {CACHED_VALUE_LIMIT} THEN result_json END, "
    f"CASE WHEN octet_length(result_blob) <= {CACHED_VALUE_LIMIT} THEN result_blob END",
)

_LOCK_PID = re.compile(r"PID (\d+)")


@dataclass(frozen=True, slots=True)
class Record:
    """One recorded step as the store holds it (the value still encoded)."""

    event_id: int
    namespace: str
    key: str
    sequence: int
    identity: str
    input_hash: str
    codec: str
    result_json: str | None
    result_blob: bytes | None
    object_sha256: str | None
    size_bytes: int
    duration_s: float | None
    occurred_at_us: int
    reason: str | None
    details: dict[str, Any] | None
    checksum: str | None = None

    @property
    def occurred_at(self) -> str:
        """The record's time as ``YYYY-MM-DD HH:MM:SS UTC``, for messages."""
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.occurred_at_us / 1e6))


def _record_from_row(namespace: str, row: tuple[Any, ...]) -> Record:
    (event_id, _kind, key, sequence, identity, input_hash, codec, result_json, result_blob,
     object_sha256, size_bytes, duration_s, occurred_at_us, reason, details, checksum) = row
    return Record(
        event_id=event_id,
        namespace=namespace,
        key=key,
        sequence=sequence,
        identity=identity,
        input_hash=input_hash,
        codec=codec,
        result_json=result_json,
        result_blob=result_blob,
        object_sha256=object_sha256,
        size_bytes=size_bytes,
        duration_s=duration_s,
        occurred_at_us=occurred_at_us,
        reason=reason,
        details=json.loads(details) if details else None,
        checksum=checksum,
    )


def _duckdb() -> Any:
    import duckdb

    return duckdb


def _is_lock_conflict(error: Exception) -> bool:
    # DuckDB has no distinct exception class for "another process holds the file":
    # it raises IOException with this text (duckdb 1.x-2.0; platform-facts.md).
    return "Could not set lock" in str(error) or "Conflicting lock" in str(error)


_stores: weakref.WeakSet[Store] = weakref.WeakSet()


class Store:
    """A store directory: the DuckDB event table plus the object files."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        linger: float = DEFAULT_LINGER,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        inline_limit: int = DEFAULT_INLINE_LIMIT,
    ) -> None:
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        self.objects = self.root / "objects"
        self.want_path = self.root / "lock.want"
        self.lock_path = self.root / LOCK_NAME
        self.journal_path = self.root / JOURNAL_NAME
        self.linger = linger
        self.busy_timeout = busy_timeout
        self.inline_limit = inline_limit
        self._lock = threading.RLock()
        self._con: Any = None
        self._pid = os.getpid()
        self._attached = False
        self._attached_at = 0.0
        self._attached_at_ns = 0
        self._last_use = 0.0
        self._backoff_until = 0.0
        self._next_want_check = 0.0
        self._known: tuple[int, str] | None = None
        self._namespaces: dict[str, dict[tuple[str, int], Record]] = {}
        self._max_event_id = 0
        self._closer: threading.Thread | None = None
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._journal_fd: int | None = None
        self._lock_fd: int | None = None
        self._pending: list[list[Any]] = []
        self._pending_bytes = 0
        _stores.add(self)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- connection ------------------------------------------------------------

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
        if self._attached:
            return
        if self._closed:
            raise NbstepError(
                f"the store {self.root} was closed (nbstep.configure(store=...) switched "
                "stores, or the interpreter is exiting); run the step again"
            )
        duckdb = _duckdb()
        if self._con is None:
            self._prepare_dir()
            self._con = duckdb.connect(":memory:")
        pause = self._backoff_until - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        path = str(self.db_path).replace("'", "''")
        while True:
            holder = self._take_file_lock()
            if holder is None:
                try:
                    self._con.execute(f"ATTACH '{path}' AS {ALIAS}")
                    break
                except duckdb.IOException as e:
                    self._drop_file_lock()
                    if not _is_lock_conflict(e):
                        raise NbstepError(
                            f"cannot open the store {self.db_path}: {e}. Check the path and "
                            "its permissions, or point NBSTEP_STORE elsewhere."
                        ) from e
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
        self._attached = True
        self._attached_at = time.monotonic()
        self._attached_at_ns = time.time_ns()
        self._last_use = self._attached_at
        self._next_want_check = self._attached_at + FAIR_SLICE
        try:
            self._check_schema()
            self._open_journal()
            self._validate_cache()
        except BaseException:
            self._detach()
            raise
        if self._closer is None or not self._closer.is_alive():
            self._closer = threading.Thread(
                target=self._linger_loop, name=f"nbstep-store-linger-{id(self):x}", daemon=True
            )
            self._closer.start()
        else:
            self._wake.notify_all()

    def _take_file_lock(self) -> str | None:
        """Take ``steps.lock`` without waiting; None when taken, else who holds it.

        DuckDB's own file lock is not enough between processes: DuckDB 2.0 lets a
        second process open the file while the last holder is still closing it, and
        that process then reads the table as it was before the holder's last commit
        (a stale maximum event id, so reused ids and silently dropped steps;
        tests/test_concurrency.py reproduces it). An ``flock`` on a file of our own,
        taken before ATTACH and released only after DETACH has returned, makes the
        hand-over between nbstep processes exact.
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

    def _detach(self) -> None:
        """Fold the journal and let go of the file; lock held."""
        if not self._attached:
            return
        fold_error: BaseException | None = None
        try:
            self._fold()
        except BaseException as e:
            # The journal stays on disk; whoever attaches next folds it. Detach anyway
            # so this process does not keep other processes out.
            fold_error = e
        self._attached = False
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        self._pending = []
        try:
            self._con.execute(f"DETACH {ALIAS}")
        except Exception:
            # A DETACH that fails leaves the in-memory connection in an unknown state;
            # drop it so the next use starts clean (and the OS lock goes with it).
            con, self._con = self._con, None
            self._namespaces.clear()
            self._known = None
            con.close()
            raise
        finally:
            self._drop_file_lock()
        if fold_error is not None:
            raise fold_error

    def _linger_loop(self) -> None:
        with self._lock:
            while not self._closed:
                if not self._attached:
                    self._wake.wait()
                    continue
                idle = time.monotonic() - self._last_use
                if idle >= self.linger:
                    try:
                        self._detach()
                    except Exception:
                        # The journal is still on disk, and the next attach (by this
                        # process or another) folds it again; if that fails too, that
                        # operation raises, in the caller's thread, where it is seen.
                        pass
                    continue
                self._wake.wait(self.linger - idle)

    def _after_fork_in_child(self) -> None:
        """Start over in a forked child, touching nothing the parent owns.

        The child inherits the parent's attached connection, journal descriptor and
        pending events; using or closing them would write to the store without
        holding its lock. They are dropped (the connection object is kept alive, so
        its destructor never runs here) and the child attaches on its own.
        """
        _inherited.append(self._con)
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._con = None
        self._attached = False
        self._closer = None
        self._namespaces = {}
        self._known = None
        self._journal_fd = None
        if self._lock_fd is not None:
            # Not locked: _before_fork detached, which released it. A descriptor of the
            # child's own is opened on first use (an flock belongs to the open file).
            os.close(self._lock_fd)
            self._lock_fd = None
        self._pending = []
        self._pending_bytes = 0

    @contextmanager
    def _db(self) -> Iterator[Any]:
        """The attached connection, for one unit of work."""
        with self._lock:
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
                        self._detach()
                    except NbstepError as e:
                        # This operation succeeded; only the fold on the way out failed.
                        # The journal keeps the steps, and the next attach folds it.
                        warnings.warn(f"nbstep: {e}", RuntimeWarning, stacklevel=3)

    def _transaction(self, con: Any, what: str) -> Any:
        return _Transaction(self, con, what)

    def close(self) -> None:
        """Detach the database file and stop the linger thread."""
        with self._lock:
            self._closed = True
            try:
                self._detach()
            finally:
                if self._con is not None:
                    self._con.close()
                    self._con = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None
                self._wake.notify_all()

    def release(self) -> None:
        """Detach now (the next operation re-attaches); for tests and the CLI."""
        with self._lock:
            self._detach()

    # -- journal ---------------------------------------------------------------
    #
    # A DuckDB commit costs ~1-1.4 ms here, most of it DuckDB's own WAL work; an
    # append + fdatasync to a plain file costs ~0.15 ms. So a recorded event is
    # first appended to `journal` (durable at return), and folded into the events
    # table in one transaction before the file is detached, before any query that
    # reads the table, and every JOURNAL_FOLD_AT events. The journal is written only
    # while this process has the database attached (DuckDB's file lock guards it),
    # and a process that attaches folds whatever a crashed holder left in it first,
    # so the events table is complete whenever anyone can read it. Entries are
    # length + crc32 framed; a torn last entry (a crash mid-write, the step never
    # returned) is dropped. Folding is idempotent (INSERT OR IGNORE on event_id), so
    # a crash between the fold's commit and the journal's truncation is harmless.

    def _open_journal(self) -> None:
        created = not self.journal_path.exists()
        fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._journal_fd = fd
        if created:
            _fsync_dir(self.root)  # the journal's entry in the folder survives power loss
        self._pending = []
        self._pending_bytes = 0
        if os.fstat(fd).st_size:
            # What a crashed holder left: fold its complete entries, then clear the file
            # even if only a torn entry was there, so that nothing new is appended
            # after a torn entry (recovery stops reading at the first bad frame).
            self._pending = _read_journal(fd)
            self._fold()
            os.ftruncate(fd, 0)
            os.fsync(fd)

    def _journal(self, row: list[Any]) -> None:
        fd = self._journal_fd
        assert fd is not None
        payload = pickle.dumps(row, protocol=5)
        entry = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, entry) != len(entry):
                raise OSError("short write")
            os.fdatasync(fd)
        except OSError as e:
            # Cut a partial entry off again: later entries must not follow a torn one,
            # or recovery would stop reading at it and drop them.
            os.ftruncate(fd, size)
            raise NbstepError(
                f"could not record step `{row[3]}` in {self.journal_path} ({e}); nothing was "
                "recorded. Check free disk space and permissions, then run the step again."
            ) from e
        self._pending.append(row)
        self._pending_bytes += len(entry)

    def _fold_if_due(self) -> None:
        """Fold a long journal; a failure here is reported, not raised.

        The steps are durable in the journal already, and the step that triggered the
        fold has returned its value; folding is retried before the next read of the
        table and at detach, where a lasting failure raises.
        """
        if len(self._pending) < JOURNAL_FOLD_AT and self._pending_bytes < JOURNAL_FOLD_BYTES:
            return
        try:
            self._fold()
        except NbstepError as e:
            warnings.warn(
                f"nbstep: {e} The steps are safe in {self.journal_path}; folding is retried "
                "before the store is next read.",
                RuntimeWarning,
                stacklevel=4,
            )

    def _fold(self) -> None:
        """Move journaled events into the events table; lock held, attached."""
        if not self._pending:
            return
        # A journal left by an nbstep of an older format has shorter rows: the columns
        # added since then are empty for those events.
        rows = [row + [None] * (_ROW_WIDTH - len(row)) for row in self._pending]
        con = self._con
        with self._transaction(con, "fold the journal into the events table"):
            for start in range(0, len(rows), 100):
                chunk = rows[start:start + 100]
                con.execute(
                    f"INSERT OR IGNORE INTO {ALIAS}.events VALUES "
                    + ",".join([_ROW_PLACEHOLDERS] * len(chunk)),
                    [value for row in chunk for value in row],
                )
        assert self._journal_fd is not None
        os.ftruncate(self._journal_fd, 0)
        os.fsync(self._journal_fd)
        self._pending = []
        self._pending_bytes = 0

    # -- schema ----------------------------------------------------------------

    def _check_schema(self) -> None:
        con = self._con
        tables = {
            row[0]
            for row in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [ALIAS]
            ).fetchall()
        }
        if not tables:
            with self._transaction(con, "create the store's tables"):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute(
                    f"INSERT INTO {ALIAS}.meta VALUES ('format_version', ?), ('gc_epoch', '0'), "
                    "('created_by', ?)",
                    [str(FORMAT_VERSION), f"nbstep {_version()}"],
                )
            return
        if "meta" not in tables or "events" not in tables:
            raise StoreFormatError(
                f"{self.db_path} is a DuckDB file but not an nbstep store (tables: "
                f"{', '.join(sorted(tables))}). Point NBSTEP_STORE at another directory."
            )
        row = con.execute(
            f"SELECT value FROM {ALIAS}.meta WHERE name = 'format_version'"
        ).fetchone()
        version = int(row[0]) if row else 0
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                f"{self.db_path} was written by a newer nbstep (store format {version}; this "
                f"nbstep {_version()} reads format {FORMAT_VERSION} and older). Upgrade nbstep "
                "(pip install -U nbstep); the store was not changed."
            )
        if version < FORMAT_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring an older store up to FORMAT_VERSION, in one transaction."""
        if version != 1:
            raise StoreFormatError(
                f"{self.db_path} has store format {version}, which this nbstep cannot "
                f"migrate (it reads formats 1 to {FORMAT_VERSION}). Move the store aside to "
                "start a new one."
            )
        con = self._con
        with self._transaction(con, f"migrate the store from format {version}"):
            # Format 2 adds a checksum for object files; format-1 records keep none and
            # are checked by size only, as before.
            con.execute(f"ALTER TABLE {ALIAS}.events ADD COLUMN checksum VARCHAR")
            con.execute(
                f"UPDATE {ALIAS}.meta SET value = ? WHERE name = 'format_version'",
                [str(FORMAT_VERSION)],
            )

    def _validate_cache(self) -> None:
        """Bring the namespace index up to date after (re-)attaching.

        The log is append-only between gcs, so when the gc epoch is unchanged the
        events after the last one this process knew are exactly what changed.
        Event ids are never reused: gc keeps the highest id it deleted as a floor.
        """
        row = self._con.execute(
            f"SELECT greatest((SELECT coalesce(max(event_id), 0) FROM {ALIAS}.events), "
            f"(SELECT coalesce(max(value::BIGINT), 0) FROM {ALIAS}.meta "
            "WHERE name = 'event_id_floor')), "
            f"(SELECT value FROM {ALIAS}.meta WHERE name = 'gc_epoch')"
        ).fetchone()
        known = (row[0], row[1])
        previous = self._known
        if previous is None or previous[1] != known[1] or known[0] < previous[0]:
            self._namespaces.clear()
        elif known[0] > previous[0] and self._namespaces:
            self._catch_up(previous[0])
        self._known = known
        self._max_event_id = row[0]

    def _catch_up(self, since: int) -> None:
        rows = self._con.execute(
            f"SELECT namespace, {_EVENT_COLUMNS_CACHED} FROM {ALIAS}.events "
            "WHERE event_id > ? ORDER BY event_id LIMIT 20001",
            [since],
        ).fetchall()
        if len(rows) > 20000:
            self._namespaces.clear()  # cheaper to reload what is used than to patch
            return
        for namespace, *event in rows:
            index = self._namespaces.get(namespace)
            if index is None:
                continue
            if event[1] == RECORDED:
                index[(event[2], event[3])] = _record_from_row(namespace, tuple(event))
            else:
                index.pop((event[2], event[3]), None)

    # -- reading ---------------------------------------------------------------

    def _namespace(self, con: Any, namespace: str) -> dict[tuple[str, int], Record]:
        index = self._namespaces.get(namespace)
        if index is None:
            self._fold()
            rows = con.execute(
                f"SELECT {_EVENT_COLUMNS_CACHED} FROM {ALIAS}.events WHERE namespace = ? "
                "QUALIFY row_number() OVER (PARTITION BY key, sequence ORDER BY event_id DESC) = 1",
                [namespace],
            ).fetchall()
            index = {
                (row[2], row[3]): _record_from_row(namespace, row)
                for row in rows
                if row[1] == RECORDED
            }
            self._namespaces[namespace] = index
        return index

    def lookup(self, namespace: str, key: str, sequence: int) -> Record | None:
        """The current record of one step occurrence, or None."""
        with self._db() as con:
            return self._namespace(con, namespace).get((key, sequence))

    def current(self, namespace: str) -> list[Record]:
        """Every current record of a namespace, in append order."""
        with self._db() as con:
            return sorted(self._namespace(con, namespace).values(), key=lambda r: r.event_id)

    def namespaces(self) -> list[str]:
        with self._db() as con:
            self._fold()
            rows = con.execute(
                f"SELECT DISTINCT namespace FROM {ALIAS}.events ORDER BY namespace"
            ).fetchall()
        return [row[0] for row in rows]

    def query_df(self, sql: str, params: list[Any] | None = None) -> Any:
        """Run a read-only query with the events table as ``events``; a DataFrame.

        ``sql`` may use ``{events}`` and ``{meta}`` placeholders for the tables.
        """
        with self._db() as con:
            self._fold()
            return con.execute(
                sql.format(events=f"{ALIAS}.events", meta=f"{ALIAS}.meta"), params or []
            ).df()

    def load_value(self, record: Record) -> Any:
        """Decode a record's value; a fresh object on every call."""
        from . import codecs

        try:
            result_json, result_blob = record.result_json, record.result_blob
            if result_json is None and result_blob is None and record.object_sha256 is None:
                # An inline value too big for the namespace index: read it now.
                result_json, result_blob = self._inline_value(record)
            if result_json is not None:
                return json.loads(result_json)
            if result_blob is not None:
                return codecs.decode(record.codec, result_blob)
            return self._load_object(record, codecs)
        except StepReplayError:
            raise
        except Exception as e:
            raise StepReplayError(
                f"cannot replay step `{record.key}` occurrence {record.sequence} in namespace "
                f"`{record.namespace}` (recorded {record.occurred_at}, codec {record.codec}): "
                f"{type(e).__name__}: {e}. Recompute it with rerun=True, or "
                f"step.forget({record.key!r}, namespace={record.namespace!r})."
            ) from e

    def _inline_value(self, record: Record) -> tuple[str | None, bytes | None]:
        with self._db() as con:
            self._fold()
            row = con.execute(
                f"SELECT result_json, result_blob FROM {ALIAS}.events WHERE event_id = ?",
                [record.event_id],
            ).fetchone()
        if row is None:
            raise StepReplayError(
                f"cannot replay step `{record.key}` occurrence {record.sequence} in namespace "
                f"`{record.namespace}`: its record (event {record.event_id}) was removed by "
                "`nbstep gc` while this process held it. Run the step again."
            )
        return row[0], row[1]

    def object_path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256

    def _load_object(self, record: Record, codecs: Any) -> Any:
        assert record.object_sha256 is not None
        path = self.object_path(record.object_sha256)
        where = (
            f"step `{record.key}` occurrence {record.sequence} in namespace "
            f"`{record.namespace}` (recorded {record.occurred_at})"
        )
        fix = (
            f"Recompute it with rerun=True, or step.forget({record.key!r}, "
            f"namespace={record.namespace!r}); `nbstep verify` checks every object file."
        )
        try:
            f = open(path, "rb")
        except FileNotFoundError as e:
            raise StepReplayError(
                f"cannot replay {where}: its object file {path} is missing. {fix}"
            ) from e
        with f:
            size = os.fstat(f.fileno()).st_size
            if size != record.size_bytes:
                raise StepReplayError(
                    f"cannot replay {where}: its object file {path} has {size} bytes, "
                    f"the record says {record.size_bytes} (damaged or truncated). {fix}"
                )
            if size == 0:
                return codecs.decode(record.codec, b"")
            # A private copy-on-write mapping: decoded arrays can be writable views into it
            # (no 80 MB copy), and writes never reach the file or another decode.
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        if record.checksum is not None and _checksum(mapped) != record.checksum:
            raise StepReplayError(
                f"cannot replay {where}: its object file {path} does not match the checksum "
                f"recorded with it (the file was damaged after it was written). {fix}"
            )
        try:
            return codecs.decode(record.codec, mapped)
        except Exception as e:
            raise StepReplayError(
                f"cannot replay {where}: its object file {path} does not decode as "
                f"{record.codec} ({type(e).__name__}: {e}). {fix}"
            ) from e

    # -- writing ---------------------------------------------------------------

    def write_object(self, data: Any) -> str:
        """Write a value's bytes as a content-addressed file; returns its sha256."""
        return self._write_object(data)[0]

    def _write_object(self, data: Any) -> tuple[str, str]:
        """Write an object file; returns its sha256 (its name) and its xxh3-128.

        The file is complete and fsynced under its final name before this returns,
        so an event that points to it may be written. Large values are hashed in a
        thread while the main thread writes them to a temp file (hashlib and
        os.write both release the GIL), so the sha256 costs little on top of the
        write. The xxh3-128 checksum (~10 GB/s) is what every replay verifies.
        """
        view = memoryview(data).cast("B")
        checksum = _checksum(view)
        if len(view) < PARALLEL_HASH_AT:
            digest = hashlib.sha256(view).hexdigest()
            if self._reuse_object(digest, len(view), checksum):
                return digest, checksum
            tmp = self._write_tmp(view)
        else:
            hasher = hashlib.sha256()
            worker = threading.Thread(target=hasher.update, args=(view,), daemon=True)
            worker.start()
            try:
                tmp = self._write_tmp(view)
            finally:
                worker.join()
            digest = hasher.hexdigest()
            if self._reuse_object(digest, len(view), checksum):
                tmp.unlink(missing_ok=True)
                return digest, checksum
        final = self.object_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        return digest, checksum

    def _reuse_object(self, digest: str, size: int, checksum: str) -> bool:
        """True if the object file already exists intact (and is kept for the new event).

        A damaged file of the right size is not reused: the caller writes it anew,
        so recording a step again repairs what `nbstep verify` reported.
        """
        final = self.object_path(digest)
        try:
            with open(final, "rb") as f:
                if os.fstat(f.fileno()).st_size != size:
                    return False
                if size:
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    if _checksum(mapped) != checksum:
                        return False
            # Refresh its time so gc's grace period covers the event about to point at
            # it, even if the file had been unreferenced for long.
            os.utime(final)
            return True
        except FileNotFoundError:
            return False

    def _write_tmp(self, view: memoryview) -> Path:
        tmp_dir = self.objects / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"{os.getpid()}.{random.getrandbits(64):016x}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:written + WRITE_CHUNK])
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp

    def append(
        self,
        namespace: str,
        key: str,
        sequence: int,
        *,
        identity: str,
        input_hash: str,
        codec: str,
        data: Any,
        duration_s: float | None,
        reason: str,
        details: dict[str, Any] | None = None,
        expected_event_id: int | None = None,
    ) -> tuple[Record, bool]:
        """Record a step, unless the slot changed since the caller looked.

        ``expected_event_id`` is the event id of the current record the caller saw
        (None: it saw none). If the slot's current record is another one, nothing is
        written and ``(that record, False)`` comes back: another process recorded the
        step meanwhile, and the caller decides (the seed's idempotent append).
        Otherwise the event is committed durably and ``(new record, True)`` returned.
        """
        size = len(memoryview(data).cast("B")) if codec != "json" else len(data)
        object_sha256 = checksum = None
        result_json = None
        result_blob = None
        if codec == "json":
            result_json = bytes(data).decode("utf-8")
        elif size > self.inline_limit:
            object_sha256, checksum = self._write_object(data)
        else:
            result_blob = bytes(data)
        details_json = json.dumps(details, sort_keys=True) if details else None
        now_us = time.time_ns() // 1000
        with self._db() as con:
            index = self._namespace(con, namespace)
            current = index.get((key, sequence))
            if current is not None and current.event_id != expected_event_id:
                return current, False
            # (No current record although the caller saw one: it was forgotten meanwhile,
            # and the new value stands.)
            if object_sha256 is not None and not self.object_path(object_sha256).exists():
                # gc removed a file we were about to reuse; it deletes only while attached,
                # which we are now, so writing it again here closes that window.
                object_sha256, checksum = self._write_object(data)
            event_id = self._max_event_id + 1
            self._journal([
                event_id, RECORDED, namespace, key, sequence, identity, input_hash, codec,
                result_json, result_blob, object_sha256, size, duration_s, now_us, reason,
                details_json, os.getpid(), _HOST, checksum,
            ])
            cached = size <= CACHED_VALUE_LIMIT
            record = Record(
                event_id=event_id, namespace=namespace, key=key, sequence=sequence,
                identity=identity, input_hash=input_hash, codec=codec,
                result_json=result_json if cached else None,
                result_blob=result_blob if cached else None,
                object_sha256=object_sha256, size_bytes=size, duration_s=duration_s,
                occurred_at_us=now_us, reason=reason, details=details, checksum=checksum,
            )
            index[(key, sequence)] = record
            self._committed(event_id)
            self._fold_if_due()
            return record, True

    def _committed(self, max_event_id: int) -> None:
        self._max_event_id = max_event_id
        if self._known is not None:
            self._known = (max_event_id, self._known[1])

    def forget(self, namespace: str | None, key: str | None = None) -> int:
        """Append a 'forgotten' event for each matching current record.

        ``namespace=None`` means every namespace. Returns how many were forgotten.
        """
        with self._db() as con:
            self._fold()
            where = ["1 = 1"]
            params: list[Any] = []
            if namespace is not None:
                where.append("namespace = ?")
                params.append(namespace)
            if key is not None:
                where.append("key = ?")
                params.append(key)
            rows = con.execute(
                f"SELECT namespace, key, sequence, kind FROM {ALIAS}.events "
                f"WHERE {' AND '.join(where)} "
                "QUALIFY row_number() OVER "
                "(PARTITION BY namespace, key, sequence ORDER BY event_id DESC) = 1",
                params,
            ).fetchall()
            targets = [row[:3] for row in rows if row[3] == RECORDED]
            if not targets:
                return 0
            first = self._max_event_id + 1
            now_us = time.time_ns() // 1000
            with self._transaction(con, "forget steps"):
                con.executemany(
                    f"INSERT INTO {ALIAS}.events (event_id, kind, namespace, key, sequence, "
                    "occurred_at, reason, pid, host) VALUES "
                    "(?, ?, ?, ?, ?, make_timestamptz(?), 'forget', ?, ?)",
                    [[first + i, FORGOTTEN, ns, k, seq, now_us, os.getpid(), _HOST]
                     for i, (ns, k, seq) in enumerate(targets)],
                )
            for ns, k, seq in targets:
                cached = self._namespaces.get(ns)
                if cached is not None:
                    cached.pop((k, seq), None)
            self._committed(first + len(targets) - 1)
            return len(targets)

    # -- housekeeping ----------------------------------------------------------

    def gc(
        self, *, dry_run: bool = False, grace_seconds: float = TMP_GRACE_SECONDS
    ) -> dict[str, int]:
        """Drop superseded and forgotten records and unreferenced object files.

        Object and temp files younger than ``grace_seconds`` are kept even when no
        event references them: another process may be about to commit the event
        that points to one.
        """
        report = {"events_dropped": 0, "objects_removed": 0, "bytes_freed": 0, "tmp_removed": 0}
        with self._db() as con:
            self._fold()
            stale = con.execute(
                f"SELECT event_id FROM {ALIAS}.events "
                "QUALIFY row_number() OVER "
                "(PARTITION BY namespace, key, sequence ORDER BY event_id DESC) > 1 "
                f"UNION ALL SELECT event_id FROM {ALIAS}.events e WHERE kind = '{FORGOTTEN}' "
                "AND event_id = (SELECT max(event_id) FROM "
                f"{ALIAS}.events x WHERE x.namespace = e.namespace AND x.key = e.key "
                "AND x.sequence = e.sequence)"
            ).fetchall()
            stale_ids = sorted({row[0] for row in stale})
            report["events_dropped"] = len(stale_ids)
            live = {
                row[0]
                for row in con.execute(
                    f"SELECT DISTINCT object_sha256 FROM {ALIAS}.events WHERE "
                    "object_sha256 IS NOT NULL AND NOT list_contains(?::BIGINT[], event_id)",
                    [stale_ids],
                ).fetchall()
            }
            if stale_ids and not dry_run:
                with self._transaction(con, "drop superseded records"):
                    con.execute(
                        f"DELETE FROM {ALIAS}.events WHERE event_id IN "
                        "(SELECT unnest(?::BIGINT[]))",
                        [stale_ids],
                    )
                    epoch = int(self._known[1] if self._known else 0) + 1
                    con.execute(
                        f"UPDATE {ALIAS}.meta SET value = ? WHERE name = 'gc_epoch'", [str(epoch)]
                    )
                    # Never hand out a deleted event's id again: a step computing since
                    # before this gc compares ids to tell whether its slot changed.
                    con.execute(
                        f"INSERT OR REPLACE INTO {ALIAS}.meta VALUES ('event_id_floor', ?)",
                        [str(self._max_event_id)],
                    )
                self._namespaces.clear()
                self._validate_cache()
            cutoff = time.time() - grace_seconds
            for path in self._object_files():
                if path.parent.name == "tmp":
                    if path.stat().st_mtime < cutoff:
                        report["tmp_removed"] += 1
                        report["bytes_freed"] += path.stat().st_size
                        if not dry_run:
                            path.unlink(missing_ok=True)
                    continue
                if path.name in live:
                    continue
                stat = path.stat()
                if stat.st_mtime >= cutoff:
                    continue
                report["objects_removed"] += 1
                report["bytes_freed"] += stat.st_size
                if not dry_run:
                    path.unlink(missing_ok=True)
            if not dry_run and stale_ids:
                con.execute(f"CHECKPOINT {ALIAS}")
        return report

    def _object_files(self) -> Iterator[Path]:
        if not self.objects.is_dir():
            return
        for folder in self.objects.iterdir():
            if folder.is_dir():
                yield from (p for p in folder.iterdir() if p.is_file())


class _Transaction:
    """BEGIN ... COMMIT; on any error ROLLBACK and re-raise with what was being done."""

    def __init__(self, store: Store, con: Any, what: str) -> None:
        self.store, self.con, self.what = store, con, what

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            try:
                self.con.execute("COMMIT")
            except Exception as e:
                self._rollback()
                raise NbstepError(
                    f"could not {self.what}: the commit to {self.store.db_path} failed "
                    f"({type(e).__name__}: {e}); nothing was recorded. Check free disk space "
                    "and permissions, then run the step again."
                ) from e
            return False
        self._rollback()
        if isinstance(exc, Exception) and not isinstance(exc, NbstepError):
            raise NbstepError(
                f"could not {self.what} in {self.store.db_path} "
                f"({type(exc).__name__}: {exc}); nothing was recorded."
            ) from exc
        return False

    def _rollback(self) -> None:
        try:
            self.con.execute("ROLLBACK")
        except Exception:
            # The transaction is already gone (DuckDB aborts it on some errors); the
            # original error is what the caller needs and is re-raised by __exit__.
            pass


def _read_journal(fd: int) -> list[list[Any]]:
    """The complete entries of a journal file; a torn or damaged tail is dropped."""
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    rows = []
    offset = 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        payload = data[offset + _FRAME.size:offset + _FRAME.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        rows.append(pickle.loads(payload))
        offset += _FRAME.size + length
    return rows


def _checksum(data: Any) -> str:
    """xxh3-128 of an object file's bytes: fast enough to check on every replay."""
    import xxhash

    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version() -> str:
    from . import __version__

    return __version__


_HOST = socket.gethostname()


# Objects a forked child inherited and must neither use nor destroy.
_inherited: list[Any] = []


_forking: list[Store] = []


def _before_fork() -> None:
    # Hold every store's lock across fork(), so no store is mid-operation (in the
    # linger thread, say) in the child, where that thread does not exist. And let go
    # of the file first: DuckDB's process-wide registry of attached files is copied
    # into the child, which could then never attach the store itself.
    _forking[:] = list(_stores)
    for store in _forking:
        store._lock.acquire()
        try:
            store._detach()
        except Exception as e:
            warnings.warn(f"nbstep: could not detach {store.db_path} before fork: {e}",
                          RuntimeWarning, stacklevel=2)


def _after_fork_in_parent() -> None:
    for store in _forking:
        store._lock.release()
    _forking.clear()


def _after_fork_in_child() -> None:
    for store in _forking:
        store._after_fork_in_child()
    _forking.clear()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


@atexit.register
def _close_all() -> None:
    for store in list(_stores):
        try:
            store.close()
        except Exception:
            pass  # interpreter shutdown: the OS releases the file lock anyway
