"""What ``%%step`` costs a cell: recording and replaying, with what the tracker reads.

    .venv/bin/python benchmarks/cells.py

Runs cells in an in-process IPython shell (no kernel, no notebook server) against a
store in a temporary folder, and prints the median of several executions of each:

- the cell run without ``%%step`` (the baseline), recorded the first time, replayed
  (executed again in the same shell) and replayed in a fresh shell (a new kernel);
- cells that read nothing, read an 80 MB DataFrame, change an object in place
  through a function, and draw a matplotlib figure (Agg).

The numbers are the time of ``run_cell`` as a whole, IPython's own work included.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SETUP = {
    "trivial": "",
    "frame 80 MB": "import numpy as np, pandas as pd\n"
                   "frame = pd.DataFrame(np.random.default_rng(0).random((1_000_000, 10)))",
    "in place": "class Model:\n    def __init__(self):\n        self.w = [0.0] * 1000\n"
                "    def fit(self, k):\n        self.w = [v + k for v in self.w]\n"
                "clf = Model()\ndef train(m, k):\n    m.fit(k)\n    return m",
    "figure": "import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt",
}
BODY = {
    "trivial": "x = 1",
    "frame 80 MB": "total = float(frame[0].sum())",
    "in place": "model = train(clf, 1)",
    "figure": "fig, ax = plt.subplots()\nax.plot(range(100))\nplt.close(fig)",
}
REPEAT = 5


def shell() -> object:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=config)
    ip.run_cell("%load_ext nbstep")
    ip.run_cell("%step_config --quiet")
    return ip


def timed(ip: object, source: str) -> float:
    started = time.perf_counter()
    result = ip.run_cell(source)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    result.raise_error()
    return elapsed


def main() -> None:
    from nbstep.engine.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="nbstep-cells-") as tmp:
        os.environ["NBSTEP_STORE"] = str(Path(tmp) / ".nbstep")
        os.environ["NBSTEP_NAMESPACE"] = "bench.ipynb"
        rows = []
        for case, setup in SETUP.items():
            base, record, replay, fresh = [], [], [], []
            for i in range(REPEAT):
                Runtime.clear_instance()
                ip = shell()
                ip.run_cell(setup).raise_error()
                base.append(timed(ip, BODY[case]))
                cell = f"%%step {case.replace(' ', '_')}_{i}\n{BODY[case]}"
                record.append(timed(ip, cell))
                replay.append(timed(ip, cell))
                Runtime.clear_instance()
                ip = shell()
                ip.run_cell(setup).raise_error()
                fresh.append(timed(ip, cell))
            rows.append((case, *(statistics.median(t) * 1000 for t in
                                  (base, record, replay, fresh))))
        print(f"{'cell':<14}{'plain':>10}{'recorded':>11}{'replayed':>11}{'new kernel':>12}"
              "   (ms, median of 5)")
        for case, *ms in rows:
            print(f"{case:<14}" + "".join(f"{m:>11.1f}" for m in ms))
    sys.exit(0)


if __name__ == "__main__":
    main()
