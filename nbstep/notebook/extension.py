"""The IPython extension: what ``%load_ext nbstep`` does to a shell, and undoes.

``%load_ext nbstep`` makes one :class:`NotebookExtension` for the shell: it registers
the magics (:mod:`.magics`), a ``pre_run_cell`` hook (every cell execution starts new
occurrence counters, so executing a cell again replays it), an input transformer for
two kinds of ``%%step`` cell, a traceback filter, and the ``step`` name.
``%unload_ext nbstep`` removes exactly that. The extension also holds what this
kernel knows about its own steps: which objects each step produced or replayed.

Loading stays cheap (no pandas, no DuckDB): those load on first use.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError  # noqa: TID253

from nbstep.core import location
from nbstep.engine.api import step
from nbstep.engine.runtime import Runtime
from nbstep.errors import NbstepError

from . import notices
from .magics import MAGIC_NAMES, StepMagics, header, parse_step_line

if TYPE_CHECKING:
    from .cell import CellStep, Options

_STEP_LINE = re.compile(r"^%%step(?:[ \t]+(?P<args>.*))?$")


class NotebookExtension:
    """nbstep in one shell: its hooks, and this kernel's memory of its steps."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.injected_step = False
        self.identity_noted = False
        self.cell_id: str | None = None  # the executing cell's id (pre_run_cell)
        self.body_depth = 0  # > 0 while a %%step body runs (nested run_cell calls)
        # A %%step body's exception, and the frames its traceback shows that are the
        # magic's rather than the cell's: (exception, ids of those frames).
        self.hidden: tuple[BaseException, frozenset[int]] | None = None
        self.original_tb: Any = None  # the InteractiveTB method our wrapper replaced
        # (namespace, key, occurrence) -> {name: the object the step produced or
        # replayed in this kernel}, for the names the step both read and bound.
        # Strong references: an id could be reused once an object is gone.
        self.session_outputs: dict[tuple[str, str, int], dict[str, Any]] = {}
        # id(object) -> (object, part, state digest) of the objects a step recorded or
        # replayed in this kernel, as it left them (see product_part).
        self.products: dict[int, tuple[Any, str, str]] = {}

    @property
    def runtime(self) -> Runtime:
        """The process's runtime, the one ``step`` uses too."""
        return Runtime.instance()

    # -- what this kernel's steps produced -----------------------------------------------

    def remember_outputs(self, slot: Any, names: Any) -> None:
        """``slot`` has ``namespace``, ``key`` and ``sequence`` (an occurrence, a record)."""
        ns = self.shell.user_ns
        self.session_outputs[(slot.namespace, slot.key, slot.sequence)] = {
            name: ns[name] for name in names if name in ns}

    def produced(self, record: Any) -> dict[str, Any]:
        return self.session_outputs.get((record.namespace, record.key, record.sequence), {})

    def forget_session(self) -> None:
        """Forget which objects this kernel's steps produced (as a new kernel would)."""
        self.session_outputs.clear()
        self.products.clear()

    def note_products(self, identity: str, names: Any) -> None:
        """Remember the objects a step (its record's ``identity``) left under ``names``,
        once this cell's ``Out[n]`` is shown (showing a figure draws it)."""
        from nbstep.hashing.state import state_digest

        from .capture import after_result
        from .inputs import produced_part, surely_structural

        ns = self.shell.user_ns
        objects = {name: ns[name] for name in sorted(names)
                   if name in ns and not surely_structural(ns[name])}
        if not objects:
            return

        def note() -> None:
            bound = {id(value) for value in ns.values()}
            for key in [k for k in self.products if k not in bound]:
                del self.products[key]  # no longer a notebook variable's
            noted: set[int] = set()
            for name, obj in objects.items():  # in order: an object counts by its first name
                if id(obj) in noted or ns.get(name) is not obj:
                    continue
                noted.add(id(obj))
                digest = state_digest(obj).digest
                if digest is not None:
                    self.products[id(obj)] = (obj, produced_part(identity, name), digest)

        after_result(self.shell, note)

    def product_part(self, obj: Any) -> str | None:
        """The part of an object a step left, if nothing changed it since.

        The part names the step's record: the same in the kernel that recorded the
        object and in one that replayed it, where the object's own pickle may differ
        (a figure drawn in one and loaded in the other).
        """
        entry = self.products.get(id(obj))
        if entry is None or entry[0] is not obj:
            return None
        from nbstep.hashing.state import state_digest

        return entry[1] if state_digest(obj).digest == entry[2] else None

    # -- one %%step cell -----------------------------------------------------------------

    def run_step_cell(self, options: Options, body: str, first_line: str) -> Any:
        """``%%step``: replay the cell, or run it and record it."""
        __tracebackhide__ = True
        step_ = self._prepared(options, body, first_line)
        if step_.replaying:
            return self._replay(step_)
        with self._running(step_):
            return step_.run_sync()

    async def run_step_cell_async(self, options: Options, body: str, first_line: str) -> Any:
        """``%%step`` for a body with top-level ``await`` (see :meth:`transform_cell`)."""
        __tracebackhide__ = True
        step_ = self._prepared(options, body, first_line)
        if step_.replaying:
            return self._replay(step_)
        with self._running(step_):
            return await step_.run_async()

    @contextmanager
    def _running(self, step_: CellStep) -> Iterator[None]:
        """Errors of a running body: nbstep's own after the body are one line; the
        cell's own show their traceback from the cell's first line, as for any cell."""
        __tracebackhide__ = True
        try:
            yield
        except NbstepError as e:
            self._recording_failed(step_, e)
            self.hide_magic_frames(e, step_)
            raise
        except BaseException as e:
            self.hide_magic_frames(e, step_)
            raise

    def _prepared(self, options: Options, body: str, first_line: str) -> CellStep:
        __tracebackhide__ = True
        from .cell import CellStep  # the first %%step cell pays for it, not loading

        step_ = CellStep(self, options, body, first_line)
        self._note_identity(step_)
        try:
            step_.prepare()
        except NbstepError as e:
            raise UsageError(str(e)) from e
        return step_

    def _replay(self, step_: CellStep) -> Any:
        __tracebackhide__ = True
        try:
            return step_.replay()
        except NbstepError as e:
            raise UsageError(str(e)) from e

    def _recording_failed(self, step_: CellStep, error: Exception) -> None:
        """An nbstep error after the body finished (the store, say) is a UsageError;
        one raised by the cell's own code (a step.run inside it) keeps its traceback."""
        __tracebackhide__ = True
        if step_.body_done:
            raise UsageError(str(error)) from error

    def _note_identity(self, step_: CellStep) -> None:
        """Say once when this kernel cannot tell which notebook it runs.

        Then steps go to the namespace `default`, shared with every other notebook in
        the same situation; saying so is the difference between sharing and mixing.
        """
        if self.identity_noted or step_.options.namespace is not None:
            return
        if self.runtime.settings().namespace is not None:
            return
        user_ns = step_.user_ns
        namespace = self.runtime.default_namespace()
        if namespace != "default" and not namespace.startswith("session:"):
            return  # a notebook's id or path, a script's, or a kernel's own (it said so)
        self.identity_noted = True
        session = location.session_name(user_ns)
        if session:
            notices.show(self.shell, "note", (
                f"the session name `{session}` is not a saved notebook's path (a new "
                "notebook keeps its first name until the kernel restarts), so this "
                f"notebook's steps go to the namespace `session:{session}`, its own. After "
                "you save it and restart the kernel they run once more under the "
                "notebook's path; or run %step_config --namespace NAME now."))
            return
        notices.show(self.shell, "note", (
            "nbstep cannot tell which notebook this is (neither JPY_SESSION_NAME nor "
            "__vsc_ipynb_file__ names it). Steps go to the namespace `default`, shared with "
            "other such notebooks. Run %step_config --namespace NAME to give it its own."))

    # -- the input transformer -----------------------------------------------------------

    def transform_cell(self, lines: list[str]) -> list[str]:
        """Route two kinds of ``%%step`` cell before the magic runs.

        - A body with top-level ``await``: a cell magic is called synchronously, and
          inside a kernel the event loop is already running, so the magic cannot
          await. The cell becomes ``await <nbstep>.run_step_cell_async(...)``, which
          IPython runs as async code on its own loop, as it would the body alone.
        - A body with a syntax error: the cell becomes the body itself (after a blank
          line standing for the ``%%step`` line), so IPython reports the error as for
          any cell, at the right line and without a stack of nbstep's frames. Nothing
          runs and nothing is recorded.
        Every other ``%%step`` cell is left to the cell magic.
        """
        if not lines:
            return lines
        match = _STEP_LINE.match(lines[0].rstrip("\r\n"))
        if match is None:
            return lines
        body = "".join(lines[1:])
        try:
            transformed = self.shell.transform_cell(body)
        except Exception:
            return lines  # the magic will report it
        code = _compile_body(transformed)
        if code is None:
            return ["\n", *transformed.splitlines(keepends=True)]
        if not (code.co_flags & inspect.CO_COROUTINE and getattr(self.shell, "autoawait", False)):
            return lines
        args = match.group("args") or ""
        return [
            "await __import__('nbstep.notebook.extension', fromlist=['run_step_cell_async'])"
            f".run_step_cell_async(get_ipython(), {args!r}, {body!r})\n"
        ]

    # -- tracebacks of a failing body ----------------------------------------------------

    def hide_magic_frames(self, error: BaseException, step_: CellStep) -> None:
        """Make the body's traceback start at the cell's own line, as for any cell.

        IPython shows every frame between its ``run_code`` and the error, so a failing
        body would start with the cell's ``get_ipython().run_cell_magic(...)`` line and
        a "skipping hidden frames" note for nbstep's own. Those frames are noted here,
        and left out when IPython formats this exception (:meth:`structured_traceback`).
        The exception itself keeps its full traceback (``%debug``, ``sys.last_exc``).
        """
        if self.original_tb is None:
            return
        frames: set[int] = set()
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_locals.get("__tracebackhide__") == "__ipython_bottom__":
                break  # IPython's run_code: what its traceback starts with
            frames.add(id(frame))
            frame = frame.f_back
        else:
            return  # not called by IPython to run a cell: leave the traceback alone
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != step_.filename:
            frames.add(id(tb.tb_frame))
            tb = tb.tb_next
        if tb is None:
            return  # the body never ran (an nbstep error before it): keep every frame
        self.hidden = (error, frozenset(frames))

    def structured_traceback(self, etype: Any, evalue: Any, etb: Any = None, *args: Any,
                             **kwargs: Any) -> Any:
        """IPython's InteractiveTB.structured_traceback, without a body's magic frames."""
        hidden = self.hidden
        if hidden is not None and evalue is hidden[0] and etb is not None:
            kept = []
            tb = etb
            while tb is not None:
                if id(tb.tb_frame) not in hidden[1]:
                    kept.append(tb)
                tb = tb.tb_next
            if kept:
                rebuilt = None
                for entry in reversed(kept):
                    rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti,
                                                  entry.tb_lineno)
                etb = rebuilt
        return self.original_tb(etype, evalue, etb, *args, **kwargs)

    # -- loading and unloading ------------------------------------------------------------

    def pre_run_cell(self, info: Any = None) -> None:
        # Every cell execution starts new occurrence counters, so executing a cell
        # again replays it. A run_cell nested in a %%step body is not a new cell.
        if not self.body_depth:
            self.runtime.reset()
            self.cell_id = getattr(info, "cell_id", None)
            self.hidden = None
        shell = self.shell
        if self.injected_step and "step" not in shell.user_ns:
            # %reset cleared the namespace; `step` is part of the notebook's vocabulary.
            shell.user_ns["step"] = step
            shell.user_ns_hidden["step"] = step

    def note(self, message: str) -> None:
        """The engine's notes (a notebook's records adopted by its id, a copy, a kernel
        that cannot name its notebook) as nbstep notices in this shell."""
        notices.show(self.shell, "note", message)

    def load(self) -> None:
        ip = self.shell
        ip.register_magics(StepMagics(ip, self))
        ip.events.register("pre_run_cell", self.pre_run_cell)
        if self.transform_cell not in ip.input_transformers_cleanup:
            ip.input_transformers_cleanup.append(self.transform_cell)
        formatter = getattr(ip, "InteractiveTB", None)
        if formatter is not None and "structured_traceback" not in vars(formatter):
            self.original_tb = formatter.structured_traceback
            formatter.structured_traceback = self.structured_traceback
        self.runtime.user_ns = ip.user_ns
        self.runtime.notify = self.note
        self.runtime.reset()
        if "step" not in ip.user_ns:
            ip.user_ns["step"] = step
            ip.user_ns_hidden["step"] = step
            self.injected_step = True
        elif ip.user_ns["step"] is not step:
            warnings.warn(
                "nbstep: this notebook already has a variable named `step`, so it was left "
                "alone and nbstep's `step` was not added; use `import nbstep` and "
                "`nbstep.step.run(...)` instead, or rename yours and run %reload_ext nbstep.",
                UserWarning,
                stacklevel=3,
            )

    def unload(self) -> None:
        ip = self.shell
        manager = ip.magics_manager
        for kind, names in MAGIC_NAMES.items():
            table = manager.magics.get(kind, {})
            for name in names:
                bound = table.get(name)
                if isinstance(getattr(bound, "__self__", None), StepMagics):
                    del table[name]
        manager.registry.pop(StepMagics.__name__, None)
        try:
            ip.events.unregister("pre_run_cell", self.pre_run_cell)
        except ValueError:
            pass  # already gone
        while self.transform_cell in ip.input_transformers_cleanup:
            ip.input_transformers_cleanup.remove(self.transform_cell)
        formatter = getattr(ip, "InteractiveTB", None)
        if formatter is not None and vars(formatter).get("structured_traceback") == (
                self.structured_traceback):
            del formatter.structured_traceback
        self.original_tb = None
        self.hidden = None
        self.cell_id = None
        if self.injected_step and ip.user_ns.get("step") is step:
            del ip.user_ns["step"]
        if ip.user_ns_hidden.get("step") is step:
            del ip.user_ns_hidden["step"]
        if self.runtime.user_ns is ip.user_ns:
            self.runtime.user_ns = None
        if self.runtime.notify == self.note:
            self.runtime.notify = None
        self.injected_step = False
        self.session_outputs.clear()


def extension_of(shell: Any) -> NotebookExtension | None:
    """The extension loaded into ``shell``, if any (its magics object holds it)."""
    magics = shell.magics_manager.registry.get(StepMagics.__name__)
    return getattr(magics, "extension", None)


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext nbstep``: register the magics, the hooks and the ``step`` name."""
    if extension_of(ip) is not None:
        return
    NotebookExtension(ip).load()


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext nbstep``: remove exactly what loading added."""
    extension = extension_of(ip)
    if extension is not None:
        extension.unload()


async def run_step_cell_async(shell: Any, line: str, cell: str) -> Any:
    """The transformed form of a ``%%step`` cell whose body awaits (see transform_cell)."""
    __tracebackhide__ = True
    extension = extension_of(shell)
    if extension is None:
        raise UsageError("%%step: nbstep is not loaded in this shell; run %load_ext nbstep")
    return await extension.run_step_cell_async(parse_step_line(line, extension), cell,
                                               header(line))


def _compile_body(source: str) -> Any:
    """The body's code (top-level ``await`` allowed), or None if it has a syntax error."""
    try:
        return compile(source, "<cell>", "exec",
                       flags=getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0x2000),
                       dont_inherit=True)
    except (SyntaxError, ValueError):
        return None

