"""Readers never block writers: a kernel's step latency while the CLI reads the store.

One process records small steps in a loop (``step.run`` on a fresh slot each time,
durable when it returns) for a fixed time; meanwhile another process runs the CLI
commands a person runs on a store in use, one after the other, each a new process:
``nbstep ls``, ``nbstep inspect NB``, ``nbstep verify`` and ``nbstep gc --dry-run``.
The writer's notebook already holds ``prefill`` records, so reading it is real work.
The table gives the writer's step latency without and with the readers; the target
is p99 with readers within 2x of without, and no step stalled 50 ms or more.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from report import figure, fmt, percentile, table

PREFILL = """
import sys, nbstep
from nbstep import step
root, n = sys.argv[1], int(sys.argv[2])
for namespace in ("quiet.ipynb", "read.ipynb"):
    nbstep.configure(store=root, namespace=namespace)
    for i in range(n):
        step.run(f"old-{i}", i, lambda x: {"i": x, "label": f"row-{x}"})
    nbstep.reset()
print("{}")
"""

WRITER = """
import json, sys, time, nbstep
from nbstep import step
from nbstep.storage.local.namespace_log import NamespaceLog
root, namespace, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
nbstep.configure(store=root, namespace=namespace)
# How long each step waited for its log's lock: what another process can make it
# wait for (the rest of a slow step is the machine: CPU, the disk).
waits = []
take = NamespaceLog._lock_for_write
def timed(self):
    t = time.perf_counter()
    try:
        return take(self)
    finally:
        waits.append(time.perf_counter() - t)
NamespaceLog._lock_for_write = timed
step.run("warm", lambda: 1)
waits.clear()
print("ready", flush=True)
sys.stdin.readline()
times, slow, i = [], [], 0
clock = time.perf_counter
end = clock() + seconds
while clock() < end:
    at, t = time.time(), clock()
    step.run(f"item-{i}", i, lambda x: {"i": x, "label": f"row-{x}"})
    took = clock() - t
    times.append(took)
    if took >= 0.02:
        slow.append([at, took])
    i += 1
print(json.dumps({"times": times, "slow": slow, "waits": waits}), flush=True)
"""

COMMANDS = (["ls"], ["inspect", "read.ipynb"], ["verify"], ["gc", "--dry-run"])


def _python(script: Path, *args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), *args], text=True, **popen)


def _writer(script: Path, root: Path, namespace: str, seconds: float) -> dict[str, list]:
    """One writer run: ``times`` (each step's seconds), ``slow`` (steps of 20 ms or
    more as [wall clock start, seconds]) and ``waits`` (each lock wait's seconds)."""
    writer = _python(script, str(root), namespace, str(seconds),
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert writer.stdin is not None and writer.stdout is not None
    if writer.stdout.readline().strip() != "ready":
        raise RuntimeError("the writer did not start")
    writer.stdin.write("go\n")
    writer.stdin.flush()
    result = json.loads(writer.stdout.readline())
    writer.wait(timeout=60)
    if writer.returncode != 0:
        raise RuntimeError(f"the writer failed ({writer.returncode})")
    return result


def _reader_loop(root: Path, stop: Path, log: Path) -> subprocess.Popen:
    """A process running the CLI commands one after another until ``stop`` exists."""
    code = (
        "import json, os, subprocess, sys, time\n"
        f"commands, stop = {json.dumps([list(c) for c in COMMANDS])}, {str(stop)!r}\n"
        "env = dict(os.environ, NBSTEP_STORE=sys.argv[1])\n"
        "ran = []\n"
        "while not os.path.exists(stop):\n"
        "    for command in commands:\n"
        "        at, t = time.time(), time.perf_counter()\n"
        "        done = subprocess.run([sys.executable, '-m', 'nbstep', *command], env=env,\n"
        "                              capture_output=True, text=True)\n"
        "        if done.returncode not in (0, 1):\n"
        "            sys.exit(f'{command}: {done.stderr[-2000:]}')\n"
        "        ran.append([command[0], time.perf_counter() - t, at])\n"
        "        if os.path.exists(stop):\n"
        "            break\n"
        f"open({str(log)!r}, 'w').write(json.dumps(ran))\n"
    )
    script = log.with_suffix(".py")
    script.write_text(code)
    return subprocess.Popen([sys.executable, str(script), str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def bench_readers(tmp: Path, quick: bool) -> list[dict[str, object]]:
    """Rows: the writer's step latency without and with CLI readers.

    The two alternate in rounds (the machine's own noise, other processes on it,
    falls on both alike); each round's writer records into a notebook of
    ``prefill`` records, the one ``nbstep inspect`` reads."""
    prefill, seconds, rounds = (2_000, 3.0, 2) if quick else (20_000, 8.0, 3)
    root = tmp / "readers" / ".nbstep"
    folder = tmp / "readers"
    folder.mkdir(parents=True, exist_ok=True)
    fill = folder / "prefill.py"
    fill.write_text(PREFILL)
    subprocess.run([sys.executable, str(fill), str(root), str(prefill)], check=True,
                   capture_output=True)
    script = folder / "writer.py"
    script.write_text(WRITER)
    runs: dict[str, list[dict[str, list]]] = {"no readers": [], "CLI readers": []}
    ran: list[list] = []
    for r in range(rounds):
        runs["no readers"].append(_writer(script, root, "quiet.ipynb", seconds))
        stop, log = folder / f"stop-{r}", folder / f"reader-{r}.json"
        reader = _reader_loop(root, stop, log)
        time.sleep(1.0)  # the first command is under way
        try:
            runs["CLI readers"].append(_writer(script, root, "read.ipynb", seconds))
        finally:
            stop.write_text("")
            _, err = reader.communicate(timeout=300)
        if reader.returncode != 0:
            raise RuntimeError(f"the reader failed: {err[-3000:]}")
        ran += json.loads(log.read_text())
    rows, out = [], []
    for label, results in runs.items():
        times = sorted(t for result in results for t in result["times"])
        waits = sorted(t for result in results for t in result["waits"])
        p50, p99, worst = statistics.median(times), percentile(times, 0.99), times[-1]
        stalls = sum(1 for t in times if t >= 0.050)
        commands = ran if label == "CLI readers" else None
        per = "" if commands is None else ", ".join(
            f"{name} ×{sum(1 for c in commands if c[0] == name)} "
            f"{fmt(statistics.median([c[1] for c in commands if c[0] == name]))}"
            for name in dict.fromkeys(c[0] for c in commands))
        rows.append([label, f"{len(times):,}", fmt(p50), fmt(p99), fmt(worst), str(stalls),
                     fmt(waits[-1]) if waits else "", per])
        out.append({"label": label, "steps": len(times), "p50": p50, "p99": p99,
                    "max": worst, "stalls_50ms": stalls,
                    "lock_wait_max": waits[-1] if waits else 0.0,
                    "commands": None if commands is None else len(commands)})
    table(f"A writer's step latency while the CLI reads the store ({rounds} rounds of "
          f"{seconds:g} s each, notebooks of {prefill:,} records)",
          ["readers", "steps", "step p50", "step p99", "step max", "steps ≥ 50 ms",
           "longest wait for the log's lock", "commands run, median time"], rows)
    slow = [s for result in runs["CLI readers"] for s in result["slow"]]
    if slow:
        # Which commands were running when the writer's slow steps started.
        during: dict[str, int] = {}
        for at, _took in slow:
            for name in {c[0] for c in ran if c[2] <= at <= c[2] + c[1]} or {"(between)"}:
                during[name] = during.get(name, 0) + 1
        print("\nsteps of 20 ms or more with readers, by the command running then: "
              + ", ".join(f"{name} {count}" for name, count in sorted(during.items())))
    alone = sum(len(result["slow"]) for result in runs["no readers"])
    print(f"steps of 20 ms or more without readers: {alone}")
    quiet, read = out
    ratio = float(read["p99"]) / float(quiet["p99"])  # type: ignore[arg-type]
    met = ratio <= 2.0 and float(read["max"]) < 0.050  # type: ignore[arg-type]
    figure("writer's step p99 while `nbstep ls/inspect/verify/gc --dry-run` run",
           f"p99 {fmt(float(read['p99']))}, max {fmt(float(read['max']))}, "  # type: ignore[arg-type]
           f"lock wait max {fmt(float(read['lock_wait_max']))}",  # type: ignore[arg-type]
           peer=f"no readers: p99 {fmt(float(quiet['p99']))}, "  # type: ignore[arg-type]
                f"max {fmt(float(quiet['max']))}",  # type: ignore[arg-type]
           ratio=ratio, target="p99 ≤ 2× without readers, max < 50 ms", met=met)
    return out


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory(prefix="nbstep-readers-",
                                     dir=os.environ.get("BENCH_DIR")) as t:
        bench_readers(Path(t), "--quick" in sys.argv)
