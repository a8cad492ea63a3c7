"""Content-addressed value files: ``objects/ab/<sha256>``, written whole or not at all.

A value larger than ``inline_limit`` lives in a file named by the sha256 of its bytes.
Writing: a temporary file in ``objects/tmp/`` is written, fsynced and renamed into
place (and the folder fsynced) *before* the record that points to it is written, so
no record ever points at a partial file; equal values share one file. Reading: a
private copy-on-write mapping (decoders can take writable views into it, and writes
never reach the file), checked against the xxh3-128 checksum recorded with it
(~10 GB/s, cheap enough for every replay). What a crash leaves behind (temporary
files, files no record references) is removed by gc, never by a reader.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import mmap
import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbstep.codecs.streamed import Streamed

# Values at least this large are written first and hashed while the file is fsynced
# (hashlib and fsync both release the GIL), so the sha256 costs little on top.
PARALLEL_HASH_AT = 4 * 1024 * 1024
WRITE_CHUNK = 64 * 1024 * 1024
READ_CHUNK = 8 * 1024 * 1024
TMP = "tmp"


class Damaged(Exception):
    """An object file is missing, of the wrong size, or not what was written."""


def checksum(data: Any) -> str:
    """xxh3-128 of an object file's bytes: fast enough to check on every replay."""
    import xxhash

    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(path: Path, parts: list[memoryview]) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        for part in parts:
            part = part.cast("B") if part.format != "B" else part
            written = 0
            while written < part.nbytes:
                written += os.write(fd, part[written:written + WRITE_CHUNK])
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_while_syncing(path: Path, parts: list[memoryview] | None) -> tuple[str, str]:
    """(sha256, xxh3-128 checksum) of a just-written file, computed while another
    thread fsyncs it: from ``parts`` when its bytes are still in memory, else read
    back from the page cache a piece at a time (so memory does not grow by the
    file's size). hashlib, xxhash, reads and fsync all release the GIL."""
    import xxhash

    failure: list[BaseException] = []

    def sync() -> None:
        try:
            _fsync_file(path)
        except BaseException as e:  # raised below, in the caller's thread
            failure.append(e)

    syncing = threading.Thread(target=sync, name="nbstep-fsync", daemon=True)
    syncing.start()
    sha, xxh = hashlib.sha256(), xxhash.xxh3_128()
    try:
        if parts is not None:
            for part in parts:
                sha.update(part)
                xxh.update(part)
        else:
            buffer = bytearray(READ_CHUNK)
            view = memoryview(buffer)
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buffer):
                    sha.update(view[:n])
                    xxh.update(view[:n])
    finally:
        syncing.join()
    if failure:
        raise failure[0]
    return sha.hexdigest(), "xxh3-128:" + xxh.hexdigest()


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot; Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last ")".
    return stat[stat.rindex(b")") + 2:].split()[19].decode()


def _owner() -> str:
    """This process as a temp file's owner: its pid and start time."""
    return _owner_of(os.getpid())  # a forked child asks for its own pid


@functools.cache
def _owner_of(pid: int) -> str:
    return f"{pid}.{_start_time(pid) or 0}"


def _owner_alive(name: str) -> bool:
    """Whether the process that named a temp file ``<pid>.<start>.<random>`` still runs."""
    parts = name.split(".")
    if len(parts) < 3 or not parts[0].isdigit():
        return False  # an older nbstep's name (<pid>.<random>): gc's grace period decides
    pid, start = int(parts[0]), parts[1]
    now = _start_time(pid)
    if now is not None:
        return now == start
    try:
        os.kill(pid, 0)  # no /proc: a live process with that pid (it may be another one)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ObjectFiles:
    """The ``objects/`` folder of a store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock_path = root.parent / "objects.lock"

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Hold off gc while a value file is written and its record appended.

        A shared lock: writers do not wait for each other. gc takes it exclusively
        while it decides which files nothing references and removes them, so it never
        removes a file a record is about to point to.
        """
        fd = self._lock_fd()
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No writer between its value file and its record (for gc)."""
        fd = self._lock_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _lock_fd(self) -> int:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    # -- writing ---------------------------------------------------------------------

    def write(self, data: Any) -> tuple[str, str]:
        """Write a value's bytes; returns their sha256 (the file's name) and xxh3-128.

        ``data`` is a buffer or a :class:`~nbstep.codecs.streamed.Streamed` (written by
        its codec straight to the file). The file is complete and fsynced under its
        final name before this returns.
        """
        streamed = data if isinstance(data, Streamed) else None
        size = streamed.nbytes if streamed is not None else memoryview(data).nbytes
        if streamed is None and size < PARALLEL_HASH_AT:
            view = memoryview(data).cast("B")
            digest_of_view = checksum(view)
            digest = hashlib.sha256(view).hexdigest()
            if self._reuse(digest, size, digest_of_view):
                return digest, digest_of_view
            tmp = self._new_tmp()
            try:
                _write_all(tmp, [view])
                _fsync_file(tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        else:
            # Large: write it first, then hash while the file is fsynced (the disk
            # flush is the long wait; hashing 80 MB takes 45 ms of it, not on top).
            tmp = self._new_tmp()
            try:
                if streamed is not None:
                    streamed.write_to(str(tmp))
                else:
                    _write_all(tmp, [memoryview(data).cast("B")])
                actual = tmp.stat().st_size
                if actual != size:
                    raise OSError(errno.EIO, f"the codec wrote {actual} bytes, not the {size} "
                                  "it announced (an nbstep bug: please report it)")
                parts = streamed.parts() if streamed is not None else [memoryview(data)]
                digest, digest_of_view = _hash_while_syncing(tmp, parts)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            if self._reuse(digest, size, digest_of_view):
                tmp.unlink(missing_ok=True)
                return digest, digest_of_view
        final = self.path(digest)
        _folder(final.parent)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return digest, digest_of_view

    def _reuse(self, digest: str, size: int, expected: str) -> bool:
        """True if the file already exists intact (and is kept for the new record).

        A damaged file of the right size is not reused: the caller writes it anew,
        so recording a step again repairs what `nbstep verify` reported.
        """
        final = self.path(digest)
        try:
            with open(final, "rb") as f:
                if os.fstat(f.fileno()).st_size != size:
                    return False
                if size:
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    if checksum(mapped) != expected:
                        return False
            # Refresh its time so gc's grace period covers the record about to point
            # at it, even if the file had been unreferenced for long.
            os.utime(final)
            return True
        except FileNotFoundError:
            return False

    def _new_tmp(self) -> Path:
        """A new, empty temporary file named for this process (gc spares live owners)."""
        tmp_dir = self.root / TMP
        _folder(tmp_dir)
        tmp = tmp_dir / f"{_owner()}.{random.getrandbits(64):016x}"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        return tmp

    # -- reading ---------------------------------------------------------------------

    def open(self, sha256: str, size: int, expected: str | None) -> Any:
        """The file's bytes as a private copy-on-write mapping (``b""`` when empty).

        Raises :class:`Damaged` saying what is wrong: missing, another size, or (when
        ``expected`` is given) not matching its checksum.
        """
        path = self.path(sha256)
        try:
            f = open(path, "rb")
        except FileNotFoundError as e:
            raise Damaged(f"its object file {path} is missing") from e
        except OSError as e:
            raise Damaged(f"its object file {path} cannot be read ({e.strerror})") from e
        with f:
            actual = os.fstat(f.fileno()).st_size
            if actual != size:
                raise Damaged(f"its object file {path} has {actual} bytes, the record says "
                              f"{size} (damaged or truncated)")
            if size == 0:
                return b""
            try:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            except (OSError, ValueError) as e:
                raise Damaged(f"its object file {path} cannot be mapped ({e})") from e
        if expected is not None and checksum(mapped) != expected:
            raise Damaged(f"its object file {path} does not match the checksum recorded with "
                          "it (the file was damaged after it was written)")
        return mapped

    def verify(self, sha256: str, size: int) -> str | None:
        """What is wrong with a file, by its full sha256 (slow, for `nbstep verify`)."""
        path = self.path(sha256)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return f"its object file {path} is missing"
        digest = hashlib.sha256()
        actual = 0
        with f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                actual += len(chunk)
        if actual != size:
            return f"its object file {path} has {actual} bytes, the record says {size}"
        if digest.hexdigest() != sha256:
            return f"its object file {path} does not match its sha256 (damaged)"
        return None

    # -- housekeeping ----------------------------------------------------------------

    def files(self) -> Iterator[Path]:
        """Every value file (not the temporary ones)."""
        yield from self._files(tmp=False)

    def temporary(self) -> Iterator[Path]:
        """Half-written files: ``objects/tmp/*``."""
        yield from self._files(tmp=True)

    def _files(self, *, tmp: bool) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if folder.is_dir() and (folder.name == TMP) == tmp:
                yield from (p for p in folder.iterdir() if p.is_file())

    def sweep(self, live: set[str], cutoff: float, *, dry_run: bool) -> dict[str, int]:
        """Remove stale temporary files and value files ``live`` does not name.

        Files modified after ``cutoff`` (a time.time()) are kept: a writer may be about
        to commit a record that points to one; so are temporary files whose writer still
        runs, however old. Returns the counts for a gc report.
        """
        report = {"objects_removed": 0, "tmp_removed": 0, "bytes_freed": 0,
                  "young_kept": 0, "young_kept_bytes": 0}
        for path in self.temporary():
            if _owner_alive(path.name):
                continue  # a writer is writing it, however long that takes
            stat = _stat(path)
            if stat is not None and stat.st_mtime < cutoff:
                report["tmp_removed"] += 1
                report["bytes_freed"] += stat.st_size
                if not dry_run:
                    path.unlink(missing_ok=True)
        for path in self.files():
            if path.name in live:
                continue
            stat = _stat(path)
            if stat is None:
                continue
            if stat.st_mtime >= cutoff:
                report["young_kept"] += 1
                report["young_kept_bytes"] += stat.st_size
                continue
            report["objects_removed"] += 1
            report["bytes_freed"] += stat.st_size
            if not dry_run:
                path.unlink(missing_ok=True)
        return report



def _folder(path: Path) -> None:
    """Make a folder of the store; a file in its place is an error that says so."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        import errno

        raise OSError(errno.ENOTDIR, f"{path} is a file where a folder belongs (move it "
                                     "aside; nbstep makes the folder again)") from None


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None  # removed meanwhile (another gc)
