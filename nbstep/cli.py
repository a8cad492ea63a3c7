"""The ``nbstep`` command line (also ``python -m nbstep``).

Thin click commands over :mod:`nbstep.cli_store` (the store commands) and
:mod:`nbstep.runner` (``nbstep run``). Exit codes: 0 success; 1 a notebook failed,
``verify`` found damage, a value cannot be exported in that format, the store could
not be used, or ``forget`` was not confirmed; 2 a usage error (bad option, unknown
notebook, key, occurrence or kernel, no store); 130 ``run`` interrupted. See docs/cli.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# This module is loaded only by the `nbstep` command, never by `import nbstep`, and
# click's decorators need click at import time; the ruff ban on module-level click
# imports protects the package's cheap front door, which this is not.
import click  # noqa: TID253

from . import __version__
from .errors import NbstepError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CommandError(click.ClickException):
    """A ClickException with a chosen exit code (2 for "no such thing")."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Group(click.Group):
    """Turns nbstep's own errors into clean one-message exits (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        from .cli_store import NotFound
        from .runner import RunError

        try:
            return super().invoke(ctx)
        except NotFound as e:
            raise CommandError(str(e), 2) from e
        except RunError as e:
            raise CommandError(str(e), 2) from e
        except NbstepError as e:
            raise CommandError(str(e), 1) from e


class State:
    """The ``--store`` choice, and the Store opened from it on first use."""

    def __init__(self, store: str | None) -> None:
        self.store_arg = store
        self._store: Any = None

    def root(self) -> Path:
        from .cli_store import store_dir

        return store_dir(self.store_arg)

    def store(self) -> Any:
        if self._store is None:
            from .cli_store import open_store

            self._store = open_store(self.root())
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _color(ctx: click.Context, stream: Any) -> bool:
    if ctx.color is not None:
        return bool(ctx.color)
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"


@click.group(cls=_Group, context_settings=CONTEXT)
@click.option(
    "--store", metavar="DIR", envvar="NBSTEP_STORE", show_envvar=True,
    help="The store directory (the `.nbstep` folder). Default: found as the engine "
         "finds it (pyproject.toml [tool.nbstep], then the nearest `.nbstep`).",
)
@click.version_option(__version__, "-V", "--version", prog_name="nbstep")
@click.pass_context
def cli(ctx: click.Context, store: str | None) -> None:
    """Run notebooks with durable steps, and look after the step store.

    \b
    Examples:
      nbstep run analysis.ipynb                  # compute once, replay after
      nbstep run notebooks/*.ipynb --inplace     # keep the executed outputs
      nbstep ls                                  # notebooks in the store
      nbstep show analysis.ipynb load            # one recorded value
      nbstep --store /data/.nbstep gc --dry-run  # what gc would free

    A NOTEBOOK argument is a notebook's path or its namespace as `nbstep ls` shows it.
    Set NO_COLOR to turn colour off on a terminal.
    """
    if os.environ.get("NO_COLOR"):
        ctx.color = False
    state = State(store)
    ctx.obj = state
    ctx.call_on_close(state.close)


# -- run ------------------------------------------------------------------------------


class NotebookPath(click.Path):
    """An existing notebook file; a mistyped one gets the close names in its folder."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            hint = _close_files(str(value))
            if hint:
                e.message += f" Did you mean {hint}?"
            raise


def _close_files(name: str) -> str:
    import difflib

    folder, base = os.path.split(name)
    try:
        files = [f for f in os.listdir(folder or ".") if f.endswith(".ipynb")]
    except OSError:
        return ""
    close = difflib.get_close_matches(base, files, n=3, cutoff=0.6)
    return " or ".join(f"`{os.path.join(folder, f)}`" for f in close)


@cli.command(context_settings=CONTEXT)
@click.argument("notebooks", nargs=-1, required=True,
                type=NotebookPath())
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="PATH",
              help="Write the executed notebook here (a folder when several notebooks run).")
@click.option("--inplace", is_flag=True, help="Write the executed notebook over the input.")
@click.option("--rerun", is_flag=True,
              help="Recompute every step and record new versions (nothing replays).")
@click.option("--on-mismatch", type=click.Choice(["error", "rerun"]),
              help="When a step's input no longer matches its record: fail (error) or "
                   "recompute and record a new version (rerun). Sets both defaults; "
                   "without it each keeps its own (step.run: error; %%step: rerun).")
@click.option("--timeout", type=click.IntRange(min=1), metavar="SECONDS",
              help="Fail a cell that runs longer than this. Default: no limit.")
@click.option("--kernel", "kernel_name", metavar="NAME",
              help="Jupyter kernel to use. Default: the notebook's own kernelspec.")
@click.option("--keep-going", is_flag=True,
              help="After a notebook fails, still run the next ones.")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path),
              metavar="PATH", help="Also write the summary as JSON to PATH.")
@click.pass_context
def run(ctx: click.Context, notebooks: tuple[Path, ...], output: Path | None, inplace: bool,
        rerun: bool, on_mismatch: str | None, timeout: int | None, kernel_name: str | None,
        keep_going: bool, summary_json: Path | None) -> None:
    """Execute notebooks with a real kernel, replaying recorded steps.

    Each notebook runs in a fresh kernel started in its folder, as its own namespace
    (its path relative to the store's parent folder). Progress shows cell by cell on
    stderr; a summary of steps replayed, computed and failed, wall time and the compute
    time replay saved goes to stdout.

    A failing cell stops its notebook: its source and traceback are shown, the exit
    code is 1, and the executed notebook is still written (with --output or
    --inplace), so every output up to the failure is kept. Without --output or
    --inplace nothing is written: the input is never modified.

    \b
    Examples:
      nbstep run analysis.ipynb
      nbstep run analysis.ipynb -o out/analysis.ipynb --timeout 3600
      nbstep run notebooks/*.ipynb -o executed/ --keep-going
      nbstep run analysis.ipynb --rerun          # recompute everything
      nbstep --store /data/.nbstep run a.ipynb   # one store for every notebook
    """
    from . import runner

    state: State = ctx.obj
    if output is not None and inplace:
        raise click.UsageError("give --output or --inplace, not both")
    targets = _outputs(notebooks, output, inplace)
    if kernel_name:
        runner.check_kernel(kernel_name)  # a typo fails at once, before any notebook runs
    options = runner.RunOptions(
        store=state.root() if state.store_arg else None,
        timeout=timeout, kernel=kernel_name, rerun=rerun, on_mismatch=on_mismatch,
    )
    color = _color(ctx, sys.stderr)
    width = shutil.get_terminal_size((100, 24)).columns
    progress = runner.Progress(sys.stderr, color=color, live=color and runner.stderr_is_live(),
                               width=width)
    results: list[runner.NotebookResult] = []
    skipped: list[Path] = []
    started = time.monotonic()
    for i, path in enumerate(notebooks):
        if results and not results[-1].ok and (results[-1].interrupted or not keep_going):
            skipped = list(notebooks[i:])
            break
        try:
            result = runner.run_notebook(path, options, progress, targets[i])
        except runner.RunError:
            raise
        except NbstepError as e:
            result = runner.NotebookResult(path=path.resolve(), namespace="?", store=Path("?"),
                                           error=str(e))
        results.append(result)
        if not result.ok:
            progress.write(runner.failure_text(result))
        progress.write(runner.notebook_line(result))
    wall = time.monotonic() - started
    summary = runner.summary_text(results, skipped, wall)
    if not any(r.written for r in results):
        summary += "\n  outputs     not saved (pass --inplace or --output PATH to keep them)"
    click.echo(summary)
    if summary_json is not None:
        summary_json.write_text(runner.summary_json(results, skipped, wall) + "\n")
    if skipped:
        after = "interrupt" if results[-1].interrupted else "failure (--keep-going runs them)"
        click.echo(f"not run: {', '.join(str(p) for p in skipped)}, after the {after}")
    if any(r.interrupted for r in results):
        ctx.exit(130)  # the shell's code for "stopped by SIGINT"
    if not all(r.ok for r in results) or skipped:
        ctx.exit(1)


def _outputs(notebooks: tuple[Path, ...], output: Path | None,
             inplace: bool) -> list[Path | None]:
    if inplace:
        return [Path(os.path.abspath(p)) for p in notebooks]
    if output is None:
        return [None] * len(notebooks)
    as_folder = output.is_dir() or str(output).endswith(("/", os.sep)) or len(notebooks) > 1
    if not as_folder:
        return [Path(os.path.abspath(output))]
    if output.suffix == ".ipynb" or (output.exists() and not output.is_dir()):
        raise click.UsageError(
            f"--output {output} must be a folder when several notebooks run"
        )
    targets = [Path(os.path.abspath(output / p.name)) for p in notebooks]
    if len(set(targets)) < len(targets):
        raise click.UsageError(
            "two notebooks have the same file name and would be written to the same "
            f"place in {output}; run them separately with their own --output"
        )
    return list(targets)


# -- ls / inspect / show / export -------------------------------------------------------


@cli.command("ls", context_settings=CONTEXT)
@click.argument("notebook", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
def ls(state: State, notebook: str | None, fmt: str) -> None:
    """List the notebooks in the store, or one notebook's steps.

    For each notebook: its current steps, their size, the size of older versions
    that `nbstep gc` would free, and when a step was last recorded. For one notebook:
    each current step with its occurrence, size, compute time and when it was recorded.

    \b
    Examples:
      nbstep ls
      nbstep ls analysis.ipynb
      nbstep ls --format json
    """
    import json

    from . import cli_store

    store = state.store()
    if notebook is None:
        rows = cli_store.list_notebooks(store)
        if fmt == "json":
            click.echo(json.dumps(rows, indent=2))
        elif rows:
            click.echo(cli_store.notebooks_table(rows))
        else:
            click.echo(f"no records in {store.root}")
        return
    namespace = cli_store.resolve_namespace(store, notebook)
    records = cli_store.list_steps(store, namespace)
    if fmt == "json":
        click.echo(json.dumps([
            {"key": r.key, "occurrence": r.sequence, "size_bytes": r.size_bytes,
             "duration_s": r.duration_s, "recorded_at_us": r.occurred_at_us,
             "reason": r.reason, "codec": r.codec,
             "stored": "object" if r.object_sha256 else "inline"}
            for r in records
        ], indent=2))
    elif records:
        click.echo(f"{namespace}  ({len(records)} current steps)")
        click.echo(cli_store.steps_table(records))
    else:
        click.echo(f"`{namespace}` has no current steps (all forgotten)")


@cli.command(context_settings=CONTEXT)
@click.argument("notebook")
@click.option("--key", help="Only this step's records.")
@click.option("--all", "include_all", is_flag=True,
              help="Include superseded and forgotten records (default: current only).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True)
@click.option("--no-results", is_flag=True, help="Do not load the values (faster).")
@click.pass_obj
def inspect(state: State, notebook: str, key: str | None, include_all: bool, fmt: str,
            no_results: bool) -> None:
    """Show a notebook's records, as `step.inspect()` returns them.

    The table shows a summary of each value; csv and json carry every column of
    `step.inspect()`, with values that are JSON as themselves and others summarized
    (use `nbstep export` for a value itself).

    \b
    Examples:
      nbstep inspect analysis.ipynb
      nbstep inspect analysis.ipynb --key train --all
      nbstep inspect analysis.ipynb --format json > records.json
    """
    from . import cli_store
    from .errors import StepReplayError

    store = state.store()
    namespace = cli_store.resolve_namespace(store, notebook)
    results = not no_results
    try:
        frame = cli_store.inspect_frame(store, namespace, key, include_all, results)
    except StepReplayError as e:
        # One damaged value should not hide every record: show them without values.
        click.echo(f"note: values not shown, one cannot be read back: {e}", err=True)
        results = False
        frame = cli_store.inspect_frame(store, namespace, key, include_all, results)
    if frame.empty and key is not None and not include_all and fmt == "table":
        click.echo(f"step `{key}` has no current record in `{namespace}`; --all shows its history")
        return
    click.echo(cli_store.render_inspect(frame, fmt, results))


@cli.command(context_settings=CONTEXT)
@click.argument("notebook")
@click.argument("key")
@click.option("--occurrence", type=click.IntRange(min=1), metavar="N",
              help="Which occurrence of the key (default: the first).")
@click.option("--rows", type=click.IntRange(min=0), default=10, show_default=True,
              help="Rows of a DataFrame's head to show.")
@click.pass_obj
def show(state: State, notebook: str, key: str, occurrence: int | None, rows: int) -> None:
    """Show one recorded value.

    A DataFrame shows its shape, dtypes and first rows; an array its shape and dtype;
    anything else is pretty-printed. A %%step cell's record lists its variables (type
    and a summary of each), its result and how many outputs it recorded.

    \b
    Examples:
      nbstep show analysis.ipynb load
      nbstep show analysis.ipynb fetch --occurrence 2 --rows 20
    """
    from . import cli_store

    record, note, value, cell = cli_store.load_one(state.store(), notebook, key, occurrence)
    click.echo(cli_store.record_header(record))
    if note:
        click.echo(note)
    click.echo("")
    if cell is not None:
        click.echo(cli_store.render_cell(cell))
    else:
        click.echo(cli_store.render_value(value, rows=rows))


@cli.command(context_settings=CONTEXT)
@click.argument("notebook")
@click.argument("key")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--occurrence", type=click.IntRange(min=1), metavar="N",
              help="Which occurrence of the key (default: the first).")
@click.option("--var", "var", metavar="NAME",
              help="For a %%step cell: the variable to write (needed when the cell bound "
                   "more than one).")
@click.pass_obj
def export(state: State, notebook: str, key: str, path: Path, occurrence: int | None,
           var: str | None) -> None:
    """Write a recorded value to a file; the extension picks the format.

    A DataFrame (or Series) goes to .parquet, .csv or .pkl; any other value to .json
    (if it is plain JSON data) or .pkl. An existing file is replaced. For a %%step
    cell, --var NAME picks the variable (the only one when the cell bound one).

    \b
    Examples:
      nbstep export analysis.ipynb load load.parquet
      nbstep export analysis.ipynb params params.json
      nbstep export analysis.ipynb model model.pkl --occurrence 2
      nbstep export analysis.ipynb train scores.csv --var scores
    """
    from . import cli_store
    from . import cli_text as text

    record, note, value, cell = cli_store.load_one(state.store(), notebook, key, occurrence)
    what = f"step `{key}`"
    if cell is not None:
        name, value = cli_store.cell_variable(cell, var, key)
        what = f"variable `{name}` of step `{key}`"
    elif var is not None:
        raise click.UsageError(
            f"--var is for %%step cells; step `{key}` was recorded by step.run, whose "
            "value is exported as a whole"
        )
    fmt = cli_store.export_value(value, path)
    click.echo(
        f"wrote {what} occurrence {record.sequence} of `{record.namespace}` to {path} "
        f"({fmt}, {text.size(path.stat().st_size)})"
    )
    if note:
        click.echo(note)


# -- forget / gc / verify ---------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("notebook")
@click.argument("keys", nargs=-1)
@click.option("-y", "--yes", is_flag=True, help="Do not ask before forgetting a whole notebook.")
@click.pass_obj
def forget(state: State, notebook: str, keys: tuple[str, ...], yes: bool) -> None:
    """Make steps recompute the next time their notebook runs.

    With KEYs, forgets those steps (every occurrence); without, every step of the
    notebook, after asking. The records stay until `nbstep gc` drops them.

    \b
    Examples:
      nbstep forget analysis.ipynb train evaluate
      nbstep forget analysis.ipynb --yes
    """
    from . import cli_store
    from . import cli_text as text

    store = state.store()
    namespace = cli_store.resolve_namespace(store, notebook)
    if keys:
        for key in keys:
            cli_store.resolve_records(store, namespace, key)  # all known before any forget
        counts = {key: store.forget(namespace, key) for key in dict.fromkeys(keys)}
        total = sum(counts.values())
        click.echo(
            f"forgot {text.plural(total, 'record')} of `{namespace}` "
            f"({', '.join(f'{k}: {n}' for k, n in counts.items())}); "
            "they recompute on the next run. `nbstep gc` reclaims their space."
        )
        return
    current = store.current(namespace)
    if not current:
        click.echo(f"`{namespace}` has no current steps; nothing to forget")
        return
    store.release()  # do not hold the store while a person reads the question
    if not yes and not _confirm(
        f"Forget all {text.plural(len(current), 'step')} of `{namespace}`? "
        "They recompute on the next run",
        f"forgetting every step of `{namespace}` needs a confirmation, and no answer came "
        "(stdin is not a terminal). Pass --yes to forget them all, or name the steps: "
        "nbstep forget NOTEBOOK KEY...",
    ):
        click.echo(f"nothing forgotten; `{namespace}` keeps its steps", err=True)
        click.get_current_context().exit(1)
    total = store.forget(namespace)
    click.echo(
        f"forgot {text.plural(total, 'record')} of `{namespace}`; they recompute on the "
        "next run. `nbstep gc` reclaims their space."
    )


def _confirm(question: str, unanswerable: str) -> bool:
    """Ask on the terminal. Without one (CI, a pipe that ends), say what to pass
    instead of click's bare "Aborted!"; a piped answer still counts."""
    terminal = sys.stdin is not None and sys.stdin.isatty()
    try:
        answer = click.confirm(question, default=False, err=True)
    except click.Abort:
        if terminal:
            raise  # Ctrl-C or Ctrl-D at a terminal: a person stopped it
        click.echo("", err=True)  # end the unanswered question's line
        raise CommandError(unanswerable, 1) from None
    if not terminal:
        click.echo("", err=True)  # a piped answer is not echoed: end the line
    return answer


@cli.command(context_settings=CONTEXT)
@click.option("--dry-run", is_flag=True, help="Report what would be freed; change nothing.")
@click.option("--grace", "grace_seconds", type=click.FloatRange(min=0), default=3600.0,
              show_default=True, metavar="SECONDS",
              help="Keep unreferenced files younger than this: a running kernel may be "
                   "about to record one. 0 only when no notebook is running.")
@click.pass_obj
def gc(state: State, dry_run: bool, grace_seconds: float) -> None:
    """Drop superseded and forgotten records and unreferenced object files.

    Current records are never touched. Reports the events dropped, the object files
    removed and the bytes they freed, and the size of the database file (steps.duckdb,
    where small values live) and of the whole store before and after.

    \b
    Examples:
      nbstep gc --dry-run
      nbstep gc
      nbstep gc --grace 0      # no notebook is running: free everything now
    """
    from . import cli_store

    store = state.store()
    store.release()  # the files as they are with nothing attached
    before = cli_store.store_bytes(store.root)
    db_before = cli_store.db_bytes(store.root)
    report = store.gc(dry_run=dry_run, grace_seconds=grace_seconds)
    kept = cli_store.young_unreferenced(store, grace_seconds)
    after = db_after = None
    if not dry_run:
        store.release()
        after = cli_store.store_bytes(store.root)
        db_after = cli_store.db_bytes(store.root)
    click.echo(cli_store.gc_text(report, dry_run, before, after, kept, grace_seconds,
                                 db_before, db_after))


@cli.command(context_settings=CONTEXT)
@click.option("--decode", is_flag=True,
              help="Also decode every value stored in an object file (slower).")
@click.pass_context
def verify(ctx: click.Context, decode: bool) -> None:
    """Check that every recorded value can be read back; exit 1 on damage.

    Every object file must exist with the recorded size and sha256, and every inline
    value must decode. Damaged steps are listed with the `nbstep forget` line that
    makes them recompute.

    \b
    Examples:
      nbstep verify
      nbstep verify --decode
    """
    from . import cli_store

    state: State = ctx.obj
    report = cli_store.verify(state.store(), decode=decode)
    click.echo(cli_store.verify_text(report))
    if not report.ok:
        ctx.exit(1)


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="nbstep")
