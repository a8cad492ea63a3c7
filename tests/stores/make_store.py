"""Write a small store of the current format into tests/stores/format-<N>/.

Run once per released store format (``python tests/stores/make_store.py``) and
commit the folder; tests/storage/test_duckdb.py must keep opening every committed one. The values
are the ones EXPECTED in tests/storage/test_duckdb.py.
"""

from __future__ import annotations

import datetime
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import nbstep
    from nbstep import step
    from nbstep.engine.runtime import Runtime
    from nbstep.storage.local import FORMAT_VERSION

    target = HERE / f"format-{FORMAT_VERSION}"
    if target.exists():
        sys.exit(f"{target} exists; a released format's store is never rewritten")
    nbstep.configure(store=str(target), namespace="analysis.ipynb", inline_limit=1024)
    step.run("json", {"n": 1}, lambda x: {"rows": [1, 2, 3], "label": "ok"})
    step.run("tuple", lambda: (1, "a", None))
    step.run("when", lambda: datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC))
    step.run("blob", lambda: bytes(range(256)) * 16)   # 4 KiB: an object file
    step.run("json", {"n": 2}, lambda x: "second occurrence")
    Runtime.instance().drop_store()
    # Only what a store keeps: derived files (the DuckDB mirror, slot indexes) and locks
    # are made again by whoever opens it.
    for leftover in ("lock.want", "journal", "steps.lock", "objects.lock", "steps.duckdb",
                     "steps.duckdb.wal"):
        (target / leftover).unlink(missing_ok=True)
    for index in (target / "logs").glob("*.idx"):
        index.unlink()
    shutil.rmtree(target / "objects" / "tmp", ignore_errors=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
