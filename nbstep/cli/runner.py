"""``nbstep run``: execute notebooks headless with a real kernel, cell by cell.

How a notebook runs here, and why:

- Its kernel gets ``JPY_SESSION_NAME`` = the notebook's absolute path, as
  jupyter_server gives it, so the engine picks the same namespace as in JupyterLab;
  ``NBSTEP_STORE`` = the store this command uses; and the notebook's folder as its
  working directory. ``NBSTEP_NAMESPACE`` is removed so each notebook is its own
  namespace. nbclient sets none of this by itself (docs/design.md).
- Each cell's execute request carries ``cellId`` in its metadata, as JupyterLab sends
  it, because ipykernel fills ``ExecutionInfo.cell_id`` only from there.
- Before the first cell a silent request imports :mod:`nbstep.notebook.probe` and applies
  ``--on-mismatch`` / ``--rerun`` through ``nbstep.configure``. After each cell a
  ``user_expression`` reads the engine's counters (``Runtime.stats``), so the
  counts come from the engine itself and are the same for ``step.run`` and ``%%step``
  cells; a failing cell gets one more silent request, since a kernel evaluates no
  ``user_expressions`` for a cell that raised.
- ``-p``/``-r``/``-f`` parameters become a cell tagged ``injected-parameters`` after
  the cell tagged ``parameters`` (:mod:`.parameters`), as papermill does, so a step
  that reads a parameter has it as an input like any other variable.
- The kernel talks over IPC sockets in a private folder, not TCP: ipykernel 7 logs
  an "unencrypted TCP" warning into every CI log otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbstep import settings as settings_module
from nbstep.core.location import namespace_for_path

from . import parameters
from .export import replacing
from .identity import ensure_id, notebook_namespace
from .outcomes import NotebookFailed, NotebookResult, RunError
from .progress import Progress


@dataclass
class RunOptions:
    store: Path | None = None  # None: resolve from each notebook's folder
    server: str | None = None  # a team store's URL (--store postgresql://...)
    timeout: int | None = None
    kernel: str | None = None
    rerun: bool = False
    on_mismatch: str | None = None
    parameters: dict[str, Any] | None = None  # -p/-r/-f: injected as papermill does


def notebook_store(path: Path, options: RunOptions) -> Path:
    if options.store is not None:
        return options.store
    # The store the notebook would use in JupyterLab: found from its own folder.
    return settings_module.store_dir(settings_module.load({}, path.parent), path.parent)


def run_notebook(path: Path, options: RunOptions, progress: Progress,
                 output: Path | None) -> NotebookResult:
    """Execute one notebook; write it to ``output`` (if any) however the run ends."""
    path = Path(os.path.abspath(path))
    store = notebook_store(path, options)
    result = NotebookResult(path=path, namespace=namespace_for_path(path, store.parent),
                            store=store)
    nb = _read_notebook(path)
    if options.parameters:
        _inject_parameters(nb, options.parameters, result)
    result.kernel = _kernel_of(nb, path, options)
    settings = settings_module.load({}, path.parent)
    server = options.server or (settings.store if settings_module.is_server_url(settings.store)
                                else None)
    result.notes.extend(ensure_id(path, nb, store, server))  # the notebook id (identity.py)
    result.namespace = notebook_namespace(nb, result.namespace)
    env = _kernel_environment(path, server or str(store), result)
    sockets = tempfile.mkdtemp(prefix="nbstep-kernel-")
    start_code = (
        "__import__('nbstep.notebook.probe', fromlist=['start']).start("
        f"on_mismatch={options.on_mismatch!r}, rerun={options.rerun!r})"
    )
    from .kernel_client import StepClient

    client = StepClient(
        nb,
        progress=progress,
        start_code=start_code,
        on_start=lambda report, error: _start_notes(report, error, options, result, progress),
        timeout=options.timeout,
        kernel_name=result.kernel,
        resources={"metadata": {"path": str(path.parent)}},
        config=_kernel_config(sockets),
    )
    progress.notebook(result, client.total)
    for message in result.notes:
        progress.note(message)
    started = time.monotonic()
    try:
        client.execute(env=env)
    except KeyboardInterrupt:
        result.error = "interrupted (Ctrl-C)"
        result.interrupted = True
    except BaseException as e:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
        failed = client.outcomes[-1] if client.outcomes and client.outcomes[-1].error else None
        if failed is not None:
            result.failed_cell = failed
            result.error = f"cell {failed.number} failed: {failed.error}"
        else:
            result.error = f"could not run the notebook: {type(e).__name__}: {e}"
    finally:
        result.wall_s = time.monotonic() - started
        shutil.rmtree(sockets, ignore_errors=True)
    _collect(result, client)
    if output is not None:
        if Path(os.path.abspath(output)) != path:
            nb = _without_id(nb)
        _write_notebook(nb, output)
        result.written = output
    return result


def _without_id(nb: Any) -> Any:
    """The executed notebook as written to another file: without the input's notebook
    id. Carrying it, the output would be a copy of the notebook that takes over its
    records (``nb:<id>``) once the input is renamed in the shell and the output runs
    first; without it, it is a notebook of its own (docs/design.md, "Which notebook
    is this")."""
    import copy

    ours = nb.metadata.get("nbstep")
    if not isinstance(ours, dict) or "id" not in ours:
        return nb
    written = copy.deepcopy(nb)
    rest = {k: v for k, v in ours.items() if k != "id"}
    if rest:
        written.metadata["nbstep"] = rest
    else:
        del written.metadata["nbstep"]
    return written


def _inject_parameters(nb: Any, values: dict[str, Any], result: NotebookResult) -> None:
    try:
        note = parameters.inject(nb, values)
    except parameters.ParameterError as e:
        raise NotebookFailed(f"{result.path}: {e}") from e
    result.notes.append(f"parameters: {parameters.describe(values)}")
    if note:
        result.notes.append(note)


def _read_notebook(path: Path) -> Any:
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, not a notebook, unreadable: this notebook fails
        raise NotebookFailed(
            f"cannot read {path} as a notebook ({type(e).__name__}: {e})"
        ) from e


def _kernel_of(nb: Any, path: Path, options: RunOptions) -> str:
    """``--kernel``, else the notebook's kernelspec, else python3; installed here."""
    kernel = options.kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    try:
        check_kernel(kernel)
    except RunError as e:
        if options.kernel:
            raise  # --kernel was checked before any notebook ran; keep it a usage error
        raise NotebookFailed(f"{path}: its kernelspec names a kernel not installed here: {e}") \
            from None
    return kernel


def _kernel_environment(path: Path, store: str, result: NotebookResult) -> dict[str, str]:
    """What jupyter_server would give the kernel, and this command's store (a directory,
    or a team store's URL: the kernel finds its local folder from the notebook's, as
    this command did)."""
    env = dict(os.environ)
    env.pop("NBSTEP_NAMESPACE", None)
    env["JPY_SESSION_NAME"] = str(path)
    env["NBSTEP_STORE"] = store
    if os.environ.get("NBSTEP_NAMESPACE"):
        result.notes.append("NBSTEP_NAMESPACE is ignored: each notebook is its own namespace")
    return env


def _collect(result: NotebookResult, client: Any) -> None:
    """The cells' outcomes and step counts into the notebook's result."""
    if client.interrupts:
        result.interrupted = True
    result.cells = client.outcomes
    for outcome in result.cells:
        if outcome.counts is None:
            result.counts_known = False
        else:
            result.counts.add(outcome.counts)


def _start_notes(report: dict[str, Any] | None, error: str | None, options: RunOptions,
                 result: NotebookResult, progress: Progress) -> None:
    if report is None:
        result.counts_known = False
        if error and error.startswith("ModuleNotFoundError"):
            message = (f"nbstep is not importable in kernel `{result.kernel}`; step counts "
                       "are unknown (install nbstep in that kernel's environment)")
        else:
            message = (f"nbstep could not start in kernel `{result.kernel}` "
                       f"({error or 'no answer'}); step counts are unknown")
        result.notes.append(message)
        progress.note(message)


def _kernel_config(sockets: str) -> Any:
    from traitlets.config import Config

    cfg = Config()
    if os.name == "posix":
        cfg.KernelManager.transport = "ipc"
        cfg.KernelManager.ip = os.path.join(sockets, "k")
    return cfg


def check_kernel(name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        manager.get_kernel_spec(name)
    except NoSuchKernel:
        import difflib

        known = sorted(manager.find_kernel_specs())
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise RunError(
            f"no Jupyter kernel named `{name}`.{hint} Installed kernels: "
            f"{', '.join(known) or 'none'}. Pass --kernel NAME (`jupyter kernelspec list`)."
        ) from None


def _write_notebook(nb: Any, output: Path) -> None:
    import nbformat

    output.parent.mkdir(parents=True, exist_ok=True)
    with replacing(output) as tmp:
        nbformat.write(nb, str(tmp))
