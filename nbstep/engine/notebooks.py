"""Which notebook a ``nb:<id>`` namespace belongs to: its path, kept in the store.

The mapping lives in the store itself, in the reserved namespace ``nbstep:notebooks``:
one record per notebook namespace, key = the namespace (``nb:<id>``), value =
``{"path": <path relative to the store's root>}``, recorded again when the path
changes. Both backends keep it as they keep any record (docs/record-format.md);
``nbstep ls`` hides the namespace and shows each notebook's path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from nbstep.core import notebook_id
from nbstep.core.record import NewRecord

if TYPE_CHECKING:
    from nbstep.storage import StepStore

MAPPING = "nbstep:notebooks"


def paths(store: StepStore) -> dict[str, str]:
    """namespace -> the path (relative to the store's root) recorded for it."""
    found = {}
    for record in store.current(MAPPING):
        value = store.read(record)
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            found[record.key] = value["path"]
    return found


def recorded_path(store: StepStore, namespace: str) -> str | None:
    record = store.lookup(MAPPING, namespace, 1)
    if record is None:
        return None
    value = store.read(record)
    return value.get("path") if isinstance(value, dict) else None


def record_path(store: StepStore, namespace: str, path: str) -> None:
    """Record ``namespace``'s notebook path (nothing if it is recorded already)."""
    from nbstep import codecs
    from nbstep.hashing import input_hash, step_identity

    for _attempt in range(3):
        current = store.lookup(MAPPING, namespace, 1)
        if current is not None and (store.read(current) or {}).get("path") == path:
            return
        encoded = codecs.encode({"path": path})
        digest = input_hash(path)
        new = NewRecord(MAPPING, namespace, 1, step_identity(MAPPING, namespace, 1, digest),
                        digest, encoded.codec, encoded.data, None, "notebook path")
        _record, written = store.append(new, None if current is None else current.event_id)
        if written:
            return


def is_copy(root: Path, recorded: str | None, this_file: str, the_id: str) -> str | None:
    """The other file, when ``this_file`` is a copy of the notebook recorded at
    ``recorded`` (both carry ``the_id``); else None."""
    if recorded is None:
        return None
    other = (root / recorded).resolve()
    if other == Path(this_file).resolve() or not other.is_file():
        return None
    return str(other) if notebook_id.read_id(other) == the_id else None


def copy_of(store: StepStore, root: Path, file: str | os.PathLike[str], the_id: str
            ) -> str | None:
    """The notebook ``file`` is a copy of (as the kernel decides it: the store records
    ``the_id`` at another path whose file still holds it), else None. A copy's steps
    go to its path namespace, never to ``nb:<id>``."""
    recorded = recorded_path(store, notebook_id.namespace_of(the_id))
    if recorded is None or recorded == relative(file, root):
        return None
    return is_copy(root, recorded, os.fspath(file), the_id)


def relative(path: str | os.PathLike[str], root: Path) -> str:
    from nbstep.core.location import namespace_for_path

    return namespace_for_path(path, root)


def orphaned(namespace: str, path: str | None, root: Path) -> bool:
    """Whether a namespace's notebook is gone: a path namespace whose file does not
    exist, or a ``nb:<id>`` namespace with no notebook of that id at its recorded
    path. Namespaces that are neither (set by hand) are never orphans."""
    the_id = notebook_id.id_of_namespace(namespace)
    if the_id is not None:
        if path is None:
            return True
        file = root / path
        return not file.is_file() or notebook_id.read_id(file) != the_id
    if namespace.endswith((".ipynb", ".py")):
        return not (root / namespace).is_file()
    return False

