"""Peak memory recording and replaying a large frame, each in a fresh process.

The ratio is the process's peak resident memory over the frame's size (the frame
itself counts: 1.0 would be the frame and nothing else).
"""

from __future__ import annotations

from pathlib import Path

from report import figure, python, table

CHILD = """
import json, os, resource, sys
import numpy as np, pandas as pd
import nbstep
from nbstep import step
mode, store, rows, layout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
nbstep.configure(store=store, namespace=f"memory-{layout}")
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if mode == "record":
    rng = np.random.default_rng(0)
    if layout == "rows":  # a row-major 2-D array wrapped as a frame: columns strided
        frame = pd.DataFrame(rng.random((rows, 10)), columns=[f"c{i}" for i in range(10)],
                             copy=False)
    else:  # columns contiguous, as pandas builds frames (read_csv, dicts, most operations)
        frame = pd.DataFrame({f"c{i}": rng.random(rows) for i in range(10)}, copy=False)
    before = peak()
    step.run("frame", lambda: frame)
else:
    before = peak()
    frame = step.run("frame", lambda: 1 / 0)
    frame["c0"] += 1.0  # touch it: the columns are writable, and now in memory
size = int(frame.memory_usage(index=True).sum())
print(json.dumps({"size": size, "before": before, "peak": peak()}))
"""


def bench_memory(tmp: Path, rows: int) -> None:
    store = tmp / "memory-store"
    results = {}
    for layout in ("columns", "rows"):
        for mode in ("record", "replay"):
            results[(layout, mode)] = python(CHILD, mode, str(store), str(rows), layout)
    size = results[("columns", "record")]["size"]
    rows_out = []
    for (layout, mode), r in results.items():
        rows_out.append([mode, "contiguous columns" if layout == "columns"
                         else "row-major 2-D array", f"{r['peak'] / 1e6:,.0f} MB",
                         f"{r['peak'] / r['size']:.2f}"])
    table(f"Peak memory with a {size / 1e6:,.0f} MB frame, each in a fresh process",
          ["", "frame layout", "peak resident memory", "peak / frame size"], rows_out)
    for mode in ("record", "replay"):
        ratio = results[("columns", mode)]["peak"] / size
        figure(f"{mode} a {size / 1e6:,.0f} MB frame: peak memory / frame size",
               f"{ratio:.2f}", target="≤ 1.3", met=ratio <= 1.3)
