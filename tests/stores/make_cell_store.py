"""Write a small store of ``%%step`` cell records into tests/stores/cells-format-<N>/.

A ``%%step`` record pickles the cell's functions and classes by value, and the pickle
names nbstep's own helpers that rebuild them by their module path. Moving those
helpers must not break records made before the move, so a store of cell records
made by each released format is committed, and test_golden_cells.py replays it.
Run once per format (``python tests/stores/make_cell_store.py``) and commit the
folder (``git add -f``: a store's own .gitignore says ``*``); the cells are CELLS in
test_golden_cells.py.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    import os

    from IPython.core.interactiveshell import InteractiveShell
    from test_golden_cells import CELLS, FORMAT_VERSION_OF_CELLS
    from traitlets.config import Config

    import nbstep

    target = HERE / f"cells-format-{FORMAT_VERSION_OF_CELLS}"
    if target.exists():
        sys.exit(f"{target} exists; a released format's store is never rewritten")
    work = Path(tempfile.mkdtemp(prefix="nbstep-cells-"))
    home = os.getcwd()
    os.chdir(work)
    nbstep.configure(store=str(target), namespace="cells.ipynb", inline_limit=1024)
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "nocolor"
    shell = InteractiveShell.instance(config=config)
    shell.run_cell("%load_ext nbstep")
    for source in CELLS:
        result = shell.run_cell(source, store_history=True)
        result.raise_error()
    shell.run_cell("%unload_ext nbstep")
    nbstep.configure(store=None, namespace=None)
    # Only what a store keeps: derived files (the DuckDB mirror, slot indexes) and locks
    # are made again by whoever opens it.
    for leftover in ("lock.want", "journal", "steps.lock", "objects.lock", "steps.duckdb",
                     "steps.duckdb.wal"):
        (target / leftover).unlink(missing_ok=True)
    for index in (target / "logs").glob("*.idx"):
        index.unlink()
    shutil.rmtree(target / "objects" / "tmp", ignore_errors=True)
    InteractiveShell.clear_instance()
    os.chdir(home)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
