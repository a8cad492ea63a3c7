"""The magics: ``%%step``, ``%step_config`` and ``%steps``, thin over the engine.

They parse their arguments and hand over: ``%%step`` to the extension's cell runner
(:meth:`.extension.NotebookExtension.run_step_cell`), ``%step_config`` to the
runtime's settings, ``%steps`` to ``step.inspect``'s frame. Library errors become
``UsageError`` (one line, no traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol

# This module is imported only by the extension, when IPython is running: importing
# IPython here costs nothing, and the magics class needs it at definition.
from IPython.core.error import UsageError  # noqa: TID253
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class  # noqa: TID253
from IPython.core.magic_arguments import (  # noqa: TID253
    argument,
    magic_arguments,
    parse_argstring,
)

from nbstep import settings as settings_module
from nbstep.core import location
from nbstep.engine.runtime import Runtime
from nbstep.errors import ConfigError, NbstepError, NotFound
from nbstep.settings import Settings

from .options import Options


class CellRunner(Protocol):
    """What the magics need from the extension (:mod:`.extension`)."""

    runtime: Runtime

    def run_step_cell(self, options: Options, body: str, first_line: str) -> Any: ...

MAGIC_NAMES = {"cell": ("step",), "line": ("step_config", "steps")}


@magics_class
class StepMagics(Magics):
    """``%%step KEY``: run a cell once, replay it afterwards."""

    def __init__(self, shell: Any, extension: CellRunner) -> None:
        super().__init__(shell)
        self.extension = extension

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
    @argument("--allow-untracked", action="store_true",
              help="record and replay the cell even though it uses something nbstep cannot "
                   "track (an object pickle cannot write, such as a connection; a call such "
                   "as torch.manual_seed): by default such a cell runs every time")
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

            %%step query --allow-untracked          # reads `con`, a connection: replay
            rows = con.execute(sql).fetchall()      # anyway (nbstep cannot see into it)

        A cell that raises records nothing. A variable that cannot be persisted
        (an open connection, a generator) leaves the cell unrecorded, with a warning.
        ``%steps`` lists this notebook's steps; ``%step_config`` sets defaults.
        """
        __tracebackhide__ = True
        return self.extension.run_step_cell(parse_step_line(line, self.extension), cell,
                                            header(line))

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
        args = parse_magic_line("%step_config", self.step_config, line)
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
                self.extension.runtime.configure(**changes)
            except ConfigError as e:
                raise UsageError(str(e)) from e
            return
        show_settings(self.extension.runtime)

    @magic_arguments()
    @argument("namespace", nargs="?", help="a namespace (default: this notebook's)")
    @argument("--history", action="store_true",
              help="also the superseded and forgotten records (default: current only)")
    @argument("--results", action="store_true",
              help="add a `result` column with the values themselves")
    @argument("--no-results", action="store_true",
              help="leave out the values, even their summary (faster for large steps)")
    @argument("--all-columns", action="store_true",
              help="every column (event_id, sequence, input hash, codec, size...)")
    @line_magic
    def steps(self, line: str) -> Any:
        """This notebook's steps as a DataFrame, as ``step.inspect()`` returns them.

        One row per current step: its key, occurrence, status, when it was recorded,
        how long it took, the time replays saved, and a one-line summary of its value.

        Examples::

            %steps                     # this notebook
            %steps other.ipynb         # another namespace
            %steps --history           # with superseded and forgotten records
            %steps --no-results        # no values read (fast)
            %steps --all-columns       # the full frame
        """
        from nbstep.engine.inspect import records_frame

        args = parse_magic_line("%steps", self.steps, line)
        if args.results and args.no_results:
            raise UsageError("%steps: --results and --no-results contradict each other; "
                             "give one of them")
        results = True if args.results else False if args.no_results else None
        runtime = self.extension.runtime
        try:
            if args.namespace is not None:
                namespace = _known_namespace(runtime, _unquote(args.namespace))
            else:
                namespace = runtime.default_namespace()
            store = runtime.store()
            return records_frame(store, namespace, results=results,
                                 history=args.history or None, all_columns=args.all_columns,
                                 user_ns=runtime.user_ns,
                                 replays=runtime.replays_of(store, namespace))
        except (NbstepError, ValueError, TypeError) as e:
            raise UsageError(str(e)) from e


def _known_namespace(runtime: Runtime, name: str) -> str:
    """``%steps NAME``: a namespace of the store, also given as a notebook's path."""
    from nbstep.engine.lookup import resolve_namespace

    try:
        return resolve_namespace(runtime.store(), runtime.store_root(), name)
    except NotFound as e:
        raise UsageError(f"%steps: {e}".replace("\n", " ")) from e


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def header(line: str) -> str:
    return f"%%step {line}".rstrip()


def parse_step_line(line: str, extension: CellRunner) -> Options:
    """The ``%%step`` line's options, with the session's and the project's defaults."""
    try:
        args = parse_magic_line("%%step", StepMagics.step, line)
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
    settings = _settings(extension.runtime)
    on_mismatch = args.on_mismatch or settings.magic_on_mismatch
    quiet = bool(args.quiet or settings.quiet)
    return Options(key=key, namespace=namespace, on_mismatch=on_mismatch, rerun=args.rerun,
                   quiet=quiet, allow_untracked=args.allow_untracked)


def parse_magic_line(magic: str, function: Any, line: str) -> Any:
    """A magic's arguments; an option it does not have is named, with the closest one
    and the list of its options (argparse would say "unrecognized arguments")."""
    check_options(magic, function, line)
    return parse_argstring(function, line)


def check_options(magic: str, function: Any, line: str) -> None:
    """Raise a ``UsageError`` for the first word of ``line`` that looks like an option
    ``function``'s parser does not know (nor abbreviates, as argparse allows)."""
    from IPython.utils.process import arg_split  # noqa: TID253

    actions = [a.option_strings for a in function.parser._actions if a.option_strings]
    known = [flag for flags in actions for flag in flags]
    try:
        words = arg_split(line, strict=False)
    except ValueError:  # unbalanced quotes: argparse says so
        return
    for word in words:
        if word == "--":
            return
        if not word.startswith("-") or word == "-" or _is_number(word):
            continue
        flag = word.split("=", 1)[0]
        if flag in known:
            continue
        if flag.startswith("--") and any(k.startswith(flag) for k in known):
            continue  # an abbreviation argparse resolves (or calls ambiguous)
        if not flag.startswith("--") and flag[:2] in known:
            continue  # a short option with its value attached: -nexp-1
        raise UsageError(unknown_option_message(magic, flag, actions))


def unknown_option_message(magic: str, flag: str, actions: list[list[str]]) -> str:
    """``unknown option `--rerunn` for %%step; did you mean `--rerun`? Its options: ...``"""
    import difflib

    options = [flags for flags in actions if "--help" not in flags]
    longs = [f for flags in options for f in flags if f.startswith("--")]
    close = difflib.get_close_matches(flag, longs, n=1, cutoff=0.6)
    if not close and not flag.startswith("--"):  # -rerun for --rerun
        close = difflib.get_close_matches("-" + flag, longs, n=1, cutoff=0.6)
    hint = f"; did you mean `{close[0]}`?" if close else "."
    listed = ", ".join("/".join(flags) for flags in options)
    return f"unknown option `{flag}` for {magic}{hint} Its options: {listed}."


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def show_settings(runtime: Runtime) -> None:
    """``%step_config`` without arguments: each setting, its value, where it comes from."""
    settings = _settings(runtime)
    try:
        store_dir = settings_module.store_dir(settings, Path(runtime.where()[0]))
        namespace = runtime.default_namespace()
    except NbstepError as e:
        raise UsageError(str(e)) from e
    namespace_source = settings.sources["namespace"]
    if namespace_source == settings_module.DEFAULT:
        if namespace.startswith("nb:"):
            namespace_source = "the notebook's id (metadata.nbstep.id)"
        elif namespace.startswith("kernel:"):
            namespace_source = "no notebook named by the runner: this kernel's own"
        elif location.notebook_path(runtime.user_ns):
            namespace_source = "the notebook's path"
        elif namespace.startswith("session:"):
            namespace_source = ("a new notebook's session name: this notebook's own "
                                "namespace until the kernel restarts under its saved name")
        else:
            namespace_source = "no notebook path: the shared default"
    store_source = settings.sources["store"]
    if store_source == settings_module.DEFAULT:
        store_source = "found from the notebook's (or script's) folder"
    rows = [
        ("on mismatch", settings.magic_on_mismatch, settings.sources["magic_on_mismatch"]),
        ("quiet", settings.quiet, settings.sources["quiet"]),
        ("namespace", namespace, namespace_source),
        ("store", store_dir, store_source),
    ]
    if settings_module.is_server_url(settings.store):
        # A team store: the server (its URL without a password: the store's location),
        # and the local folder that holds this machine's mirror and journal.
        rows[-1] = ("store", runtime.store().location, store_source)
        rows.append(("local copy", store_dir / "team", "the mirror and offline journal"))
    width = max(len(r[0]) for r in rows)
    for label, value, where in rows:
        sys.stdout.write(f"{label:<{width}}  {value}    ({where})\n")


def _settings(runtime: Runtime) -> Settings:
    """The settings, re-read for this cell; a bad pyproject.toml is a one-line error."""
    try:
        return runtime.settings(fresh=True)
    except ConfigError as e:
        raise UsageError(str(e)) from e
