"""A notebook's stable id: ``metadata.nbstep.id`` in the ``.ipynb`` file.

A notebook's records live in the namespace ``nb:<id>`` once it has an id, so renaming
or moving the file keeps them (docs/design.md, "Which notebook is this"). The id is a
uuid4 in hex, written by the Jupyter server's pre-save hook (:mod:`nbstep.server`)
and by ``nbstep run``. The kernel never sees the notebook's content: it reads the id
from the file whose path its front end gave it, here, once per version of the file.
"""

from __future__ import annotations

import os
import re
from typing import Any

PREFIX = "nb:"
_ID = re.compile(r"[0-9a-f]{32}")
# path -> ((mtime_ns, size), id or None): a file is parsed once per version. A path
# whose file is gone keeps the id it had: a kernel outlives a rename of its notebook
# (jupyter_server does not tell a running kernel the new path).
_CACHE: dict[str, tuple[tuple[int, int], str | None]] = {}


def new_id() -> str:
    import uuid  # only where an id is made

    return uuid.uuid4().hex


def is_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def namespace_of(notebook_id: str) -> str:
    """``nb:<id>``: the namespace of a notebook with an id."""
    return PREFIX + notebook_id


def id_of_namespace(namespace: str) -> str | None:
    """The id a ``nb:<id>`` namespace names, else None."""
    if namespace.startswith(PREFIX) and is_id(namespace[len(PREFIX):]):
        return namespace[len(PREFIX):]
    return None


def id_in(notebook: Any) -> str | None:
    """The id in a notebook's JSON (a dict, or an nbformat node), if it has a valid one."""
    metadata = notebook.get("metadata") if isinstance(notebook, dict) else None
    ours = metadata.get("nbstep") if isinstance(metadata, dict) else None
    found = ours.get("id") if isinstance(ours, dict) else None
    return found if is_id(found) else None


def give_id(notebook: Any, notebook_id: str | None = None) -> str:
    """Set the notebook's id (a fresh one unless given); returns it."""
    if not isinstance(notebook.get("metadata"), dict):
        notebook["metadata"] = {}
    metadata = notebook["metadata"]
    ours = metadata.get("nbstep")
    the_id = notebook_id or new_id()
    # Assigned whole: an nbformat node copies a dict given to it.
    metadata["nbstep"] = {**(ours if isinstance(ours, dict) else {}), "id": the_id}
    return the_id


def read_id(path: str | os.PathLike[str]) -> str | None:
    """The id in the notebook file at ``path``; None when it has none.

    Cached per path and the file's (mtime, size): only a file that mentions
    ``"nbstep"`` at all is parsed. A file that cannot be read or parsed has no id
    (the path namespace applies); a file that is gone keeps the id last read.
    """
    key = os.fspath(path)
    try:
        info = os.stat(key)
    except OSError:
        cached = _CACHE.get(key)
        return cached[1] if cached is not None else None
    version = (info.st_mtime_ns, info.st_size)
    cached = _CACHE.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    found = _parse(key)
    _CACHE[key] = (version, found)
    return found


def _parse(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if b'"nbstep"' not in data:
        return None
    import json

    try:
        return id_in(json.loads(data))
    except (ValueError, UnicodeDecodeError):
        return None


def forget_cached(path: str | os.PathLike[str]) -> None:
    """Drop what is cached about ``path`` (a test, or a writer that just changed it)."""
    _CACHE.pop(os.fspath(path), None)
