"""Which notebook or script is running, and the namespace a file's path gives.

A step's default namespace is the running notebook's (or script's) path relative to
the folder that holds the store. The kernel learns the notebook's path only from what
its front end passes it (docs/design.md, "Which notebook is this"):

- jupyter_server (JupyterLab, Notebook 7) sets ``JPY_SESSION_NAME`` in the kernel's
  environment, and ipykernel copies it to ``__session__`` in the user namespace:
  the notebook's absolute path when the front end sent a name, else its path
  relative to the server root (not to the kernel's working directory, which is the
  notebook's folder);
- VS Code sets ``__vsc_ipynb_file__`` in the user namespace;
- nbclient, nbconvert and papermill set nothing (``nbstep run`` sets
  ``JPY_SESSION_NAME`` itself).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def namespace_for_path(path: str | os.PathLike[str], root: Path) -> str:
    """A file's namespace: its path relative to ``root`` with ``/``, else absolute."""
    resolved = Path(path).expanduser().resolve()
    try:
        return resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def session_name(user_ns: dict[str, Any] | None = None) -> str | None:
    """The raw session name jupyter_server gave the kernel, if any."""
    for value in (
        (user_ns or {}).get("__vsc_ipynb_file__"),
        (user_ns or {}).get("__session__"),
        os.environ.get("JPY_SESSION_NAME"),
    ):
        if isinstance(value, str) and value.strip():
            return value
    return None


def notebook_path(user_ns: dict[str, Any] | None = None) -> str | None:
    """The running notebook's path, when the kernel can tell.

    Checked in order: ``__vsc_ipynb_file__`` (VS Code), ``__session__`` (ipykernel
    copies ``JPY_SESSION_NAME`` there), then ``JPY_SESSION_NAME`` itself. A value that
    is not absolute is server-root-relative; it is used only when it names an
    existing file relative to the kernel's working directory, since the kernel's
    working directory is the notebook's folder, not the server root.
    """
    candidates: list[Any] = []
    if user_ns is not None:
        candidates += [user_ns.get("__vsc_ipynb_file__"), user_ns.get("__session__")]
    candidates.append(os.environ.get("JPY_SESSION_NAME"))
    for value in candidates:
        if not isinstance(value, str) or not value.strip():
            continue
        candidate = Path(value).expanduser()
        if candidate.is_absolute():
            return str(candidate)
        local = Path.cwd() / candidate
        if local.is_file():
            return str(local)
        by_name = Path.cwd() / candidate.name
        if by_name.is_file():
            return str(by_name)
    return None


def script_path() -> str | None:
    """The running script's path (``python script.py``), if there is one."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if isinstance(path, str) and path and not path.startswith("<") and os.path.isfile(path):
        return path
    return None
