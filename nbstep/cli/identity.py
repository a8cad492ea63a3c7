"""``nbstep run`` gives a notebook without an id one, in its file, before running it.

The id (``metadata.nbstep.id``, docs/design.md "Which notebook is this") is what the
kernel reads to choose the namespace ``nb:<id>``; written here so a notebook run only
headless keeps its records through renames, as one saved in JupyterLab does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import click  # noqa: TID253

from nbstep.core import notebook_id
from nbstep.engine import notebooks
from nbstep.engine.lookup import resolve_namespace
from nbstep.errors import NbstepError
from nbstep.storage import StepStore

from . import text
from .export import replacing
from .state import CONTEXT, State, confirm


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


# -- which notebook each namespace is, and whether it is gone ----------------------------


class Whose(NamedTuple):
    """A namespace's notebook file (relative to the store's root) and whether it is gone."""

    path: str | None
    orphaned: bool


def whose(store: StepStore, root: Path, namespaces: list[str]) -> dict[str, Whose]:
    """For each namespace: its notebook's path, and whether it is orphaned (the file is
    gone; for ``nb:<id>``, no notebook with that id at its recorded path nor anywhere
    under the store's root: a notebook renamed outside Jupyter is found and shown)."""
    recorded = notebooks.paths(store)
    found: dict[str, str] | None = None
    out = {}
    for namespace in namespaces:
        path = recorded.get(namespace) if namespace.startswith(notebook_id.PREFIX) else (
            namespace if namespace.endswith((".ipynb", ".py")) else None)
        gone = notebooks.orphaned(namespace, path, root)
        the_id = notebook_id.id_of_namespace(namespace)
        if gone and the_id is not None:
            if found is None:
                found = _ids_under(root)
            if the_id in found:
                path, gone = found[the_id], False
        out[namespace] = Whose(path, gone)
    return out


def statuses(store: StepStore, root: Path, rows: list[Any]) -> dict[str, Whose]:
    """``whose`` for summary rows; a namespace with no current steps (moved away, or
    all forgotten) is no orphan: plain `nbstep gc` drops what is left of it."""
    found = whose(store, root, [r.namespace for r in rows])
    return {r.namespace: found[r.namespace]._replace(
        orphaned=found[r.namespace].orphaned and r.steps > 0) for r in rows}


def _ids_under(root: Path) -> dict[str, str]:
    """id -> path (relative to root) of every notebook under root with an id."""
    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "node_modules"]
        for name in files:
            if name.endswith(".ipynb"):
                file = Path(folder) / name
                the_id = notebook_id.read_id(file)
                if the_id is not None:
                    out.setdefault(the_id, notebooks.relative(file, root))
    return out


def listed(store: StepStore, rows: list[Any]) -> list[Any]:
    """The summary rows a person sees: without the store's own mapping namespace."""
    return [r for r in rows if r.namespace != notebooks.MAPPING]


# -- nbstep mv ------------------------------------------------------------------------------


def source_namespace(store: StepStore, root: Path, name: str) -> str:
    """OLD of ``nbstep mv``: a notebook file (its id's namespace when it has records),
    a path whose notebook is recorded under an id, or a stored namespace."""
    known = store.admin().namespaces()
    file = Path(name).expanduser()
    if file.is_file():
        the_id = notebook_id.read_id(file)
        if the_id is not None and notebook_id.namespace_of(the_id) in known:
            return notebook_id.namespace_of(the_id)
    by_path = notebooks.relative(name, root)
    if name not in known and by_path not in known:
        for namespace, path in notebooks.paths(store).items():
            if path == by_path and namespace in known:
                return namespace
    return resolve_namespace(store, root, name)


def target_namespace(root: Path, name: str) -> tuple[str, str | None]:
    """NEW of ``nbstep mv``: (namespace, the notebook path to record beside it or None).

    A notebook file with an id is its ``nb:<id>``; another existing file, or a name
    ending in .ipynb or .py, is the path's namespace; anything else a namespace as given.
    """
    file = Path(name).expanduser()
    if file.is_file():
        the_id = notebook_id.read_id(file)
        relative = notebooks.relative(file, root)
        if the_id is not None:
            return notebook_id.namespace_of(the_id), relative
        return relative, None
    if name.endswith((".ipynb", ".py")):
        return notebooks.relative(name, root), None
    return name, None


@click.command(context_settings=CONTEXT)
@click.argument("old")
@click.argument("new")
@click.pass_obj
def mv(state: State, old: str, new: str) -> None:
    """Move a notebook's records to another notebook or namespace.

    OLD and NEW are notebook paths or namespaces. For a notebook renamed or moved
    outside Jupyter: its records follow it (a notebook with an id keeps them by
    itself; this records its new path). NEW must not have records of its own.

    \b
    Examples:
      nbstep mv old/analysis.ipynb new/analysis.ipynb
      nbstep mv Untitled.ipynb analysis.ipynb
      nbstep mv scratch.ipynb experiment-1      # into a namespace of that name
    """
    store = state.store()
    root = state.namespace_root()
    source = source_namespace(store, root, old)
    target, path = target_namespace(root, new)
    if source == target:
        moved = 0
    else:
        moved = store.admin().move(source, target)
        if source.startswith(notebook_id.PREFIX):
            store.forget(notebooks.MAPPING, source)
    if path is not None and target.startswith(notebook_id.PREFIX):
        notebooks.record_path(store, target, path)
    where = f"`{target}`" + (f" ({path})" if path and path != target else "")
    click.echo(f"moved {text.plural(moved, 'record')} of `{source}` to {where}")


# -- nbstep gc --orphans ----------------------------------------------------------------------


def gc_orphans(state: State, dry_run: bool, yes: bool) -> None:
    store = state.store()
    admin = store.admin()
    rows = listed(store, admin.summary())
    status = statuses(store, state.namespace_root(), rows)
    orphans = [r for r in rows if status[r.namespace].orphaned]
    if not orphans:
        click.echo("no orphaned notebooks: every namespace's notebook is where it was recorded")
        return
    for r in orphans:
        shown = status[r.namespace].path or "-"
        click.echo(f"  {r.namespace}  ({shown}, {text.plural(r.steps, 'step')}, "
                   f"{text.size(r.size_bytes)})")
    if dry_run:
        click.echo(f"would remove {text.plural(len(orphans), 'orphaned notebook')} "
                   "(--dry-run: nothing changed)")
        return
    store.release()
    if not yes and not confirm(
        f"Remove the records of these {text.plural(len(orphans), 'orphaned notebook')}? "
        "Their steps cannot replay afterwards",
        "removing orphaned notebooks needs a confirmation, and no answer came (stdin is not "
        "a terminal). Pass --yes to remove them, or --dry-run to list them.",
    ):
        click.echo("nothing removed", err=True)
        click.get_current_context().exit(1)
    removed = sum(admin.remove(r.namespace) for r in orphans)
    for r in orphans:
        store.forget(notebooks.MAPPING, r.namespace)
    click.echo(f"removed {text.plural(removed, 'record')} of "
               f"{text.plural(len(orphans), 'orphaned notebook')}; `nbstep gc` frees "
               "their value files")
