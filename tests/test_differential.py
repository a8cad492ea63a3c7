"""The differential harness: replay equals recompute, over generated edits and restarts.

Small notebooks (TEMPLATES) have cells with a few variants each (a value changed, a
method body edited, a comment added), and a local module with variants of its file.
Hypothesis generates a sequence of what a user does: edit a cell, edit the module's
file, "Run All" in the running kernel, restart the kernel and "Run All". The sequence
runs twice, through real kernels: with nbstep (the cells as written, one store), and
plain (the same cells without ``%%step`` and ``%load_ext nbstep``). After every Run
All the two must agree on what each cell showed (nbstep's own lines aside) and on
the state of the kernel: every variable's value, which variables are the same
object or share memory, the module's and classes' attributes, the environment
variable, both random generators.

Bounded for CI: ``MAX_EXAMPLES`` sequences of at most 5 steps, kernels started only
on restarts, and a plain kernel's result reused for the same cells. The seed is fixed
(``NBSTEP_DIFF_SEED`` picks another) and printed with any failure; shrinking is off
unless ``NBSTEP_DIFF_SHRINK=1`` (each shrink step starts kernels).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, seed, settings
from hypothesis import strategies as st
from kernels import Cell, Kernel, plain

pytestmark = pytest.mark.kernel

SEED = int(os.environ.get("NBSTEP_DIFF_SEED", "20261201"))
MAX_EXAMPLES = int(os.environ.get("NBSTEP_DIFF_EXAMPLES", "15"))
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("NBSTEP_DIFF_SHRINK") == "1":
    PHASES.append(Phase.shrink)

LOAD = "%load_ext nbstep"

# Each template: a module file's variants and cells, each cell a tuple of variants.
TEMPLATES: dict[str, dict[str, Any]] = {
    "training": {
        "module": ("def rate(x):\n    return x / 10\n",
                   "# the learning rate\ndef rate(x):\n    '''x, scaled.'''\n    return x / 10\n",
                   "def rate(x):\n    return x / 5\n"),
        "cells": [
            (LOAD,),
            ("import numpy as np\nimport sys\nsys.path.insert(0, '.')\nimport hmod\n"
             "np.random.seed(0)\nX = [1.0, 2.0, 3.0]\nQUICK = False\nEPOCHS = 3",
             "import numpy as np\nimport sys\nsys.path.insert(0, '.')\nimport hmod\n"
             "np.random.seed(1)\nX = [1.0, 2.0, 3.0]\nQUICK = True\nEPOCHS = 3",
             "import numpy as np\nimport sys\nsys.path.insert(0, '.')\nimport hmod\n"
             "np.random.seed(0)\nX = [2.0, 4.0]\nQUICK = False\nEPOCHS = 5",
             "import numpy as np\nimport sys\nsys.path.insert(0, '.')\nimport hmod\n"
             "np.random.seed(0)\nX = [1.0, 2.0, 3.0]\nQUICK = True\nEPOCHS = 1"),
            ("class Model:\n    def __init__(self):\n        self.w = 0.0\n        self.seen = []\n"
             "    def fit(self, xs, epochs):\n        for _ in range(epochs):\n"
             "            self.w += hmod.rate(sum(xs) / len(xs))\n        self.seen.append(epochs)\n"
             "        return self\nclf = Model()\nholder = [clf]\n"
             "def train(m, n):\n    return m.fit(X, n)",
             "class Model:\n    def __init__(self):\n        self.w = 0.0\n        self.seen = []\n"
             "    def fit(self, xs, epochs):\n        for _ in range(epochs):\n"
             "            self.w += 2 * hmod.rate(sum(xs) / len(xs))\n"
             "        self.seen.append(epochs)\n        return self\nclf = Model()\n"
             "holder = [clf]\ndef train(m, n):\n    return m.fit(X, n)",
             "class Model:\n    # a comment\n    def __init__(self):\n        self.w = 0.0\n"
             "        self.seen = []\n    def fit(self, xs, epochs):\n"
             "        for _ in range(epochs):\n            self.w += hmod.rate(sum(xs) / len(xs))\n"
             "        self.seen.append(epochs)\n        return self\nclf = Model()\n"
             "holder = [clf]\ndef train(m, n):\n    return m.fit(X, n)"),
            ("%%step epochs\nif QUICK:\n    EPOCHS = 1",),
            ("%%step train\nmodel = train(clf, EPOCHS)\nprint('trained', round(model.w, 6))",),
            ("%%step noise\nnoise = np.random.rand(2).round(6).tolist()\nnoise",
             "%%step noise\nnp.random.seed(7)\nnoise = np.random.rand(2).round(6).tolist()\nnoise"),
            ("print(round(clf.w, 6), model is clf, holder[0] is clf, clf.seen, EPOCHS, noise)",),
        ],
    },
    "sharing": {
        "module": ("LIMIT = 3\n", "LIMIT = 4\n"),
        "cells": [
            (LOAD,),
            ("import numpy as np\nimport sys\nsys.path.insert(0, '.')\nimport hmod\n"
             "base = np.arange(12).reshape(3, 4)\ncfg = {'lr': 0.1, 'layers': [1, 2]}\nitems = []",
             "import numpy as np\nimport sys\nsys.path.insert(0, '.')\nimport hmod\n"
             "base = np.arange(12).reshape(4, 3) * 2\ncfg = {'lr': 0.2, 'layers': [3]}\nitems = [9]"),
            ("%%step view\nsub = base[:2, 1:3]\nwrapper = {'cfg': cfg, 'items': items}",),
            ("%%step poke\nsub[0, 0] = -1\nwrapper['cfg']['lr'] = 0.5\n"
             "wrapper['cfg']['layers'].append(len(items))",
             "%%step poke\nsub[1, 1] = -7\nwrapper['items'].append(42)"),
            ("def grow(lst, n):\n    lst.extend(range(n))",
             "def grow(lst, n):\n    lst.append(n * hmod.LIMIT)"),
            ("%%step grow\ngrow(items, 2)\ntotal = sum(items)\ntotal",),
            ("print(base.tolist(), sub.tolist(), cfg, wrapper['cfg'] is cfg, items, total)",),
        ],
    },
    "effects": {
        "module": ("SCALE = 1\ndef scaled(x):\n    return x * SCALE\n",
                   "SCALE = 1\ndef scaled(x):\n    return x * SCALE + 1\n"),
        "cells": [
            (LOAD,),
            ("import os, random, sys\nsys.path.insert(0, '.')\nimport hmod\n"
             "class Settings:\n    lr = 1\nLIMIT = 2",
             "import os, random, sys\nsys.path.insert(0, '.')\nimport hmod\n"
             "class Settings:\n    lr = 1\nLIMIT = 3\nEXTRA = 'here'"),
            ("%%step config\nhmod.SCALE = LIMIT * 10\nSettings.lr = LIMIT\n"
             "os.environ['NBSTEP_DIFF_VAR'] = str(LIMIT)\nrandom.seed(LIMIT)",
             "%%step config\nif LIMIT > 2:\n    hmod.SCALE = 5\nSettings.lr += 1\n"
             "os.environ['NBSTEP_DIFF_VAR'] = 'v' + str(LIMIT)\nrandom.seed(LIMIT + 1)"),
            ("%%step use\ntry:\n    extra = EXTRA\nexcept NameError:\n    extra = None\n"
             "vals = [hmod.scaled(LIMIT), round(random.random(), 6), globals()['LIMIT']]\nvals",),
            ("print(hmod.SCALE, Settings.lr, os.environ.get('NBSTEP_DIFF_VAR'), "
             "round(random.random(), 6), vals, extra)",),
        ],
    },
}

# What the kernel's state is, printed as one JSON line (run with exec: binds nothing).
PROBE = r'''
import hashlib, json, os, random, sys, types
def _code(c):
    return hashlib.sha256(c.co_code + repr([_code(k) if isinstance(k, types.CodeType) else k
                                           for k in c.co_consts]).encode()).hexdigest()[:12]
def _describe(v, depth=0):
    if depth > 6:
        return "..."
    if isinstance(v, (bool, int, float, str, type(None))):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return type(v).__name__ + "[" + ",".join(_describe(x, depth + 1) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k!r}:{_describe(x, depth + 1)}" for k, x in v.items()) + "}"
    if type(v).__name__ == "ndarray":
        return f"ndarray({v.dtype},{v.shape},{v.tolist()})"
    if isinstance(v, types.ModuleType):
        return "module " + v.__name__
    if isinstance(v, types.FunctionType):
        return "function " + v.__qualname__ + " " + _code(v.__code__)
    if isinstance(v, type):
        return "class " + v.__qualname__ + " " + _describe(
            {k: (_code(x.__code__) if isinstance(x, types.FunctionType) else x)
             for k, x in sorted(vars(v).items()) if not k.startswith("__")}, depth + 1)
    return type(v).__qualname__ + _describe(dict(sorted(vars(v).items())), depth + 1)
user = {k: v for k, v in ns.items() if not k.startswith("_")
        and k not in ("In", "Out", "get_ipython", "exit", "quit", "step")}
values = {k: _describe(v) for k, v in sorted(user.items())}
groups = {}
for k, v in sorted(user.items()):
    if not isinstance(v, (bool, int, float, str, tuple, type(None), types.ModuleType,
                          types.FunctionType, type)):
        groups.setdefault(id(v), []).append(k)
shared = sorted(g for g in groups.values() if len(g) > 1)
np = sys.modules.get("numpy")
memory = []
if np is not None:
    arrays = sorted((k, v) for k, v in user.items() if isinstance(v, np.ndarray))
    memory = [[a, b] for i, (a, x) in enumerate(arrays) for b, y in arrays[i + 1:]
              if np.shares_memory(x, y)]
module = sys.modules.get("hmod")
state = {
    "random": hashlib.sha256(repr(random.getstate()).encode()).hexdigest()[:12],
    "numpy": (hashlib.sha256(np.random.get_state()[1].tobytes()).hexdigest()[:12]
              + str(np.random.get_state()[2])) if np is not None else None,
    "env": os.environ.get("NBSTEP_DIFF_VAR"),
    "hmod": ({k: _describe(v) for k, v in sorted(vars(module).items())
              if not k.startswith("__")} if module is not None else None),
}
print("FINGERPRINT:" + json.dumps({"values": values, "shared": shared, "memory": memory,
                                   "state": state}, sort_keys=True))
'''
PROBE_CELL = "exec(open('probe.py').read(), {'ns': get_ipython().user_ns})"
PRELUDE = "exec('import random, numpy\\nrandom.seed(0)\\nnumpy.random.seed(0)', {})"
# nbstep's replayed/recomputing/note lines are display outputs of their own (left out
# below); only the kernel's identity note is still printed.
NBSTEP_LINES = ("note: ",)


def shown(cell: Cell) -> dict[str, Any]:
    """What a cell showed, comparable between nbstep and plain: the text of each
    stream (nbstep's own lines left out), the rich outputs in order, errors."""
    stdout = [line for line in cell.stream("stdout").splitlines(keepends=True)
              if not line.startswith(NBSTEP_LINES)]
    rich = [(o.kind, o.text, sorted(o.data)) for o in cell.outputs
            if o.kind in ("display_data", "execute_result") and not o.is_notice]
    return {"stdout": "".join(stdout), "stderr": cell.stream("stderr"), "rich": rich,
            "errors": cell.errors(), "ok": cell.ok}


@dataclass
class Session:
    """One side of the comparison: its kernel, notebook folder and cells."""

    folder: Path
    with_nbstep: bool
    kernel: Kernel | None = None

    def restart(self) -> None:
        self.close()
        self.kernel = Kernel(self.folder / "analysis.ipynb")
        # Both generators start from entropy in a new process: seeded alike on both
        # sides, an unseeded draw gives the same numbers with and without nbstep.
        prelude = self.kernel.run(PRELUDE, cell_id="prelude")
        assert prelude.ok, prelude.outputs

    def run_all(self, cells: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        assert self.kernel is not None
        sources = cells if self.with_nbstep else plain(cells)
        outputs = [shown(cell) for cell in self.kernel.run_all(sources)]
        probe = self.kernel.run(PROBE_CELL, cell_id="probe")
        line = [x for x in probe.lines() if x.startswith("FINGERPRINT:")]
        assert line, probe.outputs
        return outputs, json.loads(line[0][len("FINGERPRINT:"):])

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None


def _folder(module_source: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="nbstep-diff-"))
    (folder / "probe.py").write_text(PROBE)
    (folder / "hmod.py").write_text(module_source)
    return folder


# Plain results of a kernel's history since its start: (module, cells) per Run All.
_PLAIN: dict[tuple[Any, ...], list[Any]] = {}


def _plain_results(history: tuple[tuple[str, tuple[str, ...]], ...]) -> list[Any]:
    """What a plain kernel shows for each Run All of ``history`` (one kernel, reused)."""
    if history not in _PLAIN:
        folder = _folder(history[0][0])
        session = Session(folder, with_nbstep=False)
        try:
            session.restart()
            results = []
            for module_source, cells in history:
                (folder / "hmod.py").write_text(module_source)
                results.append(session.run_all(list(cells)))
        finally:
            session.close()
            shutil.rmtree(folder, ignore_errors=True)
        _PLAIN[history] = results
    return _PLAIN[history]


@st.composite
def scenarios(draw: Any) -> tuple[str, list[int], list[tuple[str, Any]]]:
    """A template, the variants of its cells at first, and what the user does:
    edits, Run All, restart + Run All."""
    name = draw(st.sampled_from(sorted(TEMPLATES)))
    template = TEMPLATES[name]
    cells = template["cells"]
    first = [draw(st.integers(0, len(variants) - 1)) for variants in cells]
    editable = [i for i, variants in enumerate(cells) if len(variants) > 1]
    action = st.one_of(
        st.tuples(st.just("edit"), st.tuples(st.sampled_from(editable),
                                             st.integers(0, 3))),
        st.tuples(st.just("edit_module"), st.integers(0, len(template["module"]) - 1)),
        st.tuples(st.just("run_all"), st.none()),
        st.tuples(st.just("restart"), st.none()),
    )
    actions = draw(st.lists(action, min_size=1, max_size=4))
    return name, first, [("restart", None), *actions, ("run_all", None)]


@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
          print_blob=True)
@seed(SEED)
@given(scenarios())
def test_replay_equals_recompute(scenario):
    name, first, actions = scenario
    note(f"differential harness seed {SEED}: rerun with NBSTEP_DIFF_SEED={SEED}")
    template = TEMPLATES[name]
    choice = list(first)
    module = 0
    folder = _folder(template["module"][0])
    session = Session(folder, with_nbstep=True)
    history: list[tuple[str, tuple[str, ...]]] = []
    try:
        for kind, argument in actions:
            if kind == "edit":
                index, variant = argument
                choice[index] = variant % len(template["cells"][index])
                continue
            if kind == "edit_module":
                module = argument
                continue
            module_source = template["module"][module]
            (folder / "hmod.py").write_text(module_source)
            cells = tuple(variants[choice[i]] for i, variants in enumerate(template["cells"]))
            if kind == "restart" or session.kernel is None:
                session.restart()
                history = []
            history.append((module_source, cells))
            got = session.run_all(list(cells))
            expected = _plain_results(tuple(history))[-1]
            where = (f"differential harness seed {SEED} (rerun with NBSTEP_DIFF_SEED={SEED}), "
                     f"template {name!r}, first variants {first}, actions {actions}, "
                     f"at Run All #{len(history)} of "
                     f"this kernel with cells {choice} and module {module}")
            for index, (mine, theirs) in enumerate(zip(got[0], expected[0], strict=True)):
                if cells[index] != LOAD:  # (its second run says it is loaded already)
                    assert mine == theirs, f"cell {index} showed something else; {where}"
            assert got[1] == expected[1], f"the kernel's state differs; {where}"
    finally:
        session.close()
        shutil.rmtree(folder, ignore_errors=True)
