"""What loading nbstep costs a fresh interpreter, and a fresh IPython kernel."""

from __future__ import annotations

import statistics

from report import figure, fmt, python, table

IMPORT = """
import json, time
t = time.perf_counter()
{statement}
print(json.dumps(time.perf_counter() - t))
"""

LOAD_EXT = """
import json, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t = time.perf_counter()
shell.run_line_magic("load_ext", "nbstep")
print(json.dumps(time.perf_counter() - t))
"""


def bench_imports(repeat: int) -> None:
    rows = []
    results = {}
    for statement in ("import nbstep", "from nbstep import step", "import diskcache",
                      "import joblib", "import duckdb", "import pandas"):
        runs = [python(IMPORT.format(statement=statement)) for _ in range(repeat)]
        results[statement] = statistics.median(runs)
        rows.append([f"`{statement}`", fmt(results[statement])])
    load_ext = statistics.median(python(LOAD_EXT) for _ in range(repeat))
    rows.append(["`%load_ext nbstep` in a fresh IPython shell", fmt(load_ext)])
    table(f"Loading cost in a fresh interpreter, over bare python (median of {repeat})",
          ["statement", "time"], rows)
    cost = results["import nbstep"]
    figure("`import nbstep` over bare python", fmt(cost), target="≤ 30 ms",
           met=cost <= 0.030)
    figure("`%load_ext nbstep` over bare IPython", fmt(load_ext), target="≤ 50 ms",
           met=load_ext <= 0.050)
