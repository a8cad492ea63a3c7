"""A ``%%step`` cell's modules, through real kernels and the real command line.

``import pandas as pd`` in a step cell binds ``pd``: a replay binds it again (by
importing it), but it is not one of the cell's variables: not in the record's
values, not in ``step.inspect()`` / ``%steps``, not a choice of ``nbstep export``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from kernels import run_notebook

from nbstep.codecs.cell import read_cell
from nbstep.storage.local import LocalStore

pytestmark = pytest.mark.kernel

CELLS = [
    "%load_ext nbstep",
    "%%step frame\nimport pandas as pd\nimport numpy as np\nfrom os import path as osp\n"
    "frame = pd.DataFrame({'a': np.arange(3), 'b': 1.5})",
    "print(pd.__name__, np.__name__, osp.__name__, type(frame).__name__, int(frame['a'].sum()))",
    "shown = step.inspect(results=True)\n"
    "print(sorted(shown['result'][0]), '|', shown['value'][0])",
    "%steps",
]


def test_modules_are_bound_on_replay_but_are_never_variables(tmp_path):
    notebook = tmp_path / "analysis.ipynb"
    first = run_notebook(notebook, CELLS)
    second = run_notebook(notebook, CELLS)
    for cells in (first, second):
        assert all(c.ok for c in cells), [c.errors() for c in cells]
        assert cells[2].lines() == ["pandas numpy posixpath DataFrame 3"]
        assert cells[3].lines() == ["['frame'] | frame: DataFrame 3×2"]
    assert second[1].notices()[-1].startswith("nbstep ⟲ replayed `frame`")
    # %steps in Jupyter: the HTML table, readable.
    (html,) = [d["text/html"] for d in second[4].rich("execute_result")]
    assert "<td>frame: DataFrame 3×2</td>" in html and "numpy" not in html
    assert "<th>duration</th>" in html and "+00:00" not in html

    store = LocalStore(tmp_path / ".nbstep")
    try:
        (record,) = store.current("analysis.ipynb")
        cell = read_cell(store.read(record))
    finally:
        store.close()
    assert list(cell.variables) == ["frame"]
    assert cell.modules == {"np": "numpy", "osp": "posixpath", "pd": "pandas"}

    # The cell's one data variable exports without --var: the modules are no choice.
    out = tmp_path / "frame.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "nbstep", "--store", str(tmp_path / ".nbstep"), "export",
         "analysis.ipynb", "frame", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert pd.read_parquet(out)["a"].tolist() == [0, 1, 2]
    listed = subprocess.run(
        [sys.executable, "-m", "nbstep", "--store", str(tmp_path / ".nbstep"), "inspect",
         "analysis.ipynb", "--format", "json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert [r["value"] for r in json.loads(listed.stdout)] == ["frame: DataFrame 3×2"]
