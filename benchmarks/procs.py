"""Many processes on one store: throughput and per-step latency.

Eight processes start together. "Own notebooks": each records small steps in its own
notebook. "One notebook": all run in the same notebook, each alternating a step of
its own with a step another process also runs (replayed when that one recorded it
first, else computed here and replayed there), as Run All in several kernels does. The
peer is the floor for durable appends: each process appends a line to a file and
fdatasyncs it (its own file, or one shared file).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from report import figure, fmt, percentile, table

WORKER = """
import json, os, sys, time
tool, root, w, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
shared = sys.argv[5] == "1"
value = lambda x: {"w": w, "i": x, "label": f"row-{x}"}
replays = None
if tool == "nbstep":
    import nbstep
    from nbstep import step
    nbstep.configure(store=root, namespace="shared.ipynb" if shared else f"proc-{w}.ipynb")
    step.run(f"warm-{w}", lambda: 1)
    def record(i):
        step.run(f"item-{w}", i, value)
    if shared:
        other = (w + 1) % int(sys.argv[6])
        def replay(i):
            # The step another process records (same key, input and value), as a Run
            # All in another kernel would meet it: replayed if it is there already,
            # else computed and recorded here (that process then replays it).
            step.run(f"item-{other}", i, lambda x: {"w": other, "i": x, "label": f"row-{x}"})
        replays = replay
else:
    os.makedirs(root, exist_ok=True)
    fd = os.open(os.path.join(root, "shared.log" if shared else f"{w}.log"),
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    def record(i):
        os.write(fd, (json.dumps(value(i)) + "\\n").encode())
        os.fdatasync(fd)
print("ready", flush=True)
sys.stdin.readline()
records, replay_times = [], []
start = time.perf_counter()
for i in range(n):
    t = time.perf_counter()
    record(i)
    records.append(time.perf_counter() - t)
    if replays is not None:
        t = time.perf_counter()
        replays(i)
        replay_times.append(time.perf_counter() - t)
print(json.dumps({"records": records, "replays": replay_times,
                  "wall": time.perf_counter() - start}), flush=True)
"""


def _run(tool: str, root: Path, procs: int, steps: int, shared: bool,
         script: Path) -> dict[str, float]:
    workers = [
        subprocess.Popen([sys.executable, str(script), tool, str(root), str(w), str(steps),
                          "1" if shared else "0", str(procs)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for w in range(procs)
    ]
    for p in workers:
        line = p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"a {tool} worker did not start: {line!r}")
    started = time.perf_counter()
    for p in workers:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in workers]
    wall = time.perf_counter() - started
    for p in workers:
        p.wait(timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"a {tool} worker failed ({p.returncode})")
    records = sorted(t for r in results for t in r["records"])
    replays = sorted(t for r in results for t in r["replays"])
    return {
        "throughput": (len(records) + len(replays)) / wall,
        "p50": statistics.median(records),
        "p99": percentile(records, 0.99),
        "replay_p99": percentile(replays, 0.99) if replays else None,
    }


def bench_processes(tmp: Path, procs: int, steps: int) -> None:
    script = tmp / "proc_worker.py"
    script.write_text(WORKER)
    rows = []
    measured = {}
    for shared in (False, True):
        for tool in ("nbstep", "append + fdatasync"):
            kind = "nbstep" if tool == "nbstep" else "line"
            result = _run(kind, tmp / f"procs-{kind}-{shared}", procs, steps, shared, script)
            measured[(kind, shared)] = result
            rows.append([tool, "one notebook (record + replay)" if shared else "own notebooks",
                         f"{result['throughput']:,.0f}/s", fmt(result["p50"]),
                         fmt(result["p99"]),
                         "" if result["replay_p99"] is None else fmt(result["replay_p99"])])
    table(f"{procs} processes x {steps} small steps on one store",
          ["tool", "notebooks", "steps per second (all)", "record p50", "record p99",
           "replay p99"], rows)
    for shared, what in ((False, "each its own notebook"), (True, "one notebook, record + "
                                                                  "replay")):
        ours, line = measured[("nbstep", shared)], measured[("line", shared)]
        p99 = max(ours["p99"], ours["replay_p99"] or 0.0)
        met = ours["throughput"] >= 2000 and p99 <= 0.020
        figure(f"{procs} processes on one store, {what}",
               f"{ours['throughput']:,.0f} steps/s, p99 {fmt(p99)}",
               peer=f"append + fdatasync {line['throughput']:,.0f}/s, p99 {fmt(line['p99'])}",
               ratio=line["throughput"] / ours["throughput"],
               target="≥ 2,000 steps/s, p99 ≤ 20 ms", met=met)
