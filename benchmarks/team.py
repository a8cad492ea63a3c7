"""The team store under 8 processes, against the local store, in one run.

    python benchmarks/team.py [--procs 8] [--steps 500]

Each process records ``steps`` small steps (``step.run`` with a dict result) in a
namespace of its own, all processes at once; then, after a barrier, replays them all.
Reported per store: steps recorded per second (all processes together, wall clock)
and the p50/p99 of one step, for recording and for replaying. The team store runs
against a throwaway PostgreSQL server on this machine (tests/pg_server.py) with
fsync on, as a real server would be; the server shares the machine's cores with the
processes it serves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from report import percentile  # noqa: E402 - found through the path set above

WORKER = textwrap.dedent(
    """
    import json, sys, time
    import nbstep
    from nbstep import step
    w, n = int(sys.argv[1]), int(sys.argv[2])
    nbstep.configure(namespace=f"bench-{w}")
    value = lambda i: {"w": w, "i": i, "label": f"row-{i}"}
    step.run("warm-up", -1, value)  # connect / open the store before the clock starts
    def phase():
        nbstep.reset()
        step.run("warm-up", -1, value)
        print("ready", flush=True)
        sys.stdin.readline()
        times = []
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            step.run("item", i, value)
            times.append(time.perf_counter() - t)
        print(json.dumps({"times": times, "wall": time.perf_counter() - start}), flush=True)
    phase()  # records
    phase()  # replays
    """
)


def _phase(workers: list[subprocess.Popen]) -> dict[str, float]:
    for p in workers:
        line = p.stdout.readline().strip()
        assert line == "ready", line
    started = time.perf_counter()
    for p in workers:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in workers]
    wall = time.perf_counter() - started
    times = sorted(t for r in results for t in r["times"])
    return {"rate": len(times) / wall, "p50": statistics.median(times),
            "p99": percentile(times, 0.99)}


def run(env: dict[str, str], cwd: Path, procs: int, steps: int, script: Path
        ) -> tuple[dict[str, float], dict[str, float]]:
    workers = [subprocess.Popen([sys.executable, str(script), str(w), str(steps)], cwd=cwd,
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
               for w in range(procs)]
    try:
        recorded = _phase(workers)
        replayed = _phase(workers)
    finally:
        for p in workers:
            p.stdin.close()
            p.wait(timeout=120)
    for p in workers:
        assert p.returncode == 0, f"worker exited {p.returncode}"
    return recorded, replayed


def bench_team(tmp: Path, quick: bool, procs: int = 8, steps: int | None = None) -> None:
    """The team store and the local store under ``procs`` processes, one table, and
    the team store's headline figures (recording rate and replay p99) in the summary."""
    from pg_server import TestServer
    from report import figure, fmt, table

    steps = steps or (100 if quick else 500)
    base = {k: v for k, v in os.environ.items() if not k.startswith("NBSTEP_")}
    rows, measured = [], {}
    work = tmp / "team-bench"
    work.mkdir()
    script = work / "worker.py"
    script.write_text(WORKER)
    server = TestServer(fsync=True)
    try:
        url = server.url(server.new_database())
        stores = [
            ("team", "team (PostgreSQL, fsync on)",
             {**base, "NBSTEP_STORE": url, "NBSTEP_OBJECTS": str(work / "shared")}),
            ("local", "local", {**base, "NBSTEP_STORE": str(work / "local" / ".nbstep")}),
        ]
        for name, label, env in stores:
            folder = work / name
            folder.mkdir(exist_ok=True)
            recorded, replayed = run(env, folder, procs, steps, script)
            measured[name] = (recorded, replayed)
            rows.append([label, f"{recorded['rate']:,.0f}/s", fmt(recorded["p50"]),
                         fmt(recorded["p99"]), f"{replayed['rate']:,.0f}/s",
                         fmt(replayed["p50"]), fmt(replayed["p99"])])
    finally:
        server.close()
    table(f"{procs} processes x {steps} small steps each, on {os.cpu_count()} "
          "cores (server included)",
          ["store", "record: steps/s", "record p50", "record p99", "replay: steps/s",
           "replay p50", "replay p99"], rows)
    (team_rec, team_rep), (local_rec, _) = measured["team"], measured["local"]
    figure(f"team store (PostgreSQL), {procs} processes recording small steps",
           f"{team_rec['rate']:,.0f} steps/s", peer=f"local store {local_rec['rate']:,.0f}/s",
           ratio=local_rec["rate"] / team_rec["rate"], target="≥ 3,000 steps/s",
           met=team_rec["rate"] >= 3000)
    figure(f"team store (PostgreSQL), {procs} processes replaying, p99",
           fmt(team_rep["p99"]), target="≤ 20 ms", met=team_rep["p99"] <= 0.020)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    from report import summary

    with tempfile.TemporaryDirectory(prefix="nbstep-team-bench-") as tmp:
        bench_team(Path(tmp), False, args.procs, args.steps)
    summary()


if __name__ == "__main__":
    main()
