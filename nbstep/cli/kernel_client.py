"""The kernel client of ``nbstep run``: nbclient, plus cell ids and the engine's counters.

See :mod:`.runner` for what the kernel is given and why.
"""

from __future__ import annotations

import ast
import asyncio
import json
import queue
import signal
import time
from collections.abc import Callable
from typing import Any

# Loaded only when `nbstep run` executes a notebook; the class needs its base now.
from nbclient import NotebookClient  # noqa: TID253
from nbclient.exceptions import CellExecutionError  # noqa: TID253

from nbstep.engine.runtime import STAT_KEYS

from .outcomes import CellOutcome, Counts
from .progress import Progress

PROBE = "__import__('nbstep.notebook.probe', fromlist=['report']).report()"


class StepClient(NotebookClient):  # type: ignore[misc]
    """nbclient's client, sending JupyterLab's ``cellId`` and reading the counters."""

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
            "expressions": {"nbstep": PROBE},
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
                    report = await self._silent(PROBE)
                except Exception:
                    report = None  # the kernel went away meanwhile: counts unknown
            outcome.counts = _diff(self.last_report, report)
            if self.interrupts and outcome.counts is not None:
                outcome.counts.failed = 0  # stopped by the user, not failed
            if report is not None:
                self.last_report = report
            self.outcomes.append(outcome)
            self.progress.cell_finished(outcome)


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
    from nbclient.exceptions import CellTimeoutError, DeadKernelError  # noqa: TID253

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
