"""nbstep against the tools a user would reach for instead, in one run.

    python3 dev.py bench                 # everything (a few minutes)
    python3 dev.py bench --quick         # smaller sizes, for a smoke check

Each tool records and replays the same values on the same disk: a small dict in a
loop of steps, and an 80 MB DataFrame (1e6 x 10 float64). The baselines are
joblib.Memory, diskcache, and a pickle file per result written with fsync +
rename (what a careful hand-rolled cache does). nbstep's records are durable
(committed and fsynced) when step.run returns; diskcache's are not (it does not
fsync), which is noted in the table. Times are medians per step unless said.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import best_of, fmt, per_call, table

HERE = Path(__file__).resolve().parent


class PickleFiles:
    """A pickle file per result, written durably (fsync + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def set(self, key: str, value: object) -> None:
        tmp = self.root / f".{key}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(value, f, protocol=5)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / key)

    def get(self, key: str) -> object:
        with open(self.root / key, "rb") as f:
            return pickle.load(f)


def fresh_nbstep(store: Path, namespace: str = "bench") -> object:
    import nbstep
    from nbstep.engine.runtime import Runtime

    Runtime.instance().drop_store()
    nbstep.configure(store=str(store), namespace=namespace)
    nbstep.reset()
    return nbstep


def bench_small(tmp: Path, n: int) -> None:
    import diskcache
    import joblib

    import nbstep
    from nbstep import step

    value_of = lambda i: {"id": i, "label": f"row-{i}", "score": i / 7, "tags": ["a", "b"]}  # noqa: E731
    rows = []

    fresh_nbstep(tmp / "nbstep-small")
    record = per_call(lambda i: step.run("item", i, value_of), n)
    nbstep.reset()
    replay = per_call(lambda i: step.run("item", i, value_of), n)
    rows.append(["nbstep `step.run`", fmt(record[0]), fmt(record[1]), fmt(replay[0]),
                 fmt(replay[1]), "yes"])

    memory = joblib.Memory(tmp / "joblib-small", verbose=0)
    cached = memory.cache(value_of)
    record = per_call(cached, n)
    replay = per_call(cached, n)
    rows.append(["joblib.Memory", fmt(record[0]), fmt(record[1]), fmt(replay[0]), fmt(replay[1]),
                 "no fsync"])

    cache = diskcache.Cache(str(tmp / "diskcache-small"))
    record = per_call(lambda i: cache.set(("item", i), value_of(i)), n)
    replay = per_call(lambda i: cache.get(("item", i)), n)
    rows.append(["diskcache `set`/`get`", fmt(record[0]), fmt(record[1]), fmt(replay[0]),
                 fmt(replay[1]), "no fsync"])
    cache.close()

    files = PickleFiles(tmp / "pickle-small")
    record = per_call(lambda i: files.set(f"item-{i}", value_of(i)), n)
    replay = per_call(lambda i: files.get(f"item-{i}"), n)
    rows.append(["pickle file per result", fmt(record[0]), fmt(record[1]), fmt(replay[0]),
                 fmt(replay[1]), "yes"])
    table(
        f"A small dict result, a loop of {n:,} steps",
        ["tool", "record p50", "record p99", "replay p50", "replay p99", "durable at return"],
        rows,
    )


def bench_frame(tmp: Path, rows_n: int, repeat: int) -> None:
    import diskcache
    import joblib
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    import nbstep
    from nbstep import step

    frame = pd.DataFrame(np.random.default_rng(0).random((rows_n, 10)),
                         columns=[f"c{i}" for i in range(10)])
    size_mb = frame.memory_usage(index=True).sum() / 1e6
    rows = []

    floor_runs = iter(range(10**9))

    def arrow_ipc_write() -> None:
        # A new file each time, kept, as the store keeps each record's object file:
        # overwriting one file would reuse its page-cache pages and flatter the floor.
        path = tmp / f"frame-{next(floor_runs)}.arrow"
        table_ = pa.Table.from_pandas(frame, preserve_index=True)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table_.schema) as writer:
            writer.write_table(table_)
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    floor = best_of(arrow_ipc_write, repeat)

    store = tmp / "nbstep-frame"
    counter = iter(range(10**9))

    fresh_nbstep(store, namespace="warm-up")
    step.run("warm-up", lambda: 0)

    def nbstep_record() -> None:
        n = next(counter)
        nbstep.configure(namespace=f"frame-{n}")  # a new slot, same store
        # New content each time (a µs in-place change), or the content-addressed
        # object file from the previous run would be reused instead of written.
        frame.iat[0, 0] = float(n)
        step.run("frame", lambda: frame)

    record = best_of(nbstep_record, repeat)
    nbstep.configure(namespace="frame-0")

    def nbstep_replay() -> None:
        nbstep.reset()
        step.run("frame", lambda: frame)

    replay = best_of(nbstep_replay, repeat)
    rows.append(["nbstep `step.run`", fmt(record), fmt(replay)])

    # Every tool records a new entry each run (a new key, a new file), as nbstep
    # does: rewriting one entry would reuse its page-cache pages and flatter it.
    make = lambda key: frame  # noqa: E731
    joblib_dir = tmp / "joblib-frame"
    cached = joblib.Memory(joblib_dir, verbose=0).cache(make)
    keys = iter(range(10**9))
    record = best_of(lambda: cached(f"k{next(keys)}"), repeat)
    replay = best_of(lambda: cached("k0"), repeat)
    rows.append(["joblib.Memory (no fsync)", fmt(record), fmt(replay)])
    joblib_mmap = joblib.Memory(joblib_dir, verbose=0, mmap_mode="r").cache(make)
    rows.append(["joblib.Memory, mmap_mode='r' (read-only arrays)", "",
                 fmt(best_of(lambda: joblib_mmap("k0"), repeat))])

    cache = diskcache.Cache(str(tmp / "diskcache-frame"))
    record = best_of(lambda: cache.set(f"frame-{next(keys)}", frame), repeat)
    first = next(iter(cache))
    replay = best_of(lambda: cache.get(first), repeat)
    cache.close()
    rows.append(["diskcache (no fsync)", fmt(record), fmt(replay)])

    files = PickleFiles(tmp / "pickle-frame")
    record = best_of(lambda: files.set(f"frame-{next(keys)}", frame), repeat)
    written = sorted(p.name for p in files.root.iterdir())[0]
    replay = best_of(lambda: files.get(written), repeat)
    rows.append(["pickle file, fsync + rename", fmt(record), fmt(replay)])
    rows.append(["floor: Arrow IPC write + fsync", fmt(floor), ""])
    table(f"A {rows_n:,} x 10 float64 DataFrame ({size_mb:.0f} MB), median of {repeat}",
          ["tool", "record", "replay"], rows)


def bench_scale(tmp: Path, big: int, loop: int) -> None:
    """Replay cost per step with `big` records in the store vs with 100."""
    import duckdb

    import nbstep
    from nbstep import step
    from nbstep.engine.runtime import Runtime

    results = []
    for total in (100, big):
        store = tmp / f"nbstep-scale-{total}"
        fresh_nbstep(store, namespace="filler")
        filler = max(total - loop, 0)
        if filler:
            # Bulk-load the other records straight into the table: recording them one
            # by one would only make the setup slow, not the measurement different.
            step.run("seed", lambda: 0)
            Runtime.instance().drop_store()
            con = duckdb.connect(str(store / "steps.duckdb"))
            con.execute(
                "INSERT INTO events SELECT 1000 + i, 'recorded', "
                "'nb-' || (i % 50), 'k', i, 'id', 'h', 'json', '{\"v\": 1}', NULL, NULL, 8, "
                "0.0, now(), 'first', NULL, 0, 'h', NULL FROM range(?) t(i)",
                [filler],
            )
            con.close()
        fresh_nbstep(store, namespace="bench")
        for i in range(loop):
            step.run("item", i, lambda x: {"v": x})
        Runtime.instance().drop_store()
        fresh_nbstep(store, namespace="bench")
        started = time.perf_counter()
        for i in range(loop):
            step.run("item", i, lambda x: {"v": x})
        elapsed = time.perf_counter() - started
        nbstep.reset()
        steady = per_call(lambda i: step.run("item", i, lambda x: {"v": x}), loop)[0]
        results.append((total, elapsed / loop, steady))
    ratio = results[1][1] / results[0][1]
    table(
        "Replay cost as the store grows",
        ["records in store", "per step incl. attach + first query", "per step, steady (p50)"],
        [[f"{t:,}", fmt(a), fmt(b)] for t, a, b in results]
        + [["ratio", f"{ratio:.2f}x", f"{results[1][2] / results[0][2]:.2f}x"]],
    )


def bench_import() -> None:
    code = "import time; t = time.perf_counter(); {s}; print(time.perf_counter() - t)"
    rows = []
    for statement in ("import nbstep", "from nbstep import step", "import duckdb",
                      "import pandas"):
        runs = [float(subprocess.run([sys.executable, "-c", code.format(s=statement)],
                                     capture_output=True, text=True, check=True).stdout)
                for _ in range(5)]
        rows.append([f"`{statement}`", fmt(statistics.median(runs))])
    table("Import cost in a fresh interpreter (median of 5)", ["statement", "time"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--only", choices=["small", "frame", "scale", "import", "procs"],
                        action="append", help="run only these parts")
    args = parser.parse_args()
    only = set(args.only or ["small", "frame", "scale", "import", "procs"])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory(prefix="nbstep-bench-", dir=os.environ.get("BENCH_DIR")) as t:
        tmp = Path(t)
        if "import" in only:
            bench_import()
        if "small" in only:
            bench_small(tmp, 1_000 if args.quick else 10_000)
        if "frame" in only:
            bench_frame(tmp, 100_000 if args.quick else 1_000_000, 3 if args.quick else 5)
        if "scale" in only:
            bench_scale(tmp, 10_000 if args.quick else 100_000, 100)
        if "procs" in only:
            from procs import bench_processes

            bench_processes(tmp, 100 if args.quick else 500)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
