"""``nbstep run``: execute notebooks headless with a real kernel, cell by cell.

How a notebook runs here, and why:

- Its kernel gets ``JPY_SESSION_NAME`` = the notebook's absolute path, as
  jupyter_server gives it, so the engine picks the same namespace as in JupyterLab;
  ``NBSTEP_STORE`` = the store this command uses; and the notebook's folder as its
  working directory. ``NBSTEP_NAMESPACE`` is removed so each notebook is its own
  namespace. nbclient sets none of this by itself (platform-facts.md).
- Each cell's execute request carries ``cellId`` in its metadata, as JupyterLab sends
  it, because ipykernel fills ``ExecutionInfo.cell_id`` only from there.
- Before the first cell a silent request imports :mod:`nbstep.cli_probe` and applies
  ``--on-mismatch`` / ``--rerun`` through ``nbstep.configure``. After each cell a
  ``user_expression`` reads the engine's counters (``runtime().stats``), so the
  counts come from the engine itself and are the same for ``step.run`` and ``%%step``
  cells; a failing cell gets one more silent request, since a kernel evaluates no
  ``user_expressions`` for a cell that raised.
- The kernel talks over IPC sockets in a private folder, not TCP: ipykernel 7 logs
  an "unencrypted TCP" warning into every CI log otherwise.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cli_text as text
from . import config
from .errors import NbstepError

STAT_KEYS = ("replayed", "computed", "failed", "not_persisted", "compute_s", "saved_s")
_PROBE = "__import__('nbstep.cli_probe').cli_probe.report()"


@dataclass
class Counts:
    """Step counts, from the engine's counters (None: the kernel could not tell)."""

    replayed: int = 0
    computed: int = 0
    failed: int = 0
    not_persisted: int = 0
    compute_s: float = 0.0
    saved_s: float = 0.0

    def add(self, other: Counts) -> None:
        for name in STAT_KEYS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def steps(self) -> int:
        return self.replayed + self.computed + self.failed


@dataclass
class CellOutcome:
    number: int  # 1-based among the code cells that run
    total: int
    source: str
    elapsed: float
    counts: Counts | None
    error: str | None = None  # "ZeroDivisionError: division by zero", "timed out ..."
    traceback: str = ""


@dataclass
class NotebookResult:
    path: Path
    namespace: str
    store: Path
    kernel: str = "?"
    cells: list[CellOutcome] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    counts_known: bool = True
    wall_s: float = 0.0
    error: str | None = None  # the run failed (a cell, the kernel, an interrupt)
    failed_cell: CellOutcome | None = None
    written: Path | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class RunError(NbstepError):
    """``nbstep run`` was asked for something that cannot be (an unknown kernel)."""


class NotebookFailed(NbstepError):
    """A notebook could not be run at all: unreadable, or its kernel is not installed."""


# -- progress -----------------------------------------------------------------------


class Progress:
    """Cell-by-cell progress on a stream (stderr).

    On a terminal one live line shows the running cell and its elapsed time, and is
    replaced by the cell's result. Elsewhere (a CI log) each cell prints one line when
    it ends, plus a "still running" line at 1, 2, 4, 8 ... minutes, so a log shows a
    long cell is alive without a line per second. Colour only when ``color``.
    """

    def __init__(self, stream: Any, *, color: bool, live: bool, width: int = 100) -> None:
        self.stream, self.color, self.live, self.width = stream, color, live, width
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._label = ""
        self._preview = ""
        self._started = 0.0

    def style(self, message: str, **how: Any) -> str:
        return text.style(message, **how) if self.color else message

    def write(self, message: str, nl: bool = True) -> None:
        if not self.color:
            message = text.strip_ansi(message)
        self.stream.write(message + ("\n" if nl else ""))
        self.stream.flush()

    def notebook(self, result: NotebookResult, cells: int) -> None:
        self.write(
            self.style(f"{result.path}", bold=True)
            + f"  ({text.plural(cells, 'code cell')}; namespace `{result.namespace}`, "
            f"kernel {result.kernel}, store {result.store})"
        )

    def note(self, message: str) -> None:
        with self._lock:
            self._clear()
            self.write(f"  note: {message}")

    def cell_started(self, number: int, total: int, source: str) -> None:
        self._label = f"  cell {number}/{total}".ljust(10 + len(str(total)) * 2)
        self._preview = text.first_line(source)
        self._started = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick, name="nbstep-progress", daemon=True)
        self._thread.start()

    def cell_finished(self, outcome: CellOutcome) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        status = _cell_status(outcome)
        if outcome.error:
            status = self.style(status, fg="red", bold=True)
        elif outcome.counts and outcome.counts.computed:
            status = self.style(status, fg="yellow")
        elif outcome.counts and outcome.counts.replayed:
            status = self.style(status, fg="green")
        line = f"{self._label}{text.seconds(outcome.elapsed):>9}  {_pad(status, 24)}"
        room = max(self.width - len(text.strip_ansi(line)) - 1, 10)
        with self._lock:
            self._clear()
            self.write(f"{line}{text.shorten(self._preview, room)}")

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K")

    def _tick(self) -> None:
        next_note = 60.0
        while not self._stop.wait(0.5 if self.live else 1.0):
            elapsed = time.monotonic() - self._started
            if self.live:
                line = f"{self._label}{text.seconds(elapsed):>9}  {'running ...':<24}"
                room = max(self.width - len(line) - 1, 10)
                with self._lock:
                    self._clear()
                    self.write(f"{line}{text.shorten(self._preview, room)}", nl=False)
            elif elapsed >= next_note:
                with self._lock:
                    self.write(f"{self._label}still running after {text.seconds(elapsed)}")
                next_note *= 2


def _pad(styled: str, width: int) -> str:
    return styled + " " * max(width - len(text.strip_ansi(styled)), 1)


def _cell_status(outcome: CellOutcome) -> str:
    if outcome.error and outcome.error.startswith("interrupted"):
        return "INTERRUPTED"
    if outcome.error:
        return "FAILED" + (" in a step" if outcome.counts and outcome.counts.failed else "")
    counts = outcome.counts
    if counts is None:
        return "ok"
    parts = []
    if counts.replayed:
        parts.append(f"{counts.replayed} replayed")
    if counts.computed:
        parts.append(f"{counts.computed} computed")
    if counts.not_persisted:
        parts.append(f"{counts.not_persisted} not recorded")
    return ", ".join(parts) if parts else "no steps"


# -- the client ---------------------------------------------------------------------

_client_class: Any = None


def _make_client_class() -> Any:
    """A NotebookClient that sends cell ids and reads the engine's counters."""
    global _client_class
    if _client_class is not None:
        return _client_class
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    class StepClient(NotebookClient):  # type: ignore[misc]
        def __init__(self, nb: Any, *, progress: Progress, start_code: str,
                     on_start: Callable[[dict[str, Any] | None, str | None], None],
                     **kw: Any) -> None:
            super().__init__(nb, **kw)
            self.progress = progress
            self.start_code = start_code
            self.on_start = on_start
            self.start_report: dict[str, Any] | None = None
            self.outcomes: list[CellOutcome] = []
            self.last_report: dict[str, Any] | None = None
            self.total = sum(1 for cell in nb.cells if _runs(cell, self.skip_cells_with_tag))
            self._outgoing: dict[str, Any] | None = None
            self._reply: dict[str, Any] | None = None
            self.on_cell_executed = self._remember_reply
            self.interrupts = 0
            self.probe_error: str | None = None

        def _remember_reply(self, execute_reply: dict[str, Any], **_: Any) -> None:
            self._reply = execute_reply

        async def async_start_new_kernel_client(self) -> Any:
            kc = await super().async_start_new_kernel_client()
            send_plain = kc.execute

            def execute(code: str, silent: bool = False, store_history: bool = True,
                        user_expressions: dict[str, str] | None = None,
                        allow_stdin: bool | None = None, stop_on_error: bool = True) -> Any:
                extra = self._outgoing
                if extra is None:
                    return send_plain(code, silent=silent, store_history=store_history,
                                      user_expressions=user_expressions,
                                      allow_stdin=allow_stdin, stop_on_error=stop_on_error)
                # KernelClient.execute has no metadata argument; build the request as it
                # does, plus JupyterLab's `cellId` (ipykernel reads ExecutionInfo.cell_id
                # from it) and our counters probe.
                content = {
                    "code": code, "silent": silent, "store_history": store_history,
                    "user_expressions": {**(user_expressions or {}), **extra["expressions"]},
                    "allow_stdin": False if allow_stdin is None else allow_stdin,
                    "stop_on_error": stop_on_error,
                }
                msg = kc.session.msg("execute_request", content, metadata=extra["metadata"])
                kc.shell_channel.send(msg)
                return msg["header"]["msg_id"]

            kc.execute = execute
            self._take_sigint()
            self.start_report = await self._silent(self.start_code)
            self.last_report = self.start_report
            self.on_start(self.start_report, self.probe_error)
            return kc

        def _take_sigint(self) -> None:
            # nbclient's own SIGINT handler shuts the kernel down mid-cell, so the cell
            # reports a dead kernel and zmq errors follow. Do what Jupyter's stop button
            # does instead: interrupt the kernel (the cell raises KeyboardInterrupt and
            # the run ends cleanly, notebook written); a second Ctrl-C stops the kernel.
            # The kernel runs in its own session, so the terminal's SIGINT reaches only
            # us. nbclient removes the handler when the kernel is cleaned up.
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._on_sigint)
            except (RuntimeError, NotImplementedError, ValueError):
                pass  # not the main thread, or Windows: nbclient's handling stays

        def _on_sigint(self) -> None:
            self.interrupts += 1
            if self.interrupts == 1:
                self.progress.note("interrupting the kernel (Ctrl-C again to stop it)")
                asyncio.ensure_future(_maybe_await(self.km.interrupt_kernel()))
            else:
                asyncio.ensure_future(self._async_cleanup_kernel())

        async def _silent(self, expression: str) -> dict[str, Any] | None:
            """Evaluate ``expression`` (JSON text) in the kernel without touching the
            notebook: silent, no history, no pre/post_run_cell events."""
            for _attempt in range(5):
                msg_id = self.kc.execute(
                    "", silent=True, store_history=False,
                    user_expressions={"nbstep": expression}, stop_on_error=False,
                )
                reply = await self.async_wait_for_reply(msg_id)
                if reply is None:
                    return None
                await self._until_idle(msg_id)
                if reply["content"].get("status") == "aborted":
                    # The kernel may still be dropping requests queued behind an error.
                    await asyncio.sleep(0.05)
                    continue
                failed = (reply["content"].get("user_expressions") or {}).get("nbstep") or {}
                if failed.get("status") == "error":
                    self.probe_error = f"{failed.get('ename')}: {failed.get('evalue')}"
                return _parse_probe(reply["content"])
            return None

        async def _until_idle(self, msg_id: str, timeout: float = 10.0) -> None:
            """Wait for the kernel's "idle" after request ``msg_id``.

            The kernel sends its reply from inside the request's handler, where SIGINT
            raises KeyboardInterrupt; it ignores SIGINT again only before it says
            "idle". jupyter_client interrupts a kernel before shutting it down, so an
            interrupt sent between the reply and "idle" (after the probe that follows a
            failing cell) made the kernel log "KeyboardInterrupt caught in kernel."
            into the run's output. nbclient waits for "idle" after every cell; the
            messages read here belong to no cell (the next cell's poll drops them too).
            """
            import queue

            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await _maybe_await(self.kc.iopub_channel.get_msg(timeout=left))
                except queue.Empty:
                    return
                if (msg["parent_header"].get("msg_id") == msg_id
                        and msg["msg_type"] == "status"
                        and msg["content"].get("execution_state") == "idle"):
                    return

        async def async_execute_cell(self, cell: Any, cell_index: int,
                                     execution_count: int | None = None,
                                     store_history: bool = True) -> Any:
            if not _runs(cell, self.skip_cells_with_tag):
                return await super().async_execute_cell(
                    cell, cell_index, execution_count, store_history)
            number = len(self.outcomes) + 1
            self.progress.cell_started(number, self.total, cell.source)
            cell_id = cell.get("id")
            self._outgoing = {
                "metadata": {"cellId": cell_id} if cell_id else {},
                "expressions": {"nbstep": _PROBE},
            }
            self._reply = None
            started = time.monotonic()
            outcome = CellOutcome(number, self.total, cell.source, 0.0, None)
            kernel_idle = True
            try:
                return await super().async_execute_cell(
                    cell, cell_index, execution_count, store_history)
            except CellExecutionError:
                content = (self._reply or {}).get("content", {})
                outcome.error = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"
                outcome.traceback = "\n".join(content.get("traceback", []))
                if self.interrupts:
                    outcome.error = "interrupted (Ctrl-C)"
                raise
            except BaseException as e:
                # Timed out, died or stopped: the kernel cannot answer a probe.
                kernel_idle = False
                outcome.error = _describe_stop(e, self._get_timeout(cell))
                if self.interrupts:
                    outcome.error = "interrupted (Ctrl-C): the kernel was stopped"
                raise
            finally:
                self._outgoing = None
                outcome.elapsed = time.monotonic() - started
                report = None
                if outcome.error is None and self._reply is not None:
                    report = _parse_probe(self._reply["content"])
                elif kernel_idle and self.kc is not None:
                    try:
                        report = await self._silent(_PROBE)
                    except Exception:
                        report = None  # the kernel went away meanwhile: counts unknown
                outcome.counts = _diff(self.last_report, report)
                if self.interrupts and outcome.counts is not None:
                    outcome.counts.failed = 0  # stopped by the user, not failed
                if report is not None:
                    self.last_report = report
                self.outcomes.append(outcome)
                self.progress.cell_finished(outcome)

    _client_class = StepClient
    return StepClient


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


def _runs(cell: Any, skip_tag: str) -> bool:
    return (
        cell.cell_type == "code"
        and bool(cell.source.strip())
        and skip_tag not in cell.metadata.get("tags", [])
    )


def _describe_stop(error: BaseException, timeout: int | None) -> str:
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    if isinstance(error, CellTimeoutError):
        return f"timed out after {timeout} s (--timeout)"
    if isinstance(error, DeadKernelError):
        return "the kernel died (out of memory? a crash in native code?)"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}"


def _parse_probe(content: dict[str, Any]) -> dict[str, Any] | None:
    result = (content.get("user_expressions") or {}).get("nbstep")
    if not result or result.get("status") != "ok":
        return None
    try:
        return json.loads(ast.literal_eval(result["data"]["text/plain"]))
    except (KeyError, ValueError, SyntaxError, TypeError):
        return None


def _diff(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> Counts | None:
    if before is None or after is None:
        return None
    old, new = before.get("stats", {}), after.get("stats", {})
    counts = Counts()
    for name in STAT_KEYS:
        if name in new:
            setattr(counts, name, new[name] - old.get(name, 0))
    return counts


# -- running one notebook --------------------------------------------------------------


@dataclass
class RunOptions:
    store: Path | None = None  # None: resolve from each notebook's folder
    timeout: int | None = None
    kernel: str | None = None
    rerun: bool = False
    on_mismatch: str | None = None


def notebook_store(path: Path, options: RunOptions) -> Path:
    if options.store is not None:
        return options.store
    # The store the notebook would use in JupyterLab: found from its own folder.
    return config.resolve_store_dir(path.parent)


def run_notebook(path: Path, options: RunOptions, progress: Progress,
                 output: Path | None) -> NotebookResult:
    """Execute one notebook; write it to ``output`` (if any) however the run ends."""
    import nbformat

    path = Path(os.path.abspath(path))
    store = notebook_store(path, options)
    namespace = config.namespace_for_path(path, store.parent)
    result = NotebookResult(path=path, namespace=namespace, store=store)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, not a notebook, unreadable: this notebook fails
        raise NotebookFailed(
            f"cannot read {path} as a notebook ({type(e).__name__}: {e})"
        ) from e
    kernel = options.kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    result.kernel = kernel
    try:
        check_kernel(kernel)
    except RunError as e:
        if options.kernel:
            raise  # --kernel was checked before any notebook ran; keep it a usage error
        raise NotebookFailed(f"{path}: its kernelspec names a kernel not installed here: {e}") \
            from None

    env = dict(os.environ)
    env.pop("NBSTEP_NAMESPACE", None)
    env["JPY_SESSION_NAME"] = str(path)
    env["NBSTEP_STORE"] = str(store)
    if os.environ.get("NBSTEP_NAMESPACE"):
        result.notes.append("NBSTEP_NAMESPACE is ignored: each notebook is its own namespace")

    sockets = tempfile.mkdtemp(prefix="nbstep-kernel-")
    client_config = _kernel_config(sockets)
    start_code = (
        "__import__('nbstep.cli_probe').cli_probe.start("
        f"on_mismatch={options.on_mismatch!r}, rerun={options.rerun!r})"
    )
    client = _make_client_class()(
        nb,
        progress=progress,
        start_code=start_code,
        on_start=lambda report, error: _start_notes(report, error, options, result, progress),
        timeout=options.timeout,
        kernel_name=kernel,
        resources={"metadata": {"path": str(path.parent)}},
        config=client_config,
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
    if client.interrupts:
        result.interrupted = True
    result.cells = client.outcomes
    for outcome in result.cells:
        if outcome.counts is None:
            result.counts_known = False
        else:
            result.counts.add(outcome.counts)
    if output is not None:
        _write_notebook(nb, output)
        result.written = output
    return result


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

    from .cli_store import replacing

    output.parent.mkdir(parents=True, exist_ok=True)
    with replacing(output) as tmp:
        nbformat.write(nb, str(tmp))


# -- reporting -------------------------------------------------------------------------


def failure_text(result: NotebookResult) -> str:
    cell = result.failed_cell
    if cell is None:
        return f"{result.path}: {result.error}"
    where = " in a step" if cell.counts and cell.counts.failed else ""
    lines = [
        f"{result.path}: cell {cell.number} of {cell.total} failed{where}: {cell.error}",
        "---- cell source ----",
        cell.source.rstrip(),
    ]
    if cell.traceback:
        lines += ["---- traceback ----", cell.traceback.rstrip()]
    lines.append("----")
    return "\n".join(lines)


def notebook_line(result: NotebookResult) -> str:
    state = "ok" if result.ok else "INTERRUPTED" if result.interrupted else "FAILED"
    counts = _counts_text(result.counts, result.counts_known)
    cells = f"{len(result.cells)}/{result.cells[0].total if result.cells else 0} cells"
    written = f"; written to {result.written}" if result.written else ""
    return f"{state}: {result.path.name}: {cells}, {counts}, {text.seconds(result.wall_s)}{written}"


def _counts_text(counts: Counts, known: bool) -> str:
    if not known and not counts.steps:
        return "steps unknown"
    extra = f" ({counts.not_persisted} not recorded)" if counts.not_persisted else ""
    partial = " (incomplete)" if not known else ""
    return (f"steps: {counts.replayed} replayed, {counts.computed} computed, "
            f"{counts.failed} failed{extra}{partial}")


def summary_text(results: list[NotebookResult], skipped: list[Path], wall_s: float) -> str:
    total = Counts()
    known = True
    for result in results:
        total.add(result.counts)
        known = known and result.counts_known
    ok = sum(1 for r in results if r.ok)
    failed = len(results) - ok
    notebooks = f"{ok} ok, {failed} failed"
    if skipped:
        notebooks += f", {len(skipped)} not run"
    lines = [
        "nbstep run summary",
        f"  notebooks   {notebooks}",
        f"  {_counts_text(total, known).replace('steps: ', 'steps       ')}",
        f"  wall time   {text.seconds(wall_s)}",
        f"  computing   {text.seconds(total.compute_s)} in computed steps",
        f"  saved       {text.seconds(total.saved_s)} of recorded compute time, by replay",
    ]
    return "\n".join(lines)


def summary_json(results: list[NotebookResult], skipped: list[Path], wall_s: float) -> str:
    def counts(c: Counts) -> dict[str, Any]:
        return {name: getattr(c, name) for name in STAT_KEYS}

    data = {
        "ok": all(r.ok for r in results) and not skipped,
        "wall_s": wall_s,
        "notebooks": [
            {"path": str(r.path), "namespace": r.namespace, "store": str(r.store),
             "ok": r.ok, "error": r.error, "cells_run": len(r.cells),
             "counts_known": r.counts_known, "wall_s": r.wall_s, **counts(r.counts),
             "written": str(r.written) if r.written else None}
            for r in results
        ],
        "not_run": [str(p) for p in skipped],
    }
    return json.dumps(data, indent=2)


def stderr_is_live() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
