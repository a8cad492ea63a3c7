"""A store at scale: 100,000 records in one notebook and 1,000 more notebooks.

The setup records them through nbstep in one process with the disk flushes turned
off (in that process only: a bulk load need not wait for the disk; the files are
the same). Every measurement then runs in a fresh process, as a user's would.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from report import figure, fmt, python, table

SETUP = """
import json, os, sys
os.fdatasync = lambda fd: None
os.fsync = lambda fd: None
import nbstep
from nbstep import step
store, big, notebooks, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
nbstep.configure(store=store, namespace="big.ipynb")
for i in range(big):
    step.run("item", i, lambda x: {"v": x, "label": f"row-{x}"})
for j in range(notebooks):
    nbstep.configure(namespace=f"nb-{j:04d}.ipynb")
    step.run("load", lambda: {"rows": j})
nbstep.configure(namespace="small.ipynb")
for i in range(small):
    step.run("item", i, lambda x: {"v": x})
print(json.dumps(0))
"""

FIRST_REPLAY = """
import json, sys, time
import nbstep
from nbstep import step
nbstep.configure(store=sys.argv[1], namespace=sys.argv[2])
t = time.perf_counter()
step.run("item", 0, lambda x: 1 / 0)  # what Run All replays first
first = time.perf_counter() - t
print(json.dumps(first))
"""

STEADY = """
import json, sys, time
import nbstep
from nbstep import step
nbstep.configure(store=sys.argv[1], namespace="small.ipynb")
n = int(sys.argv[2])
step.run("item", 0, lambda x: 1 / 0)
nbstep.reset()
times = []
for i in range(n):
    t = time.perf_counter()
    step.run("item", i, lambda x: 1 / 0)
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps(times[len(times) // 2]))
"""

INSPECT = """
import json, sys, time
import pandas
import nbstep
from nbstep import step
nbstep.configure(store=sys.argv[1], namespace="big.ipynb")
t = time.perf_counter()
frame = step.inspect(results=False)
first = time.perf_counter() - t
assert len(frame) == int(sys.argv[2]), len(frame)
t = time.perf_counter()
step.inspect(results=False)
again = time.perf_counter() - t
t = time.perf_counter()
step.inspect()
values = time.perf_counter() - t
print(json.dumps([first, again, values]))
"""


def _nbstep_ls(store: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nbstep", "--store", str(store), "ls"],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return elapsed


def bench_scale(tmp: Path, big: int, notebooks: int, repeat: int) -> None:
    small = 100
    store, lone = tmp / "scale-store", tmp / "scale-lone"
    started = time.perf_counter()
    python(SETUP, str(store), str(big), str(notebooks), str(small))
    python(SETUP, str(lone), "0", "0", str(small))
    setup = time.perf_counter() - started
    rows = []
    first = statistics.median(python(FIRST_REPLAY, str(store), "big.ipynb")
                              for _ in range(repeat))
    rows.append([f"first replay in a fresh process, notebook of {big:,} records", fmt(first)])
    cold_ls = _nbstep_ls(store)  # the first: the table catches up with every log
    ls = statistics.median(_nbstep_ls(store) for _ in range(repeat))
    rows.append([f"`nbstep ls` over {notebooks + 2:,} notebooks, first (table catches up "
                 "with the logs)", fmt(cold_ls)])
    rows.append([f"`nbstep ls` over {notebooks + 2:,} notebooks, afterwards", fmt(ls)])
    inspect_runs = [python(INSPECT, str(store), str(big)) for _ in range(repeat)]
    first_inspect, again, values = (statistics.median(r[i] for r in inspect_runs)
                                    for i in range(3))
    rows.append([f"`step.inspect(results=False)` over {big:,} events, first in a process",
                 fmt(first_inspect)])
    rows.append([f"`step.inspect(results=False)` over {big:,} events, again", fmt(again)])
    rows.append([f"`step.inspect()` over {big:,} events, with values", fmt(values)])
    crowded = statistics.median(python(STEADY, str(store), str(small)) for _ in range(repeat))
    alone = statistics.median(python(STEADY, str(lone), str(small)) for _ in range(repeat))
    rows.append([f"replay per step (p50), {small} steps, store of {big + notebooks + small:,} "
                 "records", fmt(crowded)])
    rows.append([f"replay per step (p50), {small} steps, store of {small} records",
                 fmt(alone)])
    table(f"A store at scale (setup {setup:.0f} s; median of {repeat})", ["what", "time"], rows)
    figure(f"first replay in a notebook of {big:,} records", fmt(first), target="≤ 50 ms",
           met=first <= 0.050)
    figure(f"`step.inspect(results=False)` over {big:,} events", fmt(again),
           target="≤ 300 ms", met=again <= 0.300)
    figure(f"`nbstep ls` over {notebooks + 2:,} notebooks", fmt(ls), target="≤ 300 ms",
           met=ls <= 0.300)
    figure(f"replay per step, store of {big + notebooks + small:,} records vs {small}",
           fmt(crowded), peer=f"{fmt(alone)} alone", ratio=crowded / alone,
           target="ratio ≤ 1.1", met=crowded / alone <= 1.1)
