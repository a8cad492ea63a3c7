"""Readers never block writers: a kernel's step latency while the CLI reads the store.

One process records small steps in a loop (``step.run`` on a fresh slot each time,
durable when it returns) for a fixed time; meanwhile another process runs the CLI
commands a person runs on a store in use, one after the other, each a new process:
``nbstep ls``, ``nbstep inspect NB``, ``nbstep verify`` and ``nbstep gc --dry-run``.
The writer's notebook already holds ``prefill`` records, so reading it is real work.
The table gives the writer's step latency without and with the readers; the target
is p99 with readers within 2x of without, and no step stalled 50 ms or more. It runs
on a local store, then on a team store (a throwaway PostgreSQL server on this
machine, tests/pg_server.py, fsync on) when PostgreSQL is installed.

    python benchmarks/readers.py [--quick]
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
root, n = sys.argv[1], int(sys.argv[2])  # the store: a directory or a server URL
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
root, namespace, seconds, tag = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
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
# And the writer's own slow parts: the slot index it rewrites every 2,048 events, and
# the disk flush of each append.
own = {"reindex": [], "fdatasync": []}
def timing(name, fn):
    def run(*args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            own[name].append(time.perf_counter() - t)
    return run
NamespaceLog.reindex = timing("reindex", NamespaceLog.reindex)
import os
os.fdatasync = timing("fdatasync", os.fdatasync)
step.run("warm", lambda: 1)
waits.clear()
own["reindex"].clear()
own["fdatasync"].clear()
print("ready", flush=True)
sys.stdin.readline()
times, slow, i = [], [], 0
clock = time.perf_counter
end = clock() + seconds
while clock() < end:
    at, t = time.time(), clock()
    step.run(f"item-{tag}-{i}", i, lambda x: {"i": x, "label": f"row-{x}"})  # recorded
    took = clock() - t
    times.append(took)
    if took >= 0.02:
        slow.append([at, took])
    i += 1
print(json.dumps({"times": times, "slow": slow, "waits": waits,
                  "reindex": own["reindex"], "fdatasync": own["fdatasync"]}), flush=True)
"""

COMMANDS = (["ls"], ["inspect", "read.ipynb"], ["verify"], ["gc", "--dry-run"])


def _python(script: Path, *args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), *args], text=True, **popen)


class Place:
    """Where the processes run: the store (a directory or a URL), their environment
    and working directory."""

    def __init__(self, store: str, env: dict[str, str], cwd: Path) -> None:
        self.store, self.env, self.cwd = store, env, cwd


def _writer(script: Path, place: Place, namespace: str, seconds: float, tag: str
            ) -> dict[str, list]:
    """One writer run: ``times`` (each step's seconds), ``slow`` (steps of 20 ms or
    more as [wall clock start, seconds]) and ``waits`` (each wait for a local log's
    lock, in seconds)."""
    writer = _python(script, place.store, namespace, str(seconds), tag, env=place.env,
                     cwd=place.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
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


def _reader_loop(place: Place, stop: Path, log: Path, first: int) -> subprocess.Popen:
    """A process running the CLI commands one after another, from ``COMMANDS[first]``
    on, until ``stop`` exists."""
    commands = [list(c) for c in COMMANDS[first:] + COMMANDS[:first]]
    code = (
        "import json, os, subprocess, sys, time\n"
        f"commands, stop = {json.dumps(commands)}, {str(stop)!r}\n"
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
    return subprocess.Popen([sys.executable, str(script), place.store], env=place.env,
                            cwd=place.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _measure(label: str, place: Place, folder: Path, prefill: int, seconds: float,
             rounds: int) -> dict[str, dict[str, object]]:
    """The writer without and with readers, alternating in rounds (the machine's own
    noise, other processes on it, falls on both alike); each round's writer records
    into a notebook of ``prefill`` records, the one ``nbstep inspect`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    fill = folder / "prefill.py"
    fill.write_text(PREFILL)
    subprocess.run([sys.executable, str(fill), place.store, str(prefill)], check=True,
                   capture_output=True, env=place.env, cwd=place.cwd)
    script = folder / "writer.py"
    script.write_text(WRITER)
    runs: dict[str, list[dict[str, list]]] = {"no readers": [], "CLI readers": []}
    ran: list[list] = []
    for r in range(rounds):
        runs["no readers"].append(_writer(script, place, "quiet.ipynb", seconds, str(r)))
        stop, log = folder / f"stop-{r}", folder / f"reader-{r}.json"
        reader = _reader_loop(place, stop, log, r % len(COMMANDS))
        time.sleep(1.0)  # the first command is under way
        try:
            runs["CLI readers"].append(_writer(script, place, "read.ipynb", seconds, str(r)))
        finally:
            stop.write_text("")
            _, err = reader.communicate(timeout=300)
        if reader.returncode != 0:
            raise RuntimeError(f"the reader failed: {err[-3000:]}")
        ran += json.loads(log.read_text())
    rows, out = [], {}
    for readers, results in runs.items():
        times = sorted(t for result in results for t in result["times"])
        waits = sorted(t for result in results for t in result["waits"])
        p50, p99, worst = statistics.median(times), percentile(times, 0.99), times[-1]
        stalls = sum(1 for t in times if t >= 0.050)
        commands = ran if readers == "CLI readers" else None
        per = "" if commands is None else ", ".join(
            f"{name} ×{sum(1 for c in commands if c[0] == name)} "
            f"{fmt(statistics.median([c[1] for c in commands if c[0] == name]))}"
            for name in dict.fromkeys(c[0] for c in commands))
        rows.append([label, readers, f"{len(times):,}", fmt(p50), fmt(p99), fmt(worst),
                     str(stalls), fmt(waits[-1]) if waits else "-", per])
        out[readers] = {"steps": len(times), "p50": p50, "p99": p99, "max": worst,
                        "stalls_50ms": stalls, "lock_wait_max": waits[-1] if waits else None}
    table(f"{label}: a writer's step latency while the CLI reads the store ({rounds} rounds "
          f"of {seconds:g} s each way, notebooks of {prefill:,} records)",
          ["store", "readers", "steps", "step p50", "step p99", "step max", "steps ≥ 50 ms",
           "longest wait for a log's lock", "commands run, median time"], rows)
    slow = [s for result in runs["CLI readers"] for s in result["slow"]]
    during: dict[str, int] = {}
    for at, _took in slow:
        # Which commands were running when the writer's slow steps started.
        for name in {c[0] for c in ran if c[2] <= at <= c[2] + c[1]} or {"(between)"}:
            during[name] = during.get(name, 0) + 1
    for readers, results in runs.items():
        for part in ("reindex", "fdatasync"):
            spent = sorted(t for result in results for t in result[part])
            if spent:
                print(f"{readers}: the writer's {part} ×{len(spent)}, p50 "
                      f"{fmt(statistics.median(spent))}, max {fmt(spent[-1])}")
    alone = sum(len(result["slow"]) for result in runs["no readers"])
    print(f"\nsteps of 20 ms or more: {alone} without readers; {len(slow)} with them"
          + (", by the command running then: " + ", ".join(
              f"{name} {count}" for name, count in sorted(during.items())) if slow else ""))
    quiet, read = out["no readers"], out["CLI readers"]
    ratio = float(read["p99"]) / float(quiet["p99"])  # type: ignore[arg-type]
    met = ratio <= 2.0 and float(read["max"]) < 0.050  # type: ignore[arg-type]
    wait = read["lock_wait_max"]
    figure(f"{label}: writer's step p99 while `nbstep ls/inspect/verify/gc --dry-run` run",
           f"p99 {fmt(float(read['p99']))}, max {fmt(float(read['max']))}"  # type: ignore[arg-type]
           + (f", lock wait max {fmt(float(wait))}" if wait is not None else ""),  # type: ignore[arg-type]
           peer=f"no readers: p99 {fmt(float(quiet['p99']))}, "  # type: ignore[arg-type]
                f"max {fmt(float(quiet['max']))}",  # type: ignore[arg-type]
           ratio=ratio, target="p99 ≤ 2× without readers, max < 50 ms", met=met)
    return out


def bench_readers(tmp: Path, quick: bool) -> list[dict[str, object]]:
    """Rows (one per store and readers): the writer's step latency without and with
    CLI readers."""
    seconds, rounds = (3.0, 2) if quick else (8.0, 4)
    base = {k: v for k, v in os.environ.items() if not k.startswith("NBSTEP_")}
    folder = tmp / "readers-local"
    place = Place(str(folder / ".nbstep"), base, tmp)
    results = {"local": _measure("local store", place, folder, 2_000 if quick else 20_000,
                                 seconds, rounds)}
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    try:
        from pg_server import TestServer

        server = TestServer(fsync=True)
    except Exception as e:  # no PostgreSQL here: the local store's figures stand alone
        print(f"\n(team store not measured: {type(e).__name__}: {e})")
        return [dict(store="local", readers=k, **v) for k, v in results["local"].items()]
    try:
        folder = tmp / "readers-team"
        (folder / ".nbstep").mkdir(parents=True)  # the team store's local folder
        env = {**base, "NBSTEP_OBJECTS": str(folder / "shared")}
        place = Place(server.url(server.new_database()), env, folder)
        results["team"] = _measure("team store", place, folder, 500 if quick else 3_000,
                                   seconds, rounds)
    finally:
        server.close()
    return [dict(store=store, readers=k, **v) for store, by in results.items()
            for k, v in by.items()]


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory(prefix="nbstep-readers-",
                                     dir=os.environ.get("BENCH_DIR")) as t:
        bench_readers(Path(t), "--quick" in sys.argv)
