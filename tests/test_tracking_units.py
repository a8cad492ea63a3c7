"""The parts of tracking on their own (no kernel): digests, states, probes, analysis.

tests/test_tracking.py runs the same through real kernels, family by family.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from nbstep.codecs.cell_pickle import Context, encode_values
from nbstep.codecs.cell_state import apply_state, capture_state, inplace_kind, view_of
from nbstep.codecs.cell_unpickle import decode_values
from nbstep.hashing.code import PartHasher
from nbstep.hashing.state import canonical_digest, root_owner, state_digest
from nbstep.notebook import globalstate
from nbstep.notebook.analysis import analyze, parse
from nbstep.notebook.tracking import untracked_calls


def analysis(source: str):
    return analyze(parse(textwrap.dedent(source)))


class Model:
    def __init__(self, w):
        self.w = w


# -- digests ---------------------------------------------------------------------------


def test_a_state_digest_changes_exactly_when_the_pickled_state_does():
    model = Model([1.0, 2.0])
    before = state_digest(model).digest
    assert state_digest(model).digest == before
    model.w.append(3.0)
    assert state_digest(model).digest != before
    array = np.zeros(1000)
    first = state_digest(array).digest
    array[500] = 1
    assert state_digest(array).digest != first


def test_other_notebook_variables_count_by_name_and_identity():
    cfg = {"lr": 0.1}
    model = {"cfg": cfg}
    refs = {id(cfg): "cfg"}
    before = state_digest(model, refs)
    assert before.refs == {"cfg"}
    cfg["lr"] = 0.5  # a change inside cfg is cfg's, not model's
    assert state_digest(model, refs).digest == before.digest
    model["cfg"] = {"lr": 0.5}  # another object, though equal
    assert state_digest(model, refs).digest != before.digest


def test_an_array_sharing_a_variables_memory_names_it():
    x2 = np.arange(9).reshape(3, 3)
    sub = x2[:2, :2]
    assert state_digest(sub, {}, {id(root_owner(x2)): "x2"}).refs == {"x2"}


def test_what_pickle_refuses_counts_by_identity_and_is_listed():
    import threading

    assert state_digest(threading.Lock()).digest is None
    holder = Model(threading.Lock())
    digest = state_digest(holder)
    assert digest.digest is not None and digest.opaque == ["_thread.lock"]
    assert canonical_digest(holder, repr).digest is not None


def test_a_canonical_digest_is_the_same_in_every_process():
    """Sets iterate in another order under another PYTHONHASHSEED; the digest does not."""
    script = textwrap.dedent("""\
        import sys
        sys.path.insert(0, sys.argv[1])
        from nbstep.hashing.code import PartHasher
        class Model:
            def __init__(self):
                self.tags = {"alpha", "beta", "gamma", "delta"}
                self.table = {("a", 1): frozenset({"x", "y"})}
                self.fn = len
        print(PartHasher({}, {"__main__"}).part(Model()))
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = set()
    for seed_ in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", script, root], capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": seed_})
        assert done.returncode == 0, done.stderr
        parts.add(done.stdout.strip())
    assert len(parts) == 1 and parts.pop().startswith("state:sha256:")


def test_a_figure_digests_the_same_until_it_changes():
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    plt.close(fig)
    before = state_digest(fig).digest
    assert state_digest(fig).digest == before  # pickling moved no counter
    ax.set_title("t")
    assert state_digest(fig).digest != before
    copy = pickle.loads(pickle.dumps(fig))
    assert state_digest(copy).digest == state_digest(copy).digest


def test_a_dataclass_counts_by_its_methods_too():
    ns: dict = {"__name__": "__main__"}

    def made(body: str) -> str:
        exec(compile(textwrap.dedent(f"""\
            import dataclasses
            @dataclasses.dataclass
            class P:
                x: int
                def score(self):
                    return {body}
            p = P(3)
        """), "<cell>", "exec"), ns)
        return PartHasher(ns, {"__main__"}).part(ns["p"])

    assert made("self.x * 2") != made("self.x * 3")


def test_wrappers_count_by_what_they_wrap():
    import functools

    ns: dict = {"__name__": "__main__"}

    def part(body: str, maxsize: int = 8) -> str:
        exec(compile(f"def f(n):\n    return {body}\n", "<cell>", "exec"), ns)
        return PartHasher(ns, {"__main__"}).part(functools.lru_cache(maxsize)(ns["f"]))

    assert part("n * n") != part("n * n * n")
    assert part("n * n") != part("n * n", maxsize=16)
    exec("def g(a, b):\n    return a + b\n", ns)
    hasher = PartHasher(ns, {"__main__"})
    assert (hasher.part(functools.partial(ns["g"], 1))
            != PartHasher(ns, {"__main__"}).part(functools.partial(ns["g"], 2)))


# -- states put back ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "kind"), [
    ([1, 2], "list"), ({"a": 1}, "dict"), ({1}, "set"), (bytearray(b"ab"), "bytes"),
    (np.zeros(3), "array"), (Model(1), "object"), ((1, 2), None), ("text", None),
])
def test_which_objects_take_a_state_in_place(value, kind):
    assert inplace_kind(value, lambda cls: cls is Model) == kind


def test_a_state_goes_back_into_the_same_object():
    model, items, array = Model([1]), [1, 2], np.arange(4)
    holder = [model, items, array]
    states = [capture_state(Model([9]), "object"), capture_state([7], "list"),
              capture_state(np.arange(4) * 2, "array")]
    for obj, state in zip((model, items, array), states, strict=True):
        assert apply_state(obj, state) is obj
    assert holder[0].w == [9] and holder[1] == [7] and holder[2].tolist() == [0, 2, 4, 6]
    # Another class, another shape: a new object holding the state.
    other = apply_state(np.zeros(2), states[2])
    assert other.tolist() == [0, 2, 4, 6]


def test_a_view_of_a_notebook_array_is_recorded_as_a_view_of_it():
    x2 = np.arange(9).reshape(3, 3)
    ns = {"x2": x2}
    sub = x2[:2, :2]
    assert view_of(sub, x2) == (0, (2, 2), (24, 8))
    context = Context(ns, dict(ns), recorded={"sub"})
    ns["sub"] = sub
    blob = encode_values({"variables": {"sub": sub}}, context)
    assert context.referenced == {"x2"}
    fresh = {"x2": np.arange(9).reshape(3, 3)}  # a new kernel's x2
    loaded = decode_values(*blob, fresh)["variables"]["sub"]
    loaded[0, 0] = 99
    assert fresh["x2"][0, 0] == 99


def test_a_class_numpy_has_not_imported_by_its_module_is_pickled_by_name():
    data = np.zeros(2, dtype=[("name", "U10"), ("age", "i4")])
    code = ("import sys, numpy as np\n"
            "assert 'numpy.rec' not in sys.modules\n"
            "from nbstep.codecs.cell_pickle import encode_values\n"
            "data = np.zeros(2, dtype=[('name', 'U10'), ('age', 'i4')])\n"
            "_, blob = encode_values(data.view(np.recarray))\n"
            "print(b'_make_skeleton_class' in blob, b'numpy.rec' in blob)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True"], done.stderr
    assert data.view(np.recarray).dtype.names == ("name", "age")


# -- process state -------------------------------------------------------------------------


def test_process_state_changes_replay(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    probes = [globalstate.BY_NAME[n] for n in ("os.environ", "sys.path", "cwd")]
    before = [p.read() for p in probes]
    monkeypatch.setenv("NBSTEP_UNIT_VAR", "1")
    sys.path.insert(0, "/nbstep/first")
    sys.path.append("/nbstep/last")
    os.chdir("sub")
    after = [p.read() for p in probes]
    changes = {p.name: p.change(b, a) for p, b, a in zip(probes, before, after, strict=True)}
    # Back as before the run, then the changes replayed.
    monkeypatch.delenv("NBSTEP_UNIT_VAR")
    sys.path[:] = before[1]
    os.chdir(tmp_path)
    globalstate.apply_changes(changes)
    assert os.environ["NBSTEP_UNIT_VAR"] == "1"
    assert sys.path[0] == "/nbstep/first" and sys.path[-1] == "/nbstep/last"
    assert os.getcwd() == str(tmp_path / "sub")


def test_a_path_added_after_a_folder_listed_twice_replays_in_its_place(monkeypatch):
    # sys.path often holds a folder twice ("" and the notebook's folder, or an editable
    # install's): an entry appended at the end goes back to the end, not after the
    # first copy of the entry before it.
    monkeypatch.setattr(sys, "path", ["/nbstep/dup", "/nbstep/a", "/nbstep/dup"])
    probe = globalstate.BY_NAME["sys.path"]
    before = probe.read()
    sys.path.append("/nbstep/last")
    sys.path.insert(1, "/nbstep/second")
    change = probe.change(before, probe.read())
    sys.path[:] = before
    probe.apply(change)
    assert sys.path == ["/nbstep/dup", "/nbstep/second", "/nbstep/a", "/nbstep/dup",
                        "/nbstep/last"]
    # A change recorded before the copy was noted (three parts) still applies.
    sys.path[:] = before
    probe.apply({"added": [tuple(a[:3]) for a in change["added"]], "removed": []})
    assert "/nbstep/last" in sys.path and "/nbstep/second" in sys.path


def test_a_generator_state_is_an_input_part_the_same_in_every_process():
    probe = globalstate.BY_NAME["numpy.random"]
    np.random.seed(3)
    first = probe.part(probe.read())
    np.random.rand()
    assert probe.part(probe.read()) != first
    np.random.seed(3)
    assert probe.part(probe.read()) == first


# -- analysis ----------------------------------------------------------------------------


def test_names_bound_on_some_paths_are_read_too():
    result = analysis("""\
        if QUICK:
            N = 1
        if flag:
            a = 1
        else:
            a = 2
        for i in items:
            last = i
        try:
            import fast as lib
        except ImportError:
            lib = None
    """)
    assert result.maybe_bound == ["N", "i", "last"]
    assert {"QUICK", "N", "flag", "items", "i", "last"} <= set(result.reads)
    assert "a" not in result.reads and "lib" not in result.reads


def test_strings_eval_globals_and_the_environment():
    result = analysis("""\
        sub = df.query("a > @LIMIT")
        total = duckdb.sql("select * from sales")
        g = globals()["X"]
        exec("y = z + 1")
        home = os.environ["HOME"]
        with open("runs.log") as log:
            pass
    """)
    assert {"LIMIT", "sales", "X", "HOME"} <= set(result.strings)
    assert "log" not in result.strings  # the cell binds it itself
    assert "z" in result.reads and "y" in result.bound
    assert result.environ and not result.dynamic
    assert analysis("v = vars()").dynamic and analysis("eval(text)").dynamic


def test_storing_an_object_is_not_using_it():
    result = analysis("""\
        def query(sql, c=conn):
            return c.execute(sql)
        pair = [big, conn]
        alias = conn
        rows = other.execute("select 1")
        n = len(gen)
    """)
    assert set(result.used) == {"other", "len", "gen"}
    assert {"conn", "big"} <= set(result.reads)


def test_import_statements_name_the_modules_a_replay_imports():
    result = analysis("import xml.dom.minidom\nfrom os import path as p\nfrom . import x")
    assert result.imports == ["xml.dom.minidom", "os", "os.path"]


def test_untracked_calls_are_found_by_the_module_they_belong_to():
    import logging
    import types

    torch = types.ModuleType("torch")
    ns = {"logging": logging, "tch": torch, "np": np}
    calls = analysis("logging.basicConfig()\ntch.manual_seed(0)\nnp.random.seed(0)\n"
                     "get_ipython().run_line_magic('matplotlib', 'inline')").calls
    assert untracked_calls(calls, ns) == ["logging.basicConfig", "tch.manual_seed",
                                          "%matplotlib"]


def test_a_project_package_with_cycles_hashes_the_same_and_sees_a_far_edit(tmp_path,
                                                                            monkeypatch):
    """Modules that import each other in a ring: each hasher gives the same part, and an
    edit in the module farthest from the one read changes it."""
    import importlib

    package = tmp_path / "ringpkg_for_nbstep"
    package.mkdir()
    count = 6
    for i in range(count):
        (package / f"m{i}.py").write_text(
            f"from . import m{(i + 1) % count}\nCACHE = {{}}\n"
            f"def f(x):\n    return m{(i + 1) % count}.f(x - 1) if x > 0 else {i}\n")
    (package / "__init__.py").write_text(
        "".join(f"from . import m{i}\n" for i in range(count)))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        ring = importlib.import_module("ringpkg_for_nbstep")
        first = PartHasher({}, {"__main__"}).part(ring.m0.f)
        assert PartHasher({}, {"__main__"}).part(ring.m0.f) == first
        far = ring.m5
        far.f = types.FunctionType(compile("def f(x):\n    return 99\n", far.__file__,
                                           "exec").co_consts[0], vars(far), "f")
        assert PartHasher({}, {"__main__"}).part(ring.m0.f) != first
    finally:
        for name in [n for n in sys.modules if n.startswith("ringpkg_for_nbstep")]:
            del sys.modules[name]
