"""Running a ``%%step`` body as IPython runs a cell: its code, its awaits, its figures."""

from __future__ import annotations

import ast
import asyncio
import contextvars
import inspect
import sys
import threading
import types
from typing import Any

PyCF_ALLOW_TOP_LEVEL_AWAIT = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0x2000)


def run_code(shell: Any, code: types.CodeType, ns: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    if code.co_flags & inspect.CO_COROUTINE:
        return run_coroutine(shell, eval(code, shell.user_global_ns, ns))
    return eval(code, shell.user_global_ns, ns)


async def await_code(shell: Any, code: types.CodeType, ns: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    if code.co_flags & inspect.CO_COROUTINE:
        return await eval(code, shell.user_global_ns, ns)
    return eval(code, shell.user_global_ns, ns)


def run_coroutine(shell: Any, coroutine: Any) -> Any:
    """Run top-level ``await`` code from synchronous code.

    Without a running event loop (a terminal, a test shell) IPython's loop runner
    does it. Inside a kernel the loop is running, and the magic's input transformer
    normally routes such cells through the async path instead; if it was bypassed,
    the coroutine runs on a fresh loop in a helper thread (objects bound to the
    kernel's loop cannot be used there).
    """
    __tracebackhide__ = True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return shell.loop_runner(coroutine)
    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = context.run(asyncio.run, coroutine)
        except BaseException as e:  # handed back to the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=target, name="nbstep-await", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def flush_inline_figures() -> None:
    """Show matplotlib's pending inline figures now, while outputs are recorded.

    The inline backend shows them in a ``post_execute`` hook, after the cell (and so
    after the capture); showing them here instead makes them part of the record, and
    the hook then finds nothing left to show. The caller holds what this publishes
    until ``Out[n]`` is shown (:meth:`.capture.OutputCapture.hold`).
    """
    backend_inline = sys.modules.get("matplotlib_inline.backend_inline")
    mpl = sys.modules.get("matplotlib")
    if backend_inline is None or mpl is None or "matplotlib.pyplot" not in sys.modules:
        return
    get = getattr(mpl.rcParams, "_get_backend_or_none", None)
    backend = get() if get is not None else None
    if backend and "inline" in str(backend).lower():
        backend_inline.flush_figures()
