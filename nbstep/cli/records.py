"""The commands that look at records: ``ls``, ``inspect``, ``show``, ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click  # noqa: TID253

from nbstep.codecs.cell import CellRecord, is_cell_record, read_cell
from nbstep.core.record import Record
from nbstep.engine.inspect import Unreadable, records_frame
from nbstep.engine.lookup import pick_one, resolve_namespace, resolve_records
from nbstep.storage import StepStore

from . import export as exporting
from . import text, views
from .state import CONTEXT, State


@click.command("ls", context_settings=CONTEXT)
@click.argument("notebook", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_obj
def ls(state: State, notebook: str | None, fmt: str) -> None:
    """List the notebooks in the store, or one notebook's steps.

    For each notebook: its file (a notebook with an id is listed as `nb:<id>`), its
    current steps, their size, the size of older versions that `nbstep gc` would
    free, and when a step was last recorded; ORPHANED when its notebook is gone. For one notebook:
    each current step with its occurrence, size, compute time and when it was recorded.

    \b
    Examples:
      nbstep ls
      nbstep ls analysis.ipynb
      nbstep ls --format json
    """
    store = state.store()
    if notebook is None:
        from . import identity

        rows = identity.listed(store, store.admin().summary())
        files = identity.statuses(store, state.namespace_root(), rows)
        if fmt == "json":
            click.echo(views.notebooks_json(rows, files))
        elif rows:
            click.echo(views.notebooks_table(rows, files))
            if any(f.orphaned for f in files.values()):
                click.echo("orphaned: the notebook is gone (`nbstep mv` gives its records "
                           "to where it went; `nbstep gc --orphans` removes them)")
        else:
            click.echo(f"no records in {store.location}")
        return
    namespace = resolve_namespace(store, state.namespace_root(), notebook)
    records = store.current(namespace)
    if fmt == "json":
        click.echo(views.steps_json(records))
    elif records:
        click.echo(f"{namespace}  ({len(records)} current steps)")
        click.echo(views.steps_table(records))
    else:
        click.echo(f"`{namespace}` has no current steps (all forgotten)")


@click.command(context_settings=CONTEXT)
@click.argument("notebook")
@click.option("--key", help="Only this step's records.")
@click.option("--history", is_flag=True,
              help="Include earlier, superseded and forgotten records (default: current only).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True)
@click.option("--results", is_flag=True,
              help="Add the values themselves (csv and json: as JSON when they are).")
@click.option("--no-results", is_flag=True, help="Do not load the values (faster).")
@click.option("--all-columns", is_flag=True,
              help="Every column of step.inspect(all_columns=True): event_id, sequence, "
                   "input hash, size, codec, reason...")
@click.option("--all", "include_all", is_flag=True, hidden=True,
              help="--history --all-columns (the output of nbstep 0.2).")
@click.pass_obj
def inspect(state: State, notebook: str, key: str | None, history: bool, fmt: str,
            results: bool, no_results: bool, all_columns: bool, include_all: bool) -> None:
    """Show a notebook's steps, as `step.inspect()` returns them.

    One row per current step: its key, occurrence, status, when it was recorded, how
    long it took, the time a replay saves, and a one-line summary of its value. csv
    and json carry the same columns, durations in seconds.

    \b
    Examples:
      nbstep inspect analysis.ipynb
      nbstep inspect analysis.ipynb --key train --history
      nbstep inspect analysis.ipynb --all-columns --format json > records.json
    """
    if results and no_results:
        raise click.UsageError("--results and --no-results contradict each other; give one")
    if include_all:
        history = all_columns = True
    store = state.store()
    namespace = resolve_namespace(store, state.namespace_root(), notebook)
    read = not no_results
    frame = _inspect_frame(store, namespace, key, history, read, all_columns)
    unreadable = [r for r in frame["result"] if isinstance(r, Unreadable)] if read else []
    if unreadable:
        # One damaged value does not hide the others: it shows as unreadable.
        click.echo(f"note: {text.plural(len(unreadable), 'value')} cannot be read back "
                   f"(shown as <unreadable>): {unreadable[0].reason}", err=True)
    if read and not (results or all_columns):
        frame = frame.drop(columns=["result"])
    click.echo(views.render_inspect(frame, fmt, all_columns))


@click.command(context_settings=CONTEXT)
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
    record, note, value, cell = _load_one(state, notebook, key, occurrence)
    click.echo(views.record_header(record))
    if note:
        click.echo(note)
    click.echo("")
    if cell is not None:
        click.echo(views.render_cell(cell))
    else:
        click.echo(views.render_value(value, rows=rows))


@click.command(context_settings=CONTEXT)
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
    record, note, value, cell = _load_one(state, notebook, key, occurrence)
    what = f"step `{key}`"
    if cell is not None:
        name, value = exporting.cell_variable(cell, var, key)
        what = f"variable `{name}` of step `{key}`"
    elif var is not None:
        raise click.UsageError(
            f"--var is for %%step cells; step `{key}` was recorded by step.run, whose "
            "value is exported as a whole"
        )
    fmt = exporting.export_value(value, path)
    click.echo(
        f"wrote {what} occurrence {record.sequence} of `{record.namespace}` to {path} "
        f"({fmt}, {text.size(path.stat().st_size)})"
    )
    if note:
        click.echo(note)


def _inspect_frame(store: StepStore, namespace: str, key: str | None, history: bool,
                   results: bool, all_columns: bool) -> Any:
    frame = records_frame(store, namespace, results=results, history=history,
                          all_columns=all_columns)
    if key is not None:
        if not (frame["key"] == key).any():
            resolve_records(store, namespace, key)  # raises with close matches
        frame = frame[frame["key"] == key]
    return frame.reset_index(drop=True)


def _load_one(state: State, notebook: str, key: str, occurrence: int | None
              ) -> tuple[Record, str, Any, CellRecord | None]:
    """The record `show` and `export` act on, its note, its value, and its cell view."""
    store = state.store()
    namespace = resolve_namespace(store, state.namespace_root(), notebook)
    records = resolve_records(store, namespace, key, occurrence)
    record, note = pick_one(records, occurrence)
    value = store.read(record)
    return record, note, value, read_cell(value) if is_cell_record(value) else None
