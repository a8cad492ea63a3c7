"""Finding what a person named: a notebook (by path or namespace), a key, an occurrence.

Used by ``%steps NAME`` and every CLI command that takes a NOTEBOOK or KEY. A name that
matches nothing is :class:`~nbstep.errors.NotFound`, with the close matches and what
there is to choose from.
"""

from __future__ import annotations

import os
from pathlib import Path

from nbstep.core import notebook_id
from nbstep.core.location import namespace_for_path
from nbstep.core.record import Record
from nbstep.engine import notebooks
from nbstep.errors import NotFound
from nbstep.storage import StepStore


def resolve_namespace(store: StepStore, root: Path, notebook: str) -> str:
    """A NOTEBOOK argument (a path or a stored namespace) as a namespace in the store.

    ``root`` is the folder namespaces are relative to (the store directory's parent).
    """
    known = store.admin().namespaces()
    candidates = []
    by_path = namespace_for_path(notebook, root)
    file = Path(notebook).expanduser()
    if file.is_file():
        # A notebook with an id is its `nb:<id>` (docs/design.md, "Which notebook is
        # this"), unless it is a copy of the notebook recorded under that id: a copy's
        # steps are in its path namespace, and the original's are not its to show.
        the_id = notebook_id.read_id(file)
        if the_id is not None and notebooks.copy_of(store, root, file, the_id) is None:
            candidates.append(notebook_id.namespace_of(the_id))
        candidates.append(by_path)  # the file the shell completed wins over a same-named namespace
    candidates += [notebook, by_path]
    for candidate in candidates:
        if candidate in known:
            return candidate
    hint = close_matches(notebook, known) or close_matches(by_path, known)
    lines = [f"no notebook `{notebook}` in the store {store.location}"]
    if by_path != notebook:
        lines[0] += f" (as a path it is the namespace `{by_path}`)"
    if hint:
        lines.append(f"Did you mean {hint}?")
    known = [ns for ns in known if not ns.startswith("nbstep:")]  # the store's own
    if known:
        shown = ", ".join(f"`{ns}`" for ns in known[:8]) + (" ..." if len(known) > 8 else "")
        lines.append(f"Notebooks in this store: {shown} (`nbstep ls` lists them).")
    else:
        lines.append("The store has no records yet.")
    raise NotFound("\n".join(lines))


def close_matches(name: str, choices: list[str]) -> str:
    import difflib

    matches = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    base = os.path.basename(name)
    matches += [c for c in choices if os.path.basename(c) == base and c not in matches]
    return " or ".join(f"`{m}`" for m in matches[:3])


def resolve_records(
    store: StepStore, namespace: str, key: str, occurrence: int | None = None
) -> list[Record]:
    """The current records of one key (all occurrences, or the one asked for)."""
    current = store.current(namespace)
    records = [r for r in current if r.key == key]
    if not records:
        keys = sorted({r.key for r in current})
        history = store.admin().history(namespace, values=False)
        if (history["key"] == key).any():
            raise NotFound(
                f"step `{key}` in `{namespace}` has no current record (it was forgotten); "
                "it records again the next time the notebook runs. `nbstep inspect "
                f"{namespace} --history --key {key}` shows its history."
            )
        hint = close_matches(key, keys)
        message = f"no step `{key}` in `{namespace}`."
        if hint:
            message += f" Did you mean {hint}?"
        if keys:
            shown = ", ".join(f"`{k}`" for k in keys[:12]) + (" ..." if len(keys) > 12 else "")
            message += f" Steps recorded there: {shown}."
        else:
            message += " That notebook has no current records."
        raise NotFound(message)
    if occurrence is not None:
        chosen = [r for r in records if r.sequence == occurrence]
        if not chosen:
            have = ", ".join(str(r.sequence) for r in records)
            raise NotFound(
                f"step `{key}` in `{namespace}` has no occurrence {occurrence}; "
                f"its occurrences: {have}."
            )
        return chosen
    return records


def pick_one(records: list[Record], occurrence: int | None) -> tuple[Record, str]:
    """The record to show or export, and a note when there were several to pick from."""
    record = records[0]
    note = ""
    if occurrence is None and len(records) > 1:
        note = (
            f"occurrence {record.sequence} of {len(records)} "
            f"({', '.join(str(r.sequence) for r in records)}); choose with --occurrence N"
        )
    return record, note
