"""Several processes on one store: throughput and per-step latency.

Each process runs ``steps`` steps on the shared store: it records a step of its
own, then replays one it recorded earlier, alternating (so half the operations
write). The same work runs against diskcache (one shared cache directory) and a
pickle file per result (fsync + rename) for comparison.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

WORKER = textwrap.dedent(
    """
    import json, os, pickle, sys, time
    tool, root, w, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    value = lambda i: {"w": w, "i": i, "label": f"row-{i}"}
    if tool == "nbstep":
        os.environ["NBSTEP_STORE"] = root
        import nbstep
        from nbstep import step
        nbstep.configure(namespace=f"proc-{w}")
        for i in range(n // 2):
            step.run("item-replay", i, value)
        nbstep.reset()
        replay_seq = iter(range(n))
        record = lambda i: step.run("item", i, value)
        replay = lambda i: step.run("item-replay", next(replay_seq), value)
    elif tool == "diskcache":
        import diskcache
        cache = diskcache.Cache(root)
        record = lambda i: cache.set(("item", w, i), value(i))
        for i in range(n // 2):
            cache.set(("replay", w, i), value(i))
        replay_seq = iter(range(n))
        replay = lambda i: cache.get(("replay", w, next(replay_seq)))
    else:
        os.makedirs(root, exist_ok=True)
        def put(key, v):
            tmp = os.path.join(root, "." + key)
            with open(tmp, "wb") as f:
                pickle.dump(v, f, protocol=5); f.flush(); os.fsync(f.fileno())
            os.replace(tmp, os.path.join(root, key))
        record = lambda i: put(f"item-{w}-{i}", value(i))
        for i in range(n // 2):
            put(f"replay-{w}-{i}", value(i))
        replay_seq = iter(range(n))
        def replay(i):
            with open(os.path.join(root, f"replay-{w}-{next(replay_seq)}"), "rb") as f:
                return pickle.load(f)
    print("ready", flush=True)
    sys.stdin.readline()
    times = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        (record if i % 2 == 0 else replay)(i)
        times.append(time.perf_counter() - t)
    print(json.dumps({"times": times, "wall": time.perf_counter() - start}), flush=True)
    """
)


def _run(tool: str, root: Path, procs: int, steps: int, script: Path) -> dict[str, float]:
    workers = [
        subprocess.Popen([sys.executable, str(script), tool, str(root), str(w), str(steps)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for w in range(procs)
    ]
    for p in workers:
        assert p.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for p in workers:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in workers]
    wall = time.perf_counter() - started
    for p in workers:
        p.wait(timeout=60)
        assert p.returncode == 0
    times = sorted(t for r in results for t in r["times"])
    return {
        "throughput": len(times) / wall,
        "p50": statistics.median(times),
        "p99": times[int(len(times) * 0.99)],
    }


def bench_processes(tmp: Path, steps: int) -> None:
    from report import fmt, table

    script = tmp / "proc_worker.py"
    script.write_text(WORKER)
    rows = []
    for tool in ("nbstep", "diskcache", "pickle-files"):
        for procs in (1, 2, 4):
            result = _run(tool, tmp / f"{tool}-{procs}", procs, steps, script)
            rows.append([tool, str(procs), f"{result['throughput']:,.0f}/s",
                         fmt(result["p50"]), fmt(result["p99"])])
    table(
        f"Processes sharing one store: {steps} steps each, half records, half replays",
        ["tool", "processes", "steps per second (all)", "p50 per step", "p99 per step"],
        rows,
    )
