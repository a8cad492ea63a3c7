"""The Jupyter server side: every notebook saved through Jupyter gets a stable id.

Installed with the package as ``etc/jupyter/jupyter_server_config.d/nbstep.json``,
which enables this module as a jupyter_server extension (JupyterLab, Notebook 7). It
registers a ContentsManager pre-save hook that writes ``metadata.nbstep.id`` (a
uuid4 in hex) into a notebook that has none, so its records live in ``nb:<id>`` and
follow the file through renames and moves (docs/design.md, "Which notebook is this").

A copy (File > Duplicate, Save As, a copy made with the contents API) carries its
original's id. It is saved to a path where no file is yet; when the id's recorded
path (in the store) is another file that still holds the same id, the copy gets a
fresh id there, so the two notebooks never share records. A new file with an id whose
original is gone (an upload, a notebook moved in from elsewhere) keeps its id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nbstep.core import notebook_id


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbstep.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    register(serverapp.contents_manager)
    serverapp.log.info("nbstep: notebooks saved through Jupyter get a stable id "
                       "(metadata.nbstep.id)")


# jupyter_server < 2 looked for these names.
load_jupyter_server_extension = _load_jupyter_server_extension


def register(contents_manager: Any) -> None:
    """Add the hook to a ContentsManager (once)."""
    hooks = getattr(contents_manager, "_pre_save_hooks", None)
    if hooks is not None and pre_save in hooks:
        return
    contents_manager.register_pre_save_hook(pre_save)


def pre_save(model: dict[str, Any], path: str, contents_manager: Any, **_: Any) -> None:
    """Give a notebook being saved an id, or a copy an id of its own."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    content = model["content"]
    file = _os_path(contents_manager, path)
    found = notebook_id.id_in(content)
    if found is None:
        notebook_id.give_id(content)
    elif file is not None and not os.path.exists(file) and _is_copy(file, found):
        notebook_id.give_id(content)
    if file is not None:
        notebook_id.forget_cached(file)


def _os_path(contents_manager: Any, path: str) -> str | None:
    to_os = getattr(contents_manager, "_get_os_path", None)
    if to_os is not None:
        return str(to_os(path))
    root = getattr(contents_manager, "root_dir", None)
    return os.path.join(root, path.strip("/")) if root else None


def _is_copy(file: str, the_id: str) -> bool:
    """Whether the notebook recorded for ``the_id`` is another file holding that id."""
    from nbstep import settings as settings_module
    from nbstep.engine import notebooks
    from nbstep.storage import open_store

    folder = Path(file).parent
    settings = settings_module.load({}, folder)
    root = settings_module.store_dir(settings, folder)
    if not root.is_dir() and not settings_module.is_server_url(settings.store):
        return False  # no store yet: nothing recorded for any id
    store = open_store(root, settings)
    try:
        recorded = notebooks.recorded_path(store, notebook_id.namespace_of(the_id))
    finally:
        store.close()
    return notebooks.is_copy(root.parent, recorded, file, the_id) is not None
