"""``nbstep run``: execute notebooks headless with a real kernel, replaying steps."""

from __future__ import annotations

import difflib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click  # noqa: TID253

from nbstep.errors import NbstepError

from . import runner
from .parameters import ParameterError
from .parameters import collect as collect_parameters
from .progress import (
    Progress,
    failure_text,
    notebook_line,
    stderr_is_live,
    summary_text,
)
from .progress import summary_json as summary_as_json
from .runner import NotebookResult
from .state import CONTEXT, State, color


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
    folder, base = os.path.split(name)
    try:
        files = [f for f in os.listdir(folder or ".") if f.endswith(".ipynb")]
    except OSError:
        return ""
    close = difflib.get_close_matches(base, files, n=3, cutoff=0.6)
    return " or ".join(f"`{os.path.join(folder, f)}`" for f in close)


@click.command(context_settings=CONTEXT)
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
@click.option("-p", "--parameters", "parsed", nargs=2, multiple=True,
              metavar="NAME VALUE",
              help="Set a parameter, as papermill does: a cell tagged injected-parameters "
                   "assigns it after the cell tagged parameters. VALUE becomes True/False, "
                   "None, an int or a float when it reads as one, else text. Repeatable.")
@click.option("-r", "--parameters-raw", "raw", nargs=2, multiple=True, metavar="NAME VALUE",
              help="Set a parameter to VALUE as text, unparsed. Repeatable.")
@click.option("-f", "--parameters-file", "parameter_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="PATH",
              help="Parameters from a JSON or YAML mapping (-p and -r win over it).")
@click.pass_context
def run(ctx: click.Context, notebooks: tuple[Path, ...], output: Path | None, inplace: bool,
        rerun: bool, on_mismatch: str | None, timeout: int | None, kernel_name: str | None,
        keep_going: bool, summary_json: Path | None, parsed: tuple[tuple[str, str], ...],
        raw: tuple[tuple[str, str], ...], parameter_files: tuple[Path, ...]) -> None:
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
      nbstep run analysis.ipynb -p N 20 -p name "x" -o out.ipynb
      nbstep run analysis.ipynb -r run_id 007 -f params.yaml
      nbstep --store /data/.nbstep run a.ipynb   # one store for every notebook
    """
    state: State = ctx.obj
    if output is not None and inplace:
        raise click.UsageError("give --output or --inplace, not both")
    targets = _outputs(notebooks, output, inplace)
    try:
        parameters = collect_parameters(parameter_files, parsed, raw)
    except ParameterError as e:
        raise click.UsageError(str(e)) from None
    if kernel_name:
        runner.check_kernel(kernel_name)  # a typo fails at once, before any notebook runs
    options = runner.RunOptions(
        store=state.root() if state.store_arg and not state.server() else None,
        server=state.server(),
        timeout=timeout, kernel=kernel_name, rerun=rerun, on_mismatch=on_mismatch,
        parameters=parameters,
    )
    colored = color(ctx, sys.stderr)
    width = shutil.get_terminal_size((100, 24)).columns
    progress = Progress(sys.stderr, color=colored, live=colored and stderr_is_live(),
                        width=width)
    results: list[NotebookResult] = []
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
            result = NotebookResult(path=path.resolve(), namespace="?", store=Path("?"),
                                    error=str(e))
        results.append(result)
        if not result.ok:
            progress.write(failure_text(result))
        progress.write(notebook_line(result))
    wall = time.monotonic() - started
    summary = summary_text(results, skipped, wall)
    if not any(r.written for r in results):
        summary += "\n  outputs     not saved (pass --inplace or --output PATH to keep them)"
    click.echo(summary)
    if summary_json is not None:
        summary_json.write_text(summary_as_json(results, skipped, wall) + "\n")
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
