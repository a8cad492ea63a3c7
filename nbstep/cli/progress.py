"""``nbstep run``'s progress lines and its summary (text and JSON)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nbstep.engine.runtime import STAT_KEYS

from . import text
from .outcomes import CellOutcome, Counts, NotebookResult


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
        return "ok (steps unknown)"
    parts = []
    if counts.replayed:
        parts.append(f"{counts.replayed} replayed")
    if counts.computed:
        parts.append(f"{counts.computed} computed")
    if counts.not_persisted:
        parts.append(f"{counts.not_persisted} not recorded")
    return ", ".join(parts) if parts else "plain (no steps)"


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
    hint = not_loaded_hint(cell.error, result.kernel)
    if hint:
        lines.append(hint)
    return "\n".join(lines)


_NOT_LOADED = (
    "UsageError: Cell magic `%%step` not found",
    "UsageError: Line magic function `%step",  # %step_config, %steps
    "NameError: name 'step' is not defined",
)


def not_loaded_hint(error: str | None, kernel: str) -> str | None:
    """The fix when a cell failed because its kernel never loaded nbstep.

    ``nbstep run`` does not load the extension behind the notebook's back (a notebook
    runs as in Jupyter), so a notebook written for the "Python 3 (nbstep)" kernel and
    run with a plain one finds no ``%%step`` magic and no ``step``.
    """
    if not error or not error.startswith(_NOT_LOADED):
        return None
    return (f"hint: kernel `{kernel}` has not loaded nbstep, so `%%step` and `step` do not "
            "exist there. Add the line `%load_ext nbstep` to the notebook's first code "
            "cell, or run it with the \"Python 3 (nbstep)\" kernel: "
            "`nbstep run --kernel python3-nbstep ...` (or pick that kernel in Jupyter).")


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
        *("  " + line for line in notebooks_table(results).splitlines()),
        "",
        f"  notebooks   {notebooks}",
        f"  {_counts_text(total, known).replace('steps: ', 'steps       ')}",
        f"  wall time   {text.seconds(wall_s)}",
        f"  computing   {text.seconds(total.compute_s)} in computed steps",
        f"  saved       {text.seconds(total.saved_s)} of recorded compute time, by replay",
    ]
    return "\n".join(lines)


def notebooks_table(results: list[NotebookResult]) -> str:
    """One row per notebook: cells run, steps replayed / computed / failed, wall time,
    and the recorded compute time its replays saved."""
    rows = []
    for r in results:
        known = r.counts_known or r.counts.steps
        count = (lambda n: str(n)) if known else (lambda n: "?")  # noqa: E731
        total = r.cells[0].total if r.cells else 0
        rows.append([
            _shown_path(r.path), "ok" if r.ok else "INTERRUPTED" if r.interrupted else "FAILED",
            f"{len(r.cells)}/{total}", count(r.counts.replayed), count(r.counts.computed),
            count(r.counts.failed), text.seconds(r.wall_s), text.seconds(r.counts.saved_s),
        ])
    return text.table(
        ["notebook", "status", "cells", "replayed", "computed", "failed", "time", "saved"],
        rows, right=(2, 3, 4, 5, 6, 7),
    )


def _shown_path(path: Path) -> str:
    """The notebook as the person named it: relative to here when below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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
