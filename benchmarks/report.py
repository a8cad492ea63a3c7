"""Timing helpers, the Markdown tables every benchmark prints, and the summary.

Each part of the benchmark prints its own table and adds its headline figures to
``FIGURES``: what nbstep measured, what the peer it is compared with measured in the
same run, their ratio, and the target. ``summary()`` prints them as one table (the one
in the README).
"""

from __future__ import annotations

import gc
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def per_call(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """(median, p99) seconds of fn(i) for i in range(n)."""
    times = []
    clock = time.perf_counter
    for i in range(n):
        start = clock()
        fn(i)
        times.append(clock() - start)
    times.sort()
    return statistics.median(times), percentile(times, 0.99)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of fn() over ``repeat`` runs (cold page cache not attempted)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def python(code: str, *args: str, env: dict[str, str] | None = None,
           cwd: str | None = None) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON document, returned here.

    The code runs from a file (not ``-c``): joblib, for one, finds a function's source
    to key its cache, and cannot for code given on the command line.
    """
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    script = Path(tempfile.gettempdir()) / f"nbstep-bench-{digest}.py"
    if not script.exists():
        script.write_text(code)
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


@dataclass
class Figure:
    """One headline figure: nbstep's number, the peer's, and the target."""

    what: str
    nbstep: str
    peer: str = ""
    ratio: float | None = None  # nbstep / peer (lower is better), where there is a peer
    target: str = ""
    met: bool | None = None


FIGURES: list[Figure] = []


def figure(what: str, nbstep: str, *, peer: str = "", ratio: float | None = None,
           target: str = "", met: bool | None = None) -> None:
    FIGURES.append(Figure(what, nbstep, peer, ratio, target, met))


def summary() -> None:
    if not FIGURES:
        return
    rows = [[f.what, f.nbstep, f.peer, "" if f.ratio is None else f"{f.ratio:.2f}",
             f.target, {True: "yes", False: "**no**", None: ""}[f.met]] for f in FIGURES]
    table("Summary: every headline figure of this run", ["figure", "nbstep", "peer", "ratio",
                                                         "target", "met"], rows)
