"""What knowing which notebook this is costs: per step, and per cell.

    .venv/bin/python benchmarks/identity.py

In-process, against a store in a temporary folder, for a notebook with an id
(``metadata.nbstep.id``) named as jupyter_server names it (``__session__``):

- ``Runtime.where()`` and ``default_namespace()``, the engine's hot path on every step
  (the namespace is resolved once per cell, then cached);
- a replayed ``step.run`` of a small dict, the whole step;
- what a new cell adds: ``reset()`` and resolving the namespace again (the notebook
  file's stat, and its cached id), for a small notebook and for one of 10 MB.

The fastest of several rounds, in microseconds (the machine's noise is one-sided).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 7
N = 20_000


def per_call(fn, n: int = N) -> float:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - started) / n * 1e6)
    return min(samples)


def notebook(path: Path, size: int, nb_id: str) -> Path:
    filler = "x" * 1000
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
              "outputs": [], "source": filler} for i in range(size // 1000)]
    content = {"cells": cells, "metadata": {"nbstep": {"id": nb_id}}, "nbformat": 4,
               "nbformat_minor": 5}
    path.write_text(json.dumps(content, indent=1, sort_keys=True))
    return path


def measure(runtime, step) -> tuple[float, float, float, float]:
    def replay() -> None:
        runtime.reset()  # what a new cell does: the same occurrence replays
        step.run("k", lambda: {"a": 1})

    def new_cell() -> None:
        runtime.reset()
        runtime.default_namespace()

    settings = runtime.settings()
    return (per_call(runtime.where), per_call(lambda: runtime.default_namespace(settings)),
            per_call(new_cell, 2_000), per_call(replay, 2_000))


def main() -> None:
    from nbstep import step
    from nbstep.engine.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="nbstep-bench-") as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
        os.chdir(root)
        rows = []
        for label, size, nb_id in (("small notebook", 2_000, "a" * 32),
                                   ("10 MB notebook", 10_000_000, "b" * 32)):
            path = notebook(root / f"{size}.ipynb", size, nb_id)
            Runtime.clear_instance()
            runtime = Runtime.instance()
            runtime.user_ns = {"__session__": str(path)}
            step.run("k", lambda: {"a": 1})

            where, namespace, cell, whole = measure(runtime, step)
            rows.append((label, where, namespace, cell, whole))
        print(f"{'':16} {'where()':>9} {'namespace':>10} {'new cell':>9} "
              f"{'cell + replayed step':>21}   (µs, best of {ROUNDS})")
        for label, where, namespace, cell, whole in rows:
            print(f"{label:16} {where:9.2f} {namespace:10.2f} {cell:9.2f} {whole:21.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
