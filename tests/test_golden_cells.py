"""Committed ``%%step`` records of every released format open after nbstep changes.

A cell record pickles the cell's functions and classes by value, naming nbstep's own
helpers that rebuild them by module path (tests/stores/make_cell_store.py writes the
store from CELLS). If those helpers move, records made before the move must still
replay: this test opens the committed store in a fresh shell and replays it.

Records of an older cell format (another input recipe: docs/tracking.md) are never
compared with this one's inputs: they recompute once, with a line saying so, and
never fail to open nor replay a stale value.
"""

from __future__ import annotations

import inspect
import shutil
import sys
from pathlib import Path

import pytest

import nbstep

FORMAT_VERSION_OF_CELLS = 3
STORES = Path(__file__).parent / "stores"

CELLS = [
    "big = list(range(10))",
    '''\
%%step defs
import dataclasses
import functools
SCALE = 3
def helper(x, k=SCALE):
    return x * k
def make_adder(n):
    def add(x):
        return x + n
    return add
add5 = make_adder(5)
@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
class Model:
    def __init__(self, w):
        self.w = w
    @functools.cached_property
    def doubled(self):
        return self.w * 2
    def predict(self, x):
        return helper(x) + self.w
@dataclasses.dataclass
class Point:
    x: int
    y: int = 0
def uses_big(c=big):
    return len(c)
model = Model(2)
pt = Point(1, 2)
print("defined", fib(10))
pt''',
    '''\
%%step later
scores = [model.predict(i) for i in range(3)]
scores''',
]


@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="the committed records hold functions compiled by Python 3.11")
@pytest.mark.parametrize("released", sorted(p.name for p in STORES.glob("cells-format-*")))
def test_committed_cell_records_replay(released, tmp_path, monkeypatch, capsys):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    copy = tmp_path / ".nbstep"
    shutil.copytree(STORES / released, copy)
    monkeypatch.setenv("NBSTEP_STORE", str(copy))
    monkeypatch.chdir(tmp_path)
    nbstep.configure(namespace="cells.ipynb")
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "nocolor"
    # The shell makes its own __main__; the classes its cells define must not outlive
    # this test (other tests read records whose classes are *not* defined).
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    shell = InteractiveShell.instance(config=config)
    try:
        shell.run_cell("%load_ext nbstep")
        for source in CELLS:
            shell.run_cell(source, store_history=True).raise_error()
        out = capsys.readouterr().out
        if released == f"cells-format-{FORMAT_VERSION_OF_CELLS}":
            assert "nbstep ⟲ replayed `defs`" in out and "nbstep ⟲ replayed `later`" in out, out
            assert "recomputing" not in out
        else:
            for key in ("defs", "later"):
                assert f"nbstep ↻ recomputing `{key}`: its record of " in out, out
                assert "was made by an older nbstep" in out
            assert "replayed" not in out
        assert "defined 55" in out
        ns = shell.user_ns
        assert ns["helper"](2) == 6
        assert ns["add5"](1) == 6
        assert ns["fib"](20) == 6765
        assert ns["model"].predict(1) == 5 and ns["model"].doubled == 4
        assert ns["pt"] == ns["Point"](1, 2) and type(ns["pt"]) is ns["Point"]
        assert ns["uses_big"]() == 10
        assert ns["uses_big"].__defaults__[0] is ns["big"]  # an earlier cell's very object
        assert ns["scores"] == [2, 5, 8]
        assert "return x * k" in inspect.getsource(ns["helper"])
    finally:
        shell.run_cell("%unload_ext nbstep")
        InteractiveShell.clear_instance()
