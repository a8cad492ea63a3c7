"""Small values: recording and replaying a loop of steps, warm and in a fresh process.

The peers: diskcache (SQLite; it does not fsync, so its records are not durable
when ``set`` returns), a DuckDB table with one insert + commit per value (durable,
what nbstep's 0.1 store did), and joblib.Memory (a pickle file per call, no fsync).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from report import figure, fmt, per_call, python, table


def value_of(i: int) -> dict:
    return {"id": i, "label": f"row-{i}", "score": i / 7, "tags": ["a", "b"]}


def fresh_nbstep(store: Path, namespace: str = "bench") -> None:
    import nbstep
    from nbstep.engine.runtime import Runtime

    Runtime.instance().drop_store()
    nbstep.configure(store=str(store), namespace=namespace)
    nbstep.reset()


def bench_small(tmp: Path, n: int) -> None:
    import diskcache
    import duckdb
    import joblib

    import nbstep
    from nbstep import step

    rows = []
    fresh_nbstep(tmp / "nbstep-small")
    record = per_call(lambda i: step.run("item", i, value_of), n)
    nbstep.reset()
    replay = per_call(lambda i: step.run("item", i, value_of), n)
    nbstep_record = record
    rows.append(["nbstep `step.run`", fmt(record[0]), fmt(record[1]), fmt(replay[0]),
                 fmt(replay[1]), "yes"])

    con = duckdb.connect(str(tmp / "duckdb-small.duckdb"))
    con.execute("CREATE TABLE steps (key VARCHAR, seq BIGINT, value VARCHAR, "
                "PRIMARY KEY (key, seq))")

    def duck_set(i: int) -> None:
        con.execute("BEGIN")
        con.execute("INSERT INTO steps VALUES ('item', ?, ?)", [i, json.dumps(value_of(i))])
        con.execute("COMMIT")

    def duck_get(i: int) -> object:
        return json.loads(con.execute("SELECT value FROM steps WHERE key = 'item' AND seq = ?",
                                      [i]).fetchone()[0])

    duck_record = per_call(duck_set, n)
    replay = per_call(duck_get, n)
    con.close()
    rows.append(["DuckDB insert + commit per value", fmt(duck_record[0]), fmt(duck_record[1]),
                 fmt(replay[0]), fmt(replay[1]), "yes"])

    cached = joblib.Memory(tmp / "joblib-small", verbose=0).cache(value_of)
    record = per_call(cached, n)
    replay = per_call(cached, n)
    rows.append(["joblib.Memory", fmt(record[0]), fmt(record[1]), fmt(replay[0]),
                 fmt(replay[1]), "no (no fsync)"])

    cache = diskcache.Cache(str(tmp / "diskcache-small"))
    record = per_call(lambda i: cache.set(("item", i), value_of(i)), n)
    replay = per_call(lambda i: cache.get(("item", i)), n)
    cache.close()
    rows.append(["diskcache `set` / `get`", fmt(record[0]), fmt(record[1]), fmt(replay[0]),
                 fmt(replay[1]), "no (no fsync)"])
    table(f"A small dict, a loop of {n:,} steps in one warm process",
          ["tool", "record p50", "record p99", "replay p50", "replay p99",
           "durable when it returns"], rows)
    ratio = nbstep_record[0] / duck_record[0]
    figure("record a small value (p50)", fmt(nbstep_record[0]),
           peer=f"DuckDB insert + commit {fmt(duck_record[0])}", ratio=ratio,
           target="ratio ≤ 1.0", met=ratio <= 1.0)


# A fresh interpreter replays a loop of steps recorded by another process: the time
# from before its first import to the last value, per step.
NBSTEP_LOOP = """
import json, sys, time
t = time.perf_counter()
import nbstep
from nbstep import step
nbstep.configure(store=sys.argv[1], namespace="bench")
def never(i):
    raise AssertionError("recomputed")
for i in range(int(sys.argv[2])):
    step.run("item", i, never)
print(json.dumps(time.perf_counter() - t))
"""

DISKCACHE_LOOP = """
import json, sys, time
t = time.perf_counter()
import diskcache
cache = diskcache.Cache(sys.argv[1])
for i in range(int(sys.argv[2])):
    assert cache.get(("item", i)) is not None
print(json.dumps(time.perf_counter() - t))
"""

FILL = """
import json, sys
sys.path.insert(0, sys.argv[3])
from small import value_of
import diskcache
import nbstep
from nbstep import step
nbstep.configure(store=sys.argv[1], namespace="bench")
cache = diskcache.Cache(sys.argv[2])
for i in range(int(sys.argv[4])):
    step.run("item", i, value_of)
    cache.set(("item", i), value_of(i))
print(json.dumps(0))
"""


def bench_fresh_small(tmp: Path, sizes: list[int], repeat: int) -> None:
    here = str(Path(__file__).resolve().parent)
    rows = []
    for n in sizes:
        store, cache = tmp / f"fresh-nbstep-{n}", tmp / f"fresh-diskcache-{n}"
        python(FILL, str(store), str(cache), here, str(n))
        ours, theirs = [], []
        for _ in range(repeat):  # alternate, so both see the same machine
            ours.append(python(NBSTEP_LOOP, str(store), str(n)) / n)
            theirs.append(python(DISKCACHE_LOOP, str(cache), str(n)) / n)
        a, b = statistics.median(ours), statistics.median(theirs)
        rows.append([f"{n:,}", fmt(a), fmt(b), f"{a / b:.2f}"])
        figure(f"replay a small value, loop of {n:,} in a fresh process (per step, "
               "incl. import)", fmt(a), peer=f"diskcache get {fmt(b)}", ratio=a / b,
               target="ratio ≤ 1.0", met=a / b <= 1.0)
    table(f"A fresh process replays a loop of small values recorded by another (per step, "
          f"from before the first import; median of {repeat})",
          ["steps", "nbstep", "diskcache `get`", "ratio"], rows)

