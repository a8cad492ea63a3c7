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
  ``JPY_SESSION_NAME`` itself); the kernel is their child process, so
  :func:`runner_notebook` reads the notebook from the command line that started its
  parent (``jupyter nbconvert --execute a.ipynb``, ``papermill in.ipynb out.ipynb``).
"""

from __future__ import annotations

import functools
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


def script_path(user_ns: dict[str, Any] | None = None) -> str | None:
    """The running script's path (``python script.py``, ``ipython script.py``), if any."""
    main = sys.modules.get("__main__")
    for path in (getattr(main, "__file__", None), (user_ns or {}).get("__file__")):
        if isinstance(path, str) and path and not path.startswith("<") \
                and not path.endswith(".ipynb") and os.path.isfile(path):
            return os.path.abspath(path)
    return None


@functools.lru_cache(maxsize=64)
def is_installed(path: str) -> bool:
    """Whether ``path`` belongs to the Python installation (a tool's ``__main__`` run
    with ``python -m``), not to the user's project. Cached: asked once per cell."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    resolved = os.path.realpath(path)
    return any(resolved.startswith(os.path.realpath(p) + os.sep) for p in prefixes)


# The programs that execute a notebook in a kernel they start, and how to find the
# notebook among their arguments: papermill's input is its first notebook argument;
# nbconvert converts every notebook it is given (one is unambiguous).
_RUNNERS = {"papermill": "first", "jupyter-nbconvert": "only", "nbconvert": "only",
            "jupyter-execute": "only"}


def runner_notebook(pid: int | None = None) -> str | None:
    """The notebook a runner (papermill, nbconvert) is executing in this kernel.

    Those runners tell the kernel nothing; but the kernel is their child, so the
    parent's command line names the notebook (relative to the parent's working
    directory). Linux only (``/proc``); None where that cannot be read, or when the
    parent is no known runner or names several notebooks.
    """
    pid = os.getppid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "surrogateescape") for a in f.read().split(b"\0") if a]
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    return notebook_in_command(argv, cwd)


def notebook_in_command(argv: list[str], cwd: str) -> str | None:
    """The notebook a runner's command line ``argv`` (run in ``cwd``) executes."""
    words = [os.path.basename(a) for a in argv[:3]]
    rule = next((_RUNNERS[w] for w in words if w in _RUNNERS), None)
    if rule is None and "nbconvert" in argv[1:3] and "jupyter" in words[:2]:
        rule = "only"  # `jupyter nbconvert ...`, `python -m nbconvert ...`
    if rule is None:
        return None
    found = [os.path.join(cwd, a) for a in argv[1:]
             if a.endswith(".ipynb") and not a.startswith("-")]
    found = [path for path in found if os.path.isfile(path)] if rule == "only" else found
    if not found or (rule == "only" and len(found) > 1):
        return None
    return os.path.normpath(found[0])
