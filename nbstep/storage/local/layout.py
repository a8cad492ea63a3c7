"""The store directory: what is where, its format, and making it.

::

    .nbstep/
      format               "nbstep store 3": the layout version, readable without DuckDB
      logs/<id>.log        one namespace's events, appended (the records themselves)
      logs/<id>.idx        where each current slot's event is in its log (derived)
      objects/ab/<sha256>  values above inline_limit bytes, content-addressed
      objects/tmp/         value files being written (named after their writer)
      objects.lock         held shared by writers of value files, exclusively by gc
      steps.duckdb         the events as a queryable table (derived from the logs)
      steps.lock           flock()ed by the process that has steps.duckdb attached
      lock.want            touched by a process waiting for steps.duckdb
      quarantine/          damaged bytes and files, set aside, never deleted
      .gitignore           "*": a store is never committed by accident
"""

from __future__ import annotations

import os
from pathlib import Path

from nbstep.errors import NbstepError, StoreFormatError

# Bump on a change of the layout or of the log format, with an upgrade path, and
# commit a store of the new format under tests/stores/ (tests/stores/make_store.py).
# 1, 2: nbstep 0.1 (events in DuckDB). 3: namespace logs; DuckDB mirrors them.
FORMAT_VERSION = 3
FORMAT_NAME = "format"
DB_NAME = "steps.duckdb"  # the DuckDB mirror of the logs (derived, rebuilt when damaged)
_FORMAT_TEXT = f"nbstep store {FORMAT_VERSION}\n"


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.objects = root / "objects"
        self.quarantine = root / "quarantine"
        self.format = root / FORMAT_NAME

    def make(self) -> None:
        """Create the folders (and .gitignore) a store needs; clear errors if it cannot."""
        for path, what in ((self.root, "store directory"), (self.logs, "log folder"),
                           (self.objects, "object folder")):
            if path.exists() and not path.is_dir():
                raise NbstepError(
                    f"the {what} {path} exists and is not a directory. "
                    + ("Set NBSTEP_STORE to a directory." if path == self.root else
                       f"Move {path} aside; nbstep makes the folder again.")
                )
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".gitignore", "x") as f:
                f.write("# created by nbstep: a store is local state, never committed\n*\n")
        except FileExistsError:
            pass
        except OSError as e:
            raise NbstepError(
                f"cannot create the store directory {self.root}: {e.strerror}. "
                "Set NBSTEP_STORE to a writable directory."
            ) from e

    def version(self) -> int | None:
        """The store's format from its ``format`` file; None when there is none."""
        try:
            text = self.format.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreFormatError(
                f"cannot read {self.format} ({e.strerror}); check its permissions") from e
        words = text.split()
        if len(words) != 3 or words[:2] != ["nbstep", "store"] or not words[2].isdigit():
            raise StoreFormatError(
                f"{self.format} should say `nbstep store {FORMAT_VERSION}` but says "
                f"{text[:60]!r}: it was damaged or written by something else. If this "
                f"directory is an nbstep store of this version, write that line back into "
                "the file; otherwise point NBSTEP_STORE elsewhere."
            )
        version = int(words[2])
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                f"{self.root} was written by a newer nbstep (store format {version}; this "
                f"nbstep reads format {FORMAT_VERSION} and older). Upgrade nbstep "
                "(pip install -U nbstep); the store was not changed."
            )
        return version

    def write_format(self) -> None:
        tmp = self.format.with_name(f".{FORMAT_NAME}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_FORMAT_TEXT)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.format)
        from nbstep.storage.objects import fsync_dir

        fsync_dir(self.root)
