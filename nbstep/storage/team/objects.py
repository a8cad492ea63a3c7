"""Where a team store keeps values above ``inline_limit``: content-addressed files that
every machine of the team reaches.

``objects = "/shared/nbstep"``: a directory shared by the team (NFS, SMB, a
mounted bucket), laid out as a local store's ``objects/`` folder
(:mod:`nbstep.storage.objects`: written to a temp file, fsynced, renamed).
``objects = "s3://bucket/prefix"`` (or ``gs://``, ``az://``): an object store through
obstore, written with a create-only PUT (an existing object is never overwritten),
with a local cache of the values this machine wrote or read, checked against their
checksum on every read, so replaying a large value does not download it again.

Either way a value is named by the sha256 of its bytes and checked against the
xxh3-128 checksum its record carries; gc is coordinated through the server (an
advisory lock), not the file system, because the team's machines share no lock.
"""

from __future__ import annotations

import errno
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbstep.errors import TeamServerError
from nbstep.storage.objects import Damaged, ObjectFiles, checksum


class SharedDirectory:
    """A directory every machine mounts: ``<dir>/objects/ab/<sha256>``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = ObjectFiles(folder / "objects")
        self.root = self.files.root  # for StoreWriteError's message
        self.location = str(folder)

    def write(self, data: Any) -> tuple[str, str]:
        return self.files.write(data)

    def open(self, sha256: str, size: int, expected: str | None) -> Any:
        return self.files.open(sha256, size, expected)

    def path(self, sha256: str) -> str:
        return str(self.files.path(sha256))

    def verify(self, sha256: str, size: int) -> str | None:
        return self.files.verify(sha256, size)

    def listing(self) -> Iterator[tuple[str, int, float]]:
        """(sha256, size, modified time) of every value file."""
        for path in self.files.files():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            yield path.name, stat.st_size, stat.st_mtime

    def sweep(self, live: set[str], cutoff: float, *, dry_run: bool) -> dict[str, int]:
        return self.files.sweep(live, cutoff, dry_run=dry_run)

    def set_aside(self, sha256: str) -> bool:
        """Move a damaged value file to ``<dir>/quarantine/``; False if it is gone."""
        path = self.files.path(sha256)
        if not path.is_file():
            return False
        target = self.folder / "quarantine"
        target.mkdir(parents=True, exist_ok=True)
        path.replace(target / f"{sha256}.{time.strftime('%Y%m%dT%H%M%S')}")
        return True


class CloudObjects:
    """An object store (``s3://``, ``gs://``, ``az://``) through obstore, with a local
    cache of the values this machine has written or read."""

    def __init__(self, url: str, cache: Path) -> None:
        try:
            import obstore.store
        except ImportError as e:
            raise TeamServerError(
                f"objects = {url!r} needs obstore, which is not installed ({e}). Install "
                "it with pip install 'nbstep[team]'."
            ) from e
        self.url = url.rstrip("/")
        self.root = self.url
        self.location = self.url
        try:
            self.store = obstore.store.from_url(self.url)
        except Exception as e:
            raise TeamServerError(
                f"objects = {url!r} cannot be opened ({type(e).__name__}: {e}). Check the "
                "URL and the credentials in the environment (AWS_*, GOOGLE_*, AZURE_*)."
            ) from e
        self.cache = ObjectFiles(cache)

    @staticmethod
    def key(sha256: str) -> str:
        return f"objects/{sha256[:2]}/{sha256}"

    def path(self, sha256: str) -> str:
        return f"{self.url}/{self.key(sha256)}"

    def write(self, data: Any) -> tuple[str, str]:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        view = memoryview(data).cast("B")
        digest = checksum(view)
        sha256 = hashlib.sha256(view).hexdigest()
        try:
            head = obstore.head(self.store, self.key(sha256))
        except FileNotFoundError:
            head = None
        except Exception as e:
            raise self._failure("look for", sha256, e) from e
        if head is None or head["size"] != len(view):
            try:
                obstore.put(self.store, self.key(sha256), view,
                            mode="create" if head is None else "overwrite")
            except (AlreadyExistsError, PreconditionError):
                pass  # another machine wrote the same bytes meanwhile
            except Exception as e:
                raise self._failure("write", sha256, e) from e
        try:
            self.cache.write(view)
        except OSError:
            pass  # the cache is an optimisation: the value is safe in the object store
        return sha256, digest

    def _failure(self, doing: str, sha256: str, error: Exception) -> OSError:
        return OSError(errno.EIO, f"could not {doing} {self.path(sha256)} "
                                  f"({type(error).__name__}: {error})")

    def open(self, sha256: str, size: int, expected: str | None) -> Any:
        try:
            return self.cache.open(sha256, size, expected)
        except Damaged:
            pass  # not cached (or damaged there): fetch it
        import obstore

        try:
            data = obstore.get(self.store, self.key(sha256)).bytes()
        except FileNotFoundError as e:
            raise Damaged(f"its object {self.path(sha256)} is missing") from e
        except Exception as e:
            raise Damaged(f"its object {self.path(sha256)} cannot be read "
                          f"({type(e).__name__}: {e})") from e
        view = memoryview(data)
        if len(view) != size:
            raise Damaged(f"its object {self.path(sha256)} has {len(view)} bytes, the record "
                          f"says {size} (damaged or truncated)")
        if expected is not None and checksum(view) != expected:
            raise Damaged(f"its object {self.path(sha256)} does not match the checksum "
                          "recorded with it (damaged after it was written)")
        try:
            self.cache.write(view)
        except OSError:
            pass  # the cache is an optimisation
        return bytes(view)

    def verify(self, sha256: str, size: int) -> str | None:
        import obstore

        try:
            data = obstore.get(self.store, self.key(sha256)).bytes()
        except FileNotFoundError:
            return f"its object {self.path(sha256)} is missing"
        except Exception as e:
            return f"its object {self.path(sha256)} cannot be read ({type(e).__name__}: {e})"
        if len(data) != size:
            return f"its object {self.path(sha256)} has {len(data)} bytes, the record says {size}"
        if hashlib.sha256(memoryview(data)).hexdigest() != sha256:
            return f"its object {self.path(sha256)} does not match its sha256 (damaged)"
        return None

    def listing(self) -> Iterator[tuple[str, int, float]]:
        import obstore

        for batch in obstore.list(self.store, "objects/"):
            for meta in batch:
                name = meta["path"].rsplit("/", 1)[-1]
                yield name, int(meta["size"]), meta["last_modified"].timestamp()

    def sweep(self, live: set[str], cutoff: float, *, dry_run: bool) -> dict[str, int]:
        import obstore

        report = {"objects_removed": 0, "tmp_removed": 0, "bytes_freed": 0,
                  "young_kept": 0, "young_kept_bytes": 0}
        doomed = []
        for name, size, modified in self.listing():
            if name in live:
                continue
            if modified >= cutoff:
                report["young_kept"] += 1
                report["young_kept_bytes"] += size
                continue
            report["objects_removed"] += 1
            report["bytes_freed"] += size
            doomed.append(self.key(name))
        if doomed and not dry_run:
            obstore.delete(self.store, doomed)
        for path in self.cache.files():
            if path.name not in live and not dry_run:
                path.unlink(missing_ok=True)  # the local cache follows the store
        return report

    def set_aside(self, sha256: str) -> bool:
        """Copy a damaged object under ``quarantine/`` and remove it; False if gone."""
        import obstore

        try:
            obstore.copy(self.store, self.key(sha256),
                         f"quarantine/{sha256}.{time.strftime('%Y%m%dT%H%M%S')}")
            obstore.delete(self.store, self.key(sha256))
        except FileNotFoundError:
            return False
        return True


def open_objects(setting: str | None, cache: Path) -> SharedDirectory | CloudObjects | None:
    """The team's object store from the ``objects`` setting (None: not set)."""
    from nbstep.settings import is_cloud_url

    if setting is None:
        return None
    if is_cloud_url(setting):
        return CloudObjects(setting, cache)
    return SharedDirectory(Path(setting).expanduser())
