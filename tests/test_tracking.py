"""Replay equals recompute, family by family, through real kernels (issue 14).

Each test runs a small notebook in a new kernel (a restart, then "Run All"), edits
cells the way a user does, and runs it again against the same store. A later cell
prints what the state is; the printed lines must be those of a plain run, whether
the steps computed or replayed, and each test also checks which of the two happened
(``replayed ...`` / ``recomputing ...`` lines). tests/test_differential.py runs the
same property over generated edit sequences.
"""

from __future__ import annotations

import pytest
from kernels import Kernel, plain, run_notebook

pytestmark = pytest.mark.kernel

LOAD = "%load_ext nbstep"


@pytest.fixture
def notebook(tmp_path):
    return tmp_path / "analysis.ipynb"


def printed(cells, index):
    """What a cell printed (nbstep's own lines are display outputs, not stdout)."""
    return cells[index].lines()


def said(cells, index, start):
    """nbstep's lines for a cell that start with ``start`` (after ``nbstep ⟲ ``)."""
    return [line for line in cells[index].notices() if line.split(" ", 2)[2].startswith(start)]


def assert_all_ok(cells):
    failed = [(i, c.errors()) for i, c in enumerate(cells) if not c.ok]
    assert not failed, failed


# -- 1. objects changed but not bound by the cell -------------------------------------

MODELS = [
    LOAD,
    "class Model:\n"
    "    def __init__(self):\n"
    "        self.w = None\n"
    "    def fit(self, X, y):\n"
    "        self.w = sum(X) / len(X)\n"
    "        return self\n"
    "X, y = [1, 2, 3], [0, 1, 1]\n"
    "clf, clf2, clf3 = Model(), Model(), Model()\n"
    "holder = [clf]\n"
    "items = [1]",
    "def train(m, epochs):\n    m.fit(X, y)\n    return m\n"
    "def fit_global():\n    clf3.fit([7, 9], y)\n"
    "def fill(lst, n):\n    lst.extend(range(n))",
    "%%step train\nmodel = train(clf, 5)",
    "%%step alias\nm = clf2\nm.fit([10, 20], y)",
    "%%step global_fit\nfit_global()",
    "%%step fill\nfill(items, 3)",
    "print(model.w, clf.w, model is clf, holder[0] is clf, holder[0].w)\n"
    "print(m.w, clf2.w, m is clf2)\nprint(clf3.w, items)",
]


def test_objects_a_cell_changes_without_binding_them_replay_changed(notebook):
    first = run_notebook(notebook, MODELS)
    second = run_notebook(notebook, MODELS)
    assert_all_ok(first + second)
    expected = ["2.0 2.0 True True 2.0", "15.0 15.0 True", "8.0 [1, 0, 1, 2]"]
    assert printed(first, 7) == printed(second, 7) == expected
    for index in (3, 4, 5, 6):
        assert said(second, index, "replayed `"), second[index].lines()
    # An edit upstream of a model the step fits in place: the step fits it again.
    edited = [MODELS[0], MODELS[1].replace("X, y = [1, 2, 3]", "X, y = [3, 4, 5]"),
              *MODELS[2:]]
    third = run_notebook(notebook, edited)
    assert printed(third, 7)[0] == "4.0 4.0 True True 4.0"
    assert said(third, 3, "recomputing `train`: variable `X`")


def test_an_object_changed_then_unbound_stays_changed_for_its_other_holders(notebook):
    cells = [LOAD, MODELS[1], "%%step fit_then_drop\nclf.fit(X, y)\nbest = clf.w\nclf = None\n"
                              "items.append(2)\ndel items",
             "print(holder[0].w, best, clf, 'items' in dir())"]
    first = run_notebook(notebook, cells)
    second = run_notebook(notebook, cells)
    assert_all_ok(first + second)
    assert printed(first, 3) == printed(second, 3) == ["2.0 2.0 None False"]
    assert said(second, 2, "replayed `fit_then_drop`")


# -- 2. reads static analysis misses ----------------------------------------------------

READS = [
    LOAD,
    "import duckdb\nimport pandas as pd\nLIMIT = 1\nTOTAL = 0\n"
    "df = pd.DataFrame({'a': [0, 1, 2, 3]})\nsales = pd.DataFrame({'x': [1, 2, 3]})\n"
    "def scale():\n    return FACTOR * 2\nFACTOR = 10\n"
    "def bump():\n    global TOTAL\n    TOTAL += 1\n    return TOTAL",
    "%%step query\nn = len(df.query('a > @LIMIT'))",
    "%%step sql\ntot = duckdb.sql('select sum(x) from sales').fetchall()[0][0]",
    "%%step helper\nscaled = scale()",
    "%%step bump\nbumped = bump()",
    "%%step guarded\ntry:\n    u = EXTRA\nexcept NameError:\n    u = 'none'",
    "%%step namespace\ng = globals()['LIMIT'] * 100",
    "print(n, tot, scaled, bumped, TOTAL, u, g)",
]


def test_reads_through_strings_functions_and_missing_names_are_inputs(notebook):
    first = run_notebook(notebook, READS)
    assert_all_ok(first)
    assert printed(first, 8) == ["2 6 20 1 1 none 100"]
    edited = list(READS)
    edited[1] = (READS[1].replace("LIMIT = 1", "LIMIT = 2\nEXTRA = 'set'")
                 .replace("[1, 2, 3]", "[1, 2, 30]").replace("FACTOR = 10", "FACTOR = 5"))
    second = run_notebook(notebook, edited)
    assert_all_ok(second)
    assert printed(second, 8) == ["1 33 10 1 1 set 200"]  # as a plain run prints it
    assert said(second, 2, "recomputing `query`: variable `LIMIT`")
    assert said(second, 3, "recomputing `sql`: variable `sales`")
    assert "variable `scale`" in said(second, 4, "recomputing `helper`: ")[0]
    assert said(second, 5, "replayed `bump`")  # TOTAL and bump are as they were
    assert said(second, 6, "recomputing `guarded`: variable `EXTRA` (now defined)")
    assert said(second, 7, "recomputing `namespace`: variable `LIMIT`")
    third = run_notebook(notebook, edited)
    assert printed(third, 8) == printed(second, 8)
    assert all(said(third, i, "replayed `") for i in range(2, 8))


# -- 3. names bound on some paths only ----------------------------------------------------

BRANCH = [LOAD, "QUICK = False\nN_EPOCHS = 10", "%%step epochs\nif QUICK:\n    N_EPOCHS = 1",
          "print('epochs', N_EPOCHS)"]


def test_a_branch_not_taken_leaves_the_earlier_value(notebook):
    runs = []
    for setup in ("QUICK = False\nN_EPOCHS = 10", "QUICK = False\nN_EPOCHS = 20",
                  "QUICK = True\nN_EPOCHS = 20", "QUICK = True\nN_EPOCHS = 20",
                  # The branch binds the value the name had (Python shares small ints):
                  # the run changed nothing, yet a replay must not keep another value.
                  "QUICK = True\nN_EPOCHS = 1", "QUICK = True\nN_EPOCHS = 30"):
        runs.append(run_notebook(notebook, [LOAD, setup, *BRANCH[2:]]))
    assert [printed(cells, 3) for cells in runs] == [
        ["epochs 10"], ["epochs 20"], ["epochs 1"], ["epochs 1"], ["epochs 1"], ["epochs 1"]]
    assert said(runs[1], 2, "recomputing `epochs`: variable `N_EPOCHS`")
    assert said(runs[2], 2, "recomputing `epochs`: variable `QUICK`")
    assert said(runs[3], 2, "replayed `epochs`")


# -- 4. code identity -----------------------------------------------------------------------

CODE = [
    LOAD,
    "import dataclasses, functools, sys\nsys.path.insert(0, '.')\n"
    "@dataclasses.dataclass\nclass P:\n    x: int\n    def score(self):\n        return self.x * 2\n"
    "p = P(3)\n"
    "@functools.lru_cache\ndef sq(n):\n    return n * n\n"
    "def deco(f):\n    @functools.wraps(f)\n    def w(*a):\n        return f(*a) + 1\n    return w\n"
    "@deco\ndef base(n):\n    return n\n"
    "k = 2\nfs = [lambda x, i=i: x * i * k for i in range(3)]\n"
    "def make(n):\n    return lambda x: x + n\nadd = make(5)",
    "%%step method\ns = p.score()",
    "%%step cached\nv = sq(4)",
    "%%step wrapped\nwv = base(1)",
    "%%step lambdas\nlv = [f(1) for f in fs] + [add(1)]",
    "import helpers",
    "%%step module\nhv = helpers.f(3)",
    "print(s, v, wv, lv, hv)",
]
HELPERS = "SCALE = 2\ndef f(x):\n    return x * SCALE\n"


def test_code_counts_by_what_runs_not_by_fields_comments_or_files(notebook):
    (notebook.parent / "helpers.py").write_text(HELPERS)
    first = run_notebook(notebook, CODE)
    assert_all_ok(first)
    assert printed(first, 8) == ["6 16 2 [0, 2, 4, 6] 6"]
    # Method bodies, a cached function, a decorator, a closure's value: all change.
    edited = list(CODE)
    edited[1] = (CODE[1].replace("self.x * 2", "self.x * 3").replace("n * n", "n * n * n")
                 .replace("+ 1", "+ 100").replace("k = 2", "k = 3").replace("make(5)", "make(6)"))
    # A comment and a docstring in the module: no change.
    (notebook.parent / "helpers.py").write_text(
        '"""Helpers."""\n# the scale\nSCALE = 2\ndef f(x):\n    """Scaled."""\n'
        "    # times the scale\n    return x * SCALE\n")
    second = run_notebook(notebook, edited)
    assert_all_ok(second)
    assert printed(second, 8) == ["9 64 101 [0, 3, 6, 7] 6"]
    for index, key, name in ((2, "method", "p"), (3, "cached", "sq"), (4, "wrapped", "base"),
                             (5, "lambdas", "add")):
        assert said(second, index, f"recomputing `{key}`: "), second[index].lines()
        assert f"variable `{name}`" in said(second, index, "recomputing")[0]
    assert said(second, 7, "replayed `module`")


def test_a_module_edited_but_not_reloaded_records_what_the_kernel_ran(notebook):
    (notebook.parent / "helpers.py").write_text(HELPERS)
    cells = [LOAD, "import sys\nsys.path.insert(0, '.')\nimport helpers",
             "open('helpers.py', 'w').write('SCALE = 3\\ndef f(x):\\n    return x * SCALE\\n')",
             "%%step stale_module\nhv = helpers.f(3)", "print('hv', hv)"]
    first = run_notebook(notebook, cells)
    assert printed(first, 4) == ["hv 6"]  # the kernel still runs the old code
    second = run_notebook(notebook, cells)  # a new kernel imports the edited file
    assert printed(second, 4) == ["hv 9"]
    assert said(second, 3, "recomputing `stale_module`: variable `helpers`")


# -- 5. effects outside the cell's variables ---------------------------------------------

EFFECTS = [
    LOAD,
    "import os, random, sys\nimport numpy as np\nsys.path.insert(0, '.')\nimport cfgmod\n"
    "class Settings:\n    lr = 1",
    "%%step effects\ncfgmod.SCALE = 3\nSettings.lr = 5\nnp.random.seed(0)\nrandom.seed(1)\n"
    "os.environ['NBSTEP_TEST_VAR'] = 'x'\n%env NBSTEP_TEST_ENV=y\nsys.path.append('/nbstep/extra')",
    "print(cfgmod.SCALE, Settings.lr, round(np.random.rand(), 6), round(random.random(), 6))\n"
    "print(os.environ.get('NBSTEP_TEST_VAR'), os.environ.get('NBSTEP_TEST_ENV'), sys.path[-1])",
    "np.random.seed(SEED)",
    "%%step draw\ndraws = np.random.rand(2).round(6).tolist()",
    "print(draws, round(np.random.rand(), 6))",
]


def test_effects_on_modules_classes_and_the_process_replay(notebook):
    (notebook.parent / "cfgmod.py").write_text("SCALE = 1\n")
    cells = [*EFFECTS[:4], "SEED = 0\n" + EFFECTS[4], *EFFECTS[5:]]
    first = run_notebook(notebook, cells)
    second = run_notebook(notebook, cells)
    assert_all_ok(first + second)
    assert printed(first, 3) == printed(second, 3)
    assert printed(second, 3)[0] == "3 5 0.548814 0.134364"
    assert printed(second, 3)[1] == "x y /nbstep/extra"
    assert said(second, 2, "replayed `effects`")
    assert printed(first, 6) == printed(second, 6)  # the generator state after the step
    assert said(second, 5, "replayed `draw`")
    # The seed upstream of a step that draws without seeding is one of its inputs.
    third = run_notebook(notebook, [*cells[:4], "SEED = 1\n" + EFFECTS[4], *EFFECTS[5:]])
    assert said(third, 5, "recomputing `draw`: the state of `numpy.random`")
    assert printed(third, 6) != printed(second, 6)


def test_options_a_step_sets_while_importing_their_library_replay(notebook):
    cells = [LOAD,
             "%%step options\nimport pandas as pd\nimport numpy as np\n"
             "import matplotlib.pyplot as plt\nimport warnings\n"
             "pd.set_option('display.max_rows', 5)\nnp.random.seed(0)\n"
             "np.set_printoptions(precision=2)\nplt.style.use('ggplot')\n"
             "warnings.filterwarnings('ignore', message='nbstep-test')",
             "print(pd.get_option('display.max_rows'), round(np.random.rand(), 6), "
             "np.array([1 / 3]), plt.rcParams['axes.facecolor'], "
             "any(f[1] is not None and f[1].pattern == 'nbstep-test' for f in warnings.filters))"]
    first = run_notebook(notebook, cells)
    second = run_notebook(notebook, cells)
    assert_all_ok(first + second)
    assert said(second, 1, "replayed `options`")
    assert second[1].stream("stderr") == ""  # no option set that did not change
    assert printed(first, 2) == printed(second, 2) == ["5 0.548814 [0.33] #E5E5E5 True"]


def test_what_nbstep_cannot_track_is_said_and_recomputed(notebook):
    cells = [LOAD, "import logging, sqlite3\ncon = sqlite3.connect(':memory:')",
             "%%step logs\nlogging.basicConfig(level=logging.INFO)\nlevel = 1",
             "%%step rows\nrows = con.execute('select 42').fetchall()",
             "%%step trusted --allow-untracked\ntrusted = con.execute('select 7').fetchall()",
             "print(level, rows, trusted)"]
    for cells_run in (run_notebook(notebook, cells), run_notebook(notebook, cells)):
        assert_all_ok(cells_run)
        assert said(cells_run, 2, "note: `logs` is not recorded: it calls "
                                  "`logging.basicConfig`, whose effect nbstep cannot record")
        assert said(cells_run, 3, "note: `rows` is not recorded: it reads `con` "
                                  "(sqlite3.Connection), whose state nbstep cannot see")
        assert printed(cells_run, 5) == ["1 [(42,)] [(7,)]"]
    assert said(cells_run, 4, "replayed `trusted`")


# -- 6. replay fidelity -------------------------------------------------------------------

FIDELITY = [
    LOAD,
    "%%step imports\nimport xml.dom.minidom",
    "print(xml.dom.minidom.parseString('<a/>').documentElement.tagName)",
    "%%step interleaved\nimport sys\nfrom IPython.display import HTML, display\n"
    "print('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\n"
    "print('three', flush=True)\ndisplay(HTML('<b>four</b>'))\n"
    "print('five', file=sys.stderr, flush=True)\n42",
]


def test_imports_and_the_order_of_outputs_replay(notebook):
    first = run_notebook(notebook, FIDELITY)
    second = run_notebook(notebook, FIDELITY)
    assert_all_ok(first + second)
    assert printed(second, 2) == ["a"]
    expected = ["stream:stdout", "stream:stderr", "stream:stdout", "display_data",
                "stream:stderr"]
    assert first[3].kinds() == [*expected, "execute_result"]
    # The replayed line comes after the outputs, and Out[n] last, as in a plain run.
    assert second[3].kinds() == [*expected, "nbstep-notice", "execute_result"]
    assert [o.text for o in second[3].outputs[:3]] == ["one\n", "two\n", "three\n"]
    assert said(second, 3, "replayed `interleaved`")


# -- 7. objects shared between cells ------------------------------------------------------

SHARED = [
    LOAD,
    "import numpy as np\nimport pandas as pd\nx2 = np.arange(9).reshape(3, 3)\n"
    "cfg = {'lr': 0.1}\npopulations = [1, 2, 3, 4]\n"
    "index = [('California', 2000), ('California', 2010), ('New York', 2000), "
    "('New York', 2010)]\npop = pd.Series(populations, index=index)\n"
    "index = pd.MultiIndex.from_tuples(index)",
    "%%step view\nx2_sub = x2[:2, :2]",
    "%%step poke\nx2_sub[0, 0] = 99",
    "%%step wrap\nmodel = {'cfg': cfg}",
    "%%step tune\nmodel['cfg']['lr'] = 0.5",
    "%%step reindex\npop = pop.reindex(index)",
    "%%step names\npop.index.names = ['state', 'year']",
    "print(x2[0, 0], x2_sub[0, 0], np.shares_memory(x2, x2_sub), cfg, model['cfg'] is cfg)\n"
    "print(pop.index.names, pop.loc['California'].tolist())",
]


def test_objects_shared_with_earlier_cells_come_back_shared_and_changed(notebook):
    first = run_notebook(notebook, SHARED)
    second = run_notebook(notebook, SHARED)
    assert_all_ok(first + second)
    expected = ["99 99 True {'lr': 0.5} True", "['state', 'year'] [1, 2]"]
    assert printed(first, 8) == printed(second, 8) == expected
    assert all(said(second, i, "replayed `") for i in range(2, 8))


# -- 8. types and figures ---------------------------------------------------------------------

FIGURES = [
    LOAD,
    "import numpy as np\n"
    "data = np.zeros(2, dtype={'names': ('name', 'age'), 'formats': ('U10', 'i4')})\n"
    "data['name'] = ['Alice', 'Bob']\ndata['age'] = [25, 45]",
    "%%step records\nrec = data.view(np.recarray)",
    "print(type(rec) is np.recarray, rec.age.tolist(), rec[0].name)",
    "%%step figure\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3])",
    "%%step title\nax.set_title('hello')\nfig",
    "print(ax.get_title(), ax.figure is fig, fig.axes[0] is ax)",
    "%%step limits\nplt.plot([1, 2])\nplt.xlim(0, 3)",
]


def test_exact_classes_figures_and_the_order_of_a_figure_and_its_result(notebook):
    first = run_notebook(notebook, FIGURES)
    second = run_notebook(notebook, FIGURES)
    assert_all_ok(first + second)
    assert printed(first, 3) == printed(second, 3) == ["True [25, 45] Alice"]
    assert printed(first, 6) == printed(second, 6) == ["hello True True"]
    for cells in (first, second):
        assert "image/png" in cells[5].rich("execute_result")[0]  # the changed figure
        # Out[n], then the figure the inline backend shows, as in a plain run.
        assert [k for k in cells[7].kinds() if k not in ("stream:stdout", "nbstep-notice")] == [
            "execute_result", "display_data"]
        assert "image/png" in cells[7].rich("display_data")[0]
    assert all(said(second, i, "replayed `") for i in (2, 4, 5, 7))
    with Kernel(notebook) as kernel:
        plain_run = kernel.run_all(plain(FIGURES))
    assert [k for k in plain_run[7].kinds()] == ["execute_result", "display_data"]


def test_a_replayed_figure_shows_whatever_set_the_backend(notebook):
    cells = [LOAD, "%matplotlib inline",
             "%%step made\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
             "ax.plot([3, 1])\nplt.close(fig)",
             "%%step shown\nax.set_xlabel('x')\nfig"]
    first = run_notebook(notebook, cells)
    second = run_notebook(notebook, cells)
    assert_all_ok(first + second)
    assert said(second, 3, "replayed `shown`")
    for run in (first, second):
        assert "image/png" in run[3].rich("execute_result")[0]
