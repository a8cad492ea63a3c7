"""The IPython extension: ``%%step``, ``%step_config``, ``%steps`` and the ``step`` name.

``%load_ext nbstep`` calls :func:`load_ipython_extension`; ``%unload_ext nbstep``
undoes everything it did. The magics are thin: they parse their arguments and hand
over to :mod:`nbstep.cellstep` (the cell as a step) and :mod:`nbstep.api` (the
engine). Library errors become ``UsageError`` (one line, no traceback); an error
raised by the cell's own code shows its traceback as usual.

Loading stays cheap (no pandas, no DuckDB): those load on first use.
"""

from __future__ import annotations

import re
import sys
import warnings
from typing import Any

# This module is imported only by load_ipython_extension, when IPython is running:
# importing IPython here costs nothing, and the magics class needs it at definition.
from IPython.core.error import UsageError  # noqa: TID253
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class  # noqa: TID253
from IPython.core.magic_arguments import (  # noqa: TID253
    argument,
    magic_arguments,
    parse_argstring,
)

from . import config
from .api import runtime, step
from .errors import ConfigError, NbstepError

MAGIC_NAMES = {"cell": ("step",), "line": ("step_config", "steps")}
_STEP_LINE = re.compile(r"^%%step(?:[ \t]+(?P<args>.*))?$")


class _State:
    """What load_ipython_extension did to one shell, so unload can undo exactly that."""

    def __init__(self) -> None:
        self.shell: Any = None
        self.injected_step = False
        self.identity_noted = False
        self.cell_id: str | None = None  # the executing cell's id (pre_run_cell)
        # A %%step body's exception, and the frames its traceback shows that are the
        # magic's rather than the cell's: (exception, ids of those frames).
        self.hidden: tuple[BaseException, frozenset[int]] | None = None
        self.original_tb: Any = None  # the InteractiveTB method our wrapper replaced


_state = _State()


def _setting(name: str, default: Any) -> Any:
    try:
        return config.setting(name, default)
    except ConfigError as e:
        raise UsageError(str(e)) from e


@magics_class
class StepMagics(Magics):
    """``%%step KEY``: run a cell once, replay it afterwards."""

    @magic_arguments()
    @argument("key", help="the step's key: a name for this cell's work, unique in the notebook")
    @argument("--rerun", action="store_true",
              help="compute again and record a new version, even if the inputs are unchanged")
    @argument("--namespace", "-n", metavar="NS",
              help="record in this namespace instead of the notebook's own")
    @argument("--on-mismatch", choices=["error", "rerun"], default=None,
              help="when the inputs changed since the record: recompute (rerun, the default; "
                   "change it with %%step_config or [tool.nbstep] magic_on_mismatch) or raise "
                   "(error)")
    @argument("--quiet", "-q", action="store_true",
              help="do not print the 'replayed ...' line (setting: quiet)")
    @cell_magic
    def step(self, line: str, cell: str) -> Any:
        """Run the cell once and record it; executing it again replays it.

        The first run executes the body as an ordinary cell (magics, ``!cmd`` and
        top-level ``await`` work; output shows as it comes) and records, as one
        durable step: the variables the cell binds, what it printed and displayed,
        and its result. Executing it again with the same inputs (the code, ignoring
        comments and whitespace, and the values of the variables it reads) skips the
        body: the variables come back, the outputs show again, and one line says so.

        Examples::

            %%step load
            df = pd.read_parquet("big.parquet")     # runs once
            df.describe()

            %%step train --on-mismatch error        # raise if the inputs changed
            model = fit(df, threshold)

            %%step train --rerun                    # compute again, record a new version

        A cell that raises records nothing. A variable that cannot be persisted
        (an open connection, a generator) leaves the cell unrecorded, with a warning.
        ``%steps`` lists this notebook's steps; ``%step_config`` sets defaults.
        """
        __tracebackhide__ = True
        from .cellstep import CellStep

        step_ = CellStep(self.shell, _parse_step_line(line), cell, _header(line),
                         cell_id=_state.cell_id)
        _prepare(step_)
        if step_.replaying:
            return _replay(step_)
        try:
            return step_.run_sync()
        except NbstepError as e:
            _recording_failed(step_, e)
            _hide_magic_frames(e, step_)
            raise
        except BaseException as e:
            _hide_magic_frames(e, step_)
            raise

    @magic_arguments()
    @argument("--on-mismatch", choices=["error", "rerun"], default=None,
              help="what %%step does when a cell's inputs changed")
    @argument("--quiet", action="store_true", default=None,
              help="do not print the 'replayed ...' line")
    @argument("--no-quiet", dest="quiet", action="store_false",
              help="print the 'replayed ...' line (the default)")
    @argument("--namespace", metavar="NS",
              help="record this session's steps (%%step and step.run) in this namespace")
    @argument("--store", metavar="DIR", help="use this store directory for this session")
    @argument("--reset", action="store_true",
              help="forget the settings made with %%step_config in this session")
    @line_magic
    def step_config(self, line: str) -> None:
        """Set nbstep's defaults for this session, or show them.

        Examples::

            %step_config                          # show the settings and where they come from
            %step_config --on-mismatch error      # changed inputs raise instead of recompute
            %step_config --quiet                  # no 'replayed ...' lines
            %step_config --namespace exp-1        # record under another namespace
            %step_config --reset                  # back to pyproject.toml / the defaults

        Project defaults go under ``[tool.nbstep]`` in ``pyproject.toml``
        (``magic_on_mismatch = "error"``, ``quiet = true``); what is set here wins.
        """
        from . import api

        args = parse_argstring(self.step_config, line)
        changes: dict[str, Any] = {}
        if args.reset:
            changes = {"magic_on_mismatch": None, "quiet": None, "namespace": None,
                       "store": None}
        if args.on_mismatch is not None:
            changes["magic_on_mismatch"] = args.on_mismatch
        if args.quiet is not None:
            changes["quiet"] = args.quiet
        if args.namespace is not None:
            changes["namespace"] = args.namespace
        if args.store is not None:
            changes["store"] = args.store
        if changes:
            try:
                api.configure(**changes)
            except ConfigError as e:
                raise UsageError(str(e)) from e
            return
        _show_settings()

    @magic_arguments()
    @argument("namespace", nargs="?", help="a namespace (default: this notebook's)")
    @argument("--no-results", action="store_true",
              help="leave out the recorded values (faster for large steps)")
    @line_magic
    def steps(self, line: str) -> Any:
        """This notebook's recorded steps as a DataFrame (``step.inspect()``).

        Examples::

            %steps                     # this notebook
            %steps other.ipynb         # another namespace
            %steps --no-results
        """
        args = parse_argstring(self.steps, line)
        try:
            if args.namespace is not None:
                namespace = _known_namespace(_unquote(args.namespace))
                return step.inspect(namespace, results=not args.no_results)
            return step.inspect(results=not args.no_results)
        except (NbstepError, ValueError, TypeError) as e:
            raise UsageError(str(e)) from e


def _known_namespace(name: str) -> str:
    """``%steps NAME``: a namespace of the store, also given as a notebook's path."""
    from . import cli_store

    try:
        return cli_store.resolve_namespace(runtime().store(), name)
    except cli_store.NotFound as e:
        raise UsageError(f"%steps: {e}".replace("\n", " ")) from e


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _header(line: str) -> str:
    return f"%%step {line}".rstrip()


def _parse_step_line(line: str) -> Any:
    from .cellstep import Options

    try:
        args = parse_argstring(StepMagics.step, line)
    except UsageError as e:
        if "unrecognized arguments" in str(e):
            words = []
            for word in line.split():
                if word.startswith("-"):
                    break
                words.append(word)
            example = " ".join(words) if len(words) > 1 else "my key"
            raise UsageError(
                f"{e}. A key is one word: quote it if it has spaces, as in "
                f'%%step "{example}"'
            ) from None
        raise
    # IPython's argument splitting keeps quotes: `%%step "load data"` means load data.
    key = _unquote(args.key)
    if not key.strip():
        raise UsageError("%%step: the key cannot be empty; give the cell's work a name: "
                         "%%step load_data")
    namespace = _unquote(args.namespace) if args.namespace is not None else None
    if namespace is not None and not namespace.strip():
        raise UsageError("%%step: --namespace cannot be empty; leave it out to use the "
                         "notebook's own namespace")
    on_mismatch = args.on_mismatch or _setting("magic_on_mismatch", None) or "rerun"
    quiet = bool(args.quiet or _setting("quiet", False))
    return Options(key=key, namespace=namespace, on_mismatch=on_mismatch, rerun=args.rerun,
                   quiet=quiet)


def _prepare(step_: Any) -> None:
    __tracebackhide__ = True
    from .errors import StepInputMismatch

    _note_identity(step_)
    try:
        step_.prepare()
    except StepInputMismatch as e:
        raise UsageError(str(e)) from e
    except NbstepError as e:
        raise UsageError(str(e)) from e


def _replay(step_: Any) -> Any:
    __tracebackhide__ = True
    try:
        return step_.replay()
    except NbstepError as e:
        raise UsageError(str(e)) from e


def _note_identity(step_: Any) -> None:
    """Say once when this kernel cannot tell which notebook it runs.

    Then steps go to the namespace `default`, shared with every other notebook in
    the same situation; saying so is the difference between sharing and mixing.
    """
    import os

    if _state.identity_noted or step_.options.namespace is not None:
        return
    if os.environ.get("NBSTEP_NAMESPACE", "").strip() or config.configured("namespace"):
        return
    user_ns = step_.user_ns
    if config.notebook_path(user_ns) or config.script_path():
        return
    _state.identity_noted = True
    session = config.session_name(user_ns)
    if session:
        print(f"note: the session name `{session}` is not a saved notebook's path (a new "
              "notebook keeps its first name until the kernel restarts), so this notebook's "
              f"steps go to the namespace `session:{session}`, its own. After you save it "
              "and restart the kernel they run once more under the notebook's path; or run "
              "%step_config --namespace NAME now.")
        return
    print("note: nbstep cannot tell which notebook this is (neither JPY_SESSION_NAME nor "
          "__vsc_ipynb_file__ names it). Steps go to the namespace `default`, shared with "
          "other such notebooks. Run %step_config --namespace NAME to give it its own.")


# -- top-level await ---------------------------------------------------------------


def _compile_body(source: str) -> Any:
    """The body's code (top-level ``await`` allowed), or None if it has a syntax error."""
    import ast

    try:
        return compile(source, "<cell>", "exec",
                       flags=getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0x2000),
                       dont_inherit=True)
    except (SyntaxError, ValueError):
        return None


def _step_cell_transformer(lines: list[str]) -> list[str]:
    """Route two kinds of ``%%step`` cell before the magic runs.

    - A body with top-level ``await``: a cell magic is called synchronously, and
      inside a kernel the event loop is already running, so the magic cannot await.
      The cell becomes ``await <nbstep>.run_step_cell_async(...)``, which IPython runs
      as async code on its own loop, as it would the body alone.
    - A body with a syntax error: the cell becomes the body itself (after a blank
      line standing for the ``%%step`` line), so IPython reports the error as for
      any cell, at the right line and without a stack of nbstep's frames. Nothing
      runs and nothing is recorded.
    Every other ``%%step`` cell is left to the cell magic.
    """
    import inspect

    if not lines:
        return lines
    match = _STEP_LINE.match(lines[0].rstrip("\r\n"))
    shell = _state.shell
    if match is None or shell is None:
        return lines
    body = "".join(lines[1:])
    try:
        transformed = shell.transform_cell(body)
    except Exception:
        return lines  # the magic will report it
    code = _compile_body(transformed)
    if code is None:
        return ["\n", *transformed.splitlines(keepends=True)]
    if not (code.co_flags & inspect.CO_COROUTINE and getattr(shell, "autoawait", False)):
        return lines
    args = match.group("args") or ""
    return [
        "await __import__('nbstep.magic', fromlist=['run_step_cell_async'])"
        f".run_step_cell_async(get_ipython(), {args!r}, {body!r})\n"
    ]


async def run_step_cell_async(shell: Any, line: str, cell: str) -> Any:
    """``%%step`` for a body with top-level ``await`` (see the transformer above)."""
    __tracebackhide__ = True
    from .cellstep import CellStep

    step_ = CellStep(shell, _parse_step_line(line), cell, _header(line), cell_id=_state.cell_id)
    _prepare(step_)
    if step_.replaying:
        return _replay(step_)
    try:
        return await step_.run_async()
    except NbstepError as e:
        _recording_failed(step_, e)
        _hide_magic_frames(e, step_)
        raise
    except BaseException as e:
        _hide_magic_frames(e, step_)
        raise


def _recording_failed(step_: Any, error: Exception) -> None:
    """An nbstep error after the body finished (the store, say) is a UsageError;
    one raised by the cell's own code (a step.run inside it) keeps its traceback."""
    __tracebackhide__ = True
    if step_.body_done:
        raise UsageError(str(error)) from error


# -- tracebacks of a failing body -------------------------------------------------


def _hide_magic_frames(error: BaseException, step_: Any) -> None:
    """Make the body's traceback start at the cell's own line, as for any cell.

    IPython shows every frame between its ``run_code`` and the error, so a failing
    body would start with the cell's ``get_ipython().run_cell_magic(...)`` line and
    a "skipping hidden frames" note for nbstep's own. Those frames are noted here,
    and left out when IPython formats this exception (:func:`_structured_traceback`).
    The exception itself keeps its full traceback (``%debug``, ``sys.last_exc``).
    """
    import sys

    if _state.original_tb is None:
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
    _state.hidden = (error, frozenset(frames))


def _structured_traceback(etype: Any, evalue: Any, etb: Any = None, *args: Any,
                          **kwargs: Any) -> Any:
    """IPython's InteractiveTB.structured_traceback, without a body's magic frames."""
    import types

    hidden = _state.hidden
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
    return _state.original_tb(etype, evalue, etb, *args, **kwargs)


# -- loading -------------------------------------------------------------------------


def _pre_run_cell(info: Any = None) -> None:
    # Every cell execution starts new occurrence counters, so executing a cell
    # again replays it. A run_cell nested in a %%step body is not a new cell.
    from . import cellstep

    if not cellstep.body_running():
        runtime().reset()
        _state.cell_id = getattr(info, "cell_id", None)
        _state.hidden = None
    shell = _state.shell
    if _state.injected_step and shell is not None and "step" not in shell.user_ns:
        # %reset cleared the namespace; `step` is part of the notebook's vocabulary.
        shell.user_ns["step"] = step
        shell.user_ns_hidden["step"] = step


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext nbstep``: register the magics, the hooks and the ``step`` name."""
    if _state.shell is ip:
        return
    if _state.shell is not None:
        unload_ipython_extension(_state.shell)
    ip.register_magics(StepMagics)
    ip.events.register("pre_run_cell", _pre_run_cell)
    if _step_cell_transformer not in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.append(_step_cell_transformer)
    formatter = getattr(ip, "InteractiveTB", None)
    if formatter is not None and "structured_traceback" not in vars(formatter):
        _state.original_tb = formatter.structured_traceback
        formatter.structured_traceback = _structured_traceback
    runtime().user_ns = ip.user_ns
    runtime().reset()
    existing = ip.user_ns.get("step", None)
    if "step" not in ip.user_ns:
        ip.user_ns["step"] = step
        ip.user_ns_hidden["step"] = step
        _state.injected_step = True
    elif existing is not step:
        _state.injected_step = False
        warnings.warn(
            "nbstep: this notebook already has a variable named `step`, so it was left "
            "alone and nbstep's `step` was not added; use `import nbstep` and "
            "`nbstep.step.run(...)` instead, or rename yours and run %reload_ext nbstep.",
            UserWarning,
            stacklevel=2,
        )
    _state.shell = ip
    _state.identity_noted = False


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext nbstep``: remove exactly what loading added."""
    if _state.shell is not ip:
        return
    manager = ip.magics_manager
    for kind, names in MAGIC_NAMES.items():
        table = manager.magics.get(kind, {})
        for name in names:
            bound = table.get(name)
            if isinstance(getattr(bound, "__self__", None), StepMagics):
                del table[name]
    manager.registry.pop(StepMagics.__name__, None)
    try:
        ip.events.unregister("pre_run_cell", _pre_run_cell)
    except ValueError:
        pass  # already gone
    while _step_cell_transformer in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.remove(_step_cell_transformer)
    formatter = getattr(ip, "InteractiveTB", None)
    if formatter is not None and vars(formatter).get("structured_traceback") is (
            _structured_traceback):
        del formatter.structured_traceback
    _state.original_tb = None
    _state.hidden = None
    _state.cell_id = None
    if _state.injected_step and ip.user_ns.get("step") is step:
        del ip.user_ns["step"]
    if ip.user_ns_hidden.get("step") is step:
        del ip.user_ns_hidden["step"]
    if runtime().user_ns is ip.user_ns:
        runtime().user_ns = None
    _state.shell = None
    _state.injected_step = False


def _show_settings() -> None:
    import os
    from pathlib import Path

    def source(name: str, env: str | None = None) -> str:
        if env and os.environ.get(env, "").strip():
            return f"environment {env}"
        if config.configured(name) is not None:
            return "%step_config / nbstep.configure"
        try:
            table, pyproject = config.project_settings(Path.cwd())
        except ConfigError as e:
            raise UsageError(str(e)) from e
        if table.get(name) is not None:
            return f"{pyproject} [tool.nbstep]"
        return "default"

    try:
        store_dir = config.resolve_store_dir()
        namespace = runtime().default_namespace()
    except NbstepError as e:
        raise UsageError(str(e)) from e
    namespace_source = source("namespace", "NBSTEP_NAMESPACE")
    if namespace_source == "default" or namespace_source.endswith("[tool.nbstep]"):
        # The engine takes the namespace from the notebook's path, not pyproject.toml.
        if config.notebook_path(runtime().user_ns):
            namespace_source = "the notebook's path"
        elif namespace.startswith("session:"):
            namespace_source = ("a new notebook's session name: this notebook's own "
                                "namespace until the kernel restarts under its saved name")
        else:
            namespace_source = "no notebook path: the shared default"
    rows = [
        ("on mismatch", _setting("magic_on_mismatch", None) or "rerun",
         source("magic_on_mismatch")),
        ("quiet", bool(_setting("quiet", False)), source("quiet")),
        ("namespace", namespace, namespace_source),
        ("store", store_dir, source("store", "NBSTEP_STORE").replace(
            "default", "found from the working directory")),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value, where in rows:
        sys.stdout.write(f"{label:<{width}}  {value}    ({where})\n")
