"""``nbstep run`` gives a notebook without an id one, in its file, before running it.

The id (``metadata.nbstep.id``, docs/design.md "Which notebook is this") is what the
kernel reads to choose the namespace ``nb:<id>``; written here so a notebook run only
headless keeps its records through renames, as one saved in JupyterLab does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nbstep.core import notebook_id
from nbstep.errors import NbstepError

from .export import replacing


def ensure_id(path: Path, nb: Any) -> str | None:
    """Write an id into the notebook file at ``path`` if it has none (and into ``nb``,
    the notebook as read); the line saying so, or None when it had one."""
    found = notebook_id.id_in(nb)
    if found is not None:
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise NbstepError(f"cannot read {path} to give it a notebook id ({e}); check the "
                          "file is a notebook you may write, or pass --namespace") from e
    new = notebook_id.id_in(raw) or notebook_id.give_id(raw)
    try:
        with replacing(path) as tmp:
            Path(tmp).write_text(json.dumps(raw, indent=1, sort_keys=True, ensure_ascii=False)
                                 + "\n", encoding="utf-8")
    except OSError as e:
        raise NbstepError(f"cannot write a notebook id into {path} ({e.strerror}); make the "
                          "file writable, or copy the notebook somewhere writable") from e
    notebook_id.give_id(nb, new)
    notebook_id.forget_cached(path)
    return (f"gave {path.name} a notebook id (metadata.nbstep.id): its records now follow "
            "it through renames and moves")


def notebook_namespace(nb: Any, by_path: str) -> str:
    """The namespace the kernel will choose: ``nb:<id>``, else the path's."""
    found = notebook_id.id_in(nb)
    return notebook_id.namespace_of(found) if found is not None else by_path
