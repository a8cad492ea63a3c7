"""What a %%step cell binds and reads, and how its input is hashed (no shell needed)."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

from nbstep.hashing import code as code_hashing
from nbstep.hashing import modules as module_hashing
from nbstep.hashing.code import canonical
from nbstep.notebook import analysis as cellanalysis
from nbstep.notebook import inputs as cellinputs
from nbstep.notebook.analysis import analyze, ends_with_semicolon, parse


def analysis(source: str) -> cellanalysis.CellAnalysis:
    return analyze(parse(textwrap.dedent(source)))


# -- bindings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "bound"),
    [
        ("x = 1", ["x"]),
        ("a = b = 1", ["a", "b"]),
        ("a, (b, *c) = t", ["a", "b", "c"]),
        ("[p, q] = t", ["p", "q"]),
        ("x: int = 1", ["x"]),
        ("total += 1", ["total"]),
        ("import numpy as np, os.path", ["np", "os"]),
        ("from math import sqrt as root, pi", ["root", "pi"]),
        ("def f(): pass", ["f"]),
        ("async def g(): pass", ["g"]),
        ("class C: pass", ["C"]),
        ("for i, (j, k) in pairs: pass", ["i", "j", "k"]),
        ("async def h():\n    pass\nwith ctx() as (u, v): pass", ["h", "u", "v"]),
        ("if (m := compute()): pass", ["m"]),
        ("squares = [y := n * n for n in ns]", ["y", "squares"]),
        ("match cmd:\n    case [op, *rest]: pass\n    case {'k': val, **more}: pass",
         ["op", "rest", "val", "more"]),
        ("try:\n    w = 1\nexcept E as err:\n    pass", ["w"]),
    ],
)
def test_every_binding_form_binds_its_names(source, bound):
    assert set(analysis(source).bound) == set(bound)


@pytest.mark.parametrize("source", ["df['col'] = 1", "cfg.lr = 0.1", "cfg.a.b[0] = 0.1",
                                    "lst[0] += 1", "del d['k']"])
def test_assigning_into_an_object_reads_it_and_binds_nothing(source):
    """The object changes in place: the tracker records its new state, not the name."""
    result = analysis(source)
    root = source.split("[")[0].split(".")[0].replace("del ", "")
    assert result.bound == []
    assert root in result.reads and root in result.touched


def test_annotation_without_value_and_except_name_bind_nothing():
    result = analysis("""\
        x: int
        try:
            pass
        except ValueError as err:
            pass
        """)
    assert result.bound == []


def test_del_records_a_deletion_not_a_read():
    result = analysis("x = 1\ndel x, old")
    assert result.deleted == ["x", "old"]
    assert "x" not in result.bound
    assert "old" not in result.reads


def test_with_targets_alone_are_soft_but_another_binding_makes_them_hard():
    assert analysis("with open(p) as fh: data = fh.read()").soft == ["fh"]
    assert analysis("fh = 1\nwith open(p) as fh: pass").soft == []


# -- reads ----------------------------------------------------------------------------


def test_reads_are_names_used_before_the_cell_binds_them_in_order():
    result = analysis("""\
        y = x + 1
        x = 2
        z = x + w
        """)
    assert result.reads == ["x", "w"]


def test_augmented_assignment_reads_the_old_value():
    assert analysis("total += step_size").reads == ["total", "step_size"]


def test_comprehension_targets_are_not_reads_but_free_names_are():
    result = analysis("out = [v * k for v in values if v > limit]")
    assert result.reads == ["values", "limit", "k"]


def test_function_bodies_read_later_unless_the_cell_binds_the_name():
    result = analysis("""\
        def f(a, b=default):
            return helper(a) + scale + b
        def helper(v):
            return v
        """)
    # `helper` is bound by the cell; `scale` is read when f is called.
    assert result.reads == ["default", "scale"]


def test_class_body_reads_now_and_methods_read_later():
    result = analysis("""\
        class Model(Base):
            size = default_size
            def fit(self):
                return later + Model.size
        later = 1
        """)
    assert result.reads == ["Base", "default_size"]


def test_nested_function_locals_and_closures_are_not_reads():
    result = analysis("""\
        def outer(a):
            inner_value = a
            def inner():
                return inner_value + outside
            return inner
        """)
    assert result.reads == ["outside"]


def test_method_calls_mark_their_receiver_as_touched():
    result = analysis("model.fit(X)\nrng.normal().sum()\nnp.mean(y)")
    assert result.touched == ["model", "rng", "np"]


def test_names_expanded_by_shell_commands_and_magics_are_reads():
    result = analysis("""\
        get_ipython().system('ls {folder}/$pattern')
        get_ipython().run_line_magic('time', 'fit(data)')
        """)
    assert {"folder", "pattern", "fit", "data"} <= set(result.reads)
    assert "time" not in result.reads  # the magic's own name


# -- canonical code -------------------------------------------------------------------


def test_canonical_code_ignores_comments_and_whitespace():
    a = canonical(parse("x = f(1, 2)  # set x\n\n\ny=x"))
    b = canonical(parse("# a comment\nx   =   f( 1,2 )\ny = x\n"))
    assert a == b


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("x = 1", "x = 1.0"),
        ("x = 1", "x = 2"),
        ("print('a')", "print('b')"),
        ("def f():\n    '''doc'''\n", "def f():\n    '''other doc'''\n"),
        ("x = a + b", "x = b + a"),
    ],
)
def test_canonical_code_changes_with_any_real_edit(one, other):
    assert canonical(parse(one)) != canonical(parse(other))


def test_semicolon_at_the_end_hides_the_result():
    assert ends_with_semicolon("x = 1\nx;")
    assert ends_with_semicolon("x;  # quiet\n\n")
    assert not ends_with_semicolon("x")
    assert not ends_with_semicolon("x  # no; not quiet")
    assert not ends_with_semicolon("s = 'a;'")


# -- input parts ------------------------------------------------------------------------


def parts(source: str, ns: dict) -> dict[str, str]:
    result = analysis(source)
    return cellinputs.input_parts(result.canonical, result.reads, ns, {})[0]


def test_parts_are_the_code_and_each_variable_read():
    ns = {"threshold": 3, "values": [1, 2]}
    got = parts("large = [v for v in values if v > threshold]", ns)
    assert set(got) == {"code", "var:values", "var:threshold"}
    ns["threshold"] = 4
    changed = parts("large = [v for v in values if v > threshold]", ns)
    assert changed["var:threshold"] != got["var:threshold"]
    assert changed["var:values"] == got["var:values"]
    assert changed["code"] == got["code"]


def test_hidden_names_are_not_inputs_and_undefined_ones_are_absent():
    ns = {"get_ipython": object(), "x": 1}
    result = analysis("y = len(x) + get_ipython() + LIMIT")
    got, _ = cellinputs.input_parts(result.canonical, result.reads, ns,
                                    {"get_ipython": ns["get_ipython"]})
    assert set(got) == {"code", "var:x", "var:len", "var:LIMIT"}
    # Defining either later is a changed input (`try: u = LIMIT` / `except NameError`).
    assert got["var:len"] == cellinputs.BUILTIN and got["var:LIMIT"] == cellinputs.ABSENT


def test_a_user_function_counts_by_source_and_what_it_uses():
    ns: dict = {"__name__": "__main__"}
    exec(compile("def helper(v):\n    return v * scale\n", "<nb-1>", "exec"), ns)
    ns["scale"] = 2
    # Functions defined by exec have no retrievable source: their bytecode counts.
    first = code_hashing.value_part(ns["helper"], ns)
    ns["scale"] = 3
    assert code_hashing.value_part(ns["helper"], ns) != first


def test_a_project_module_counts_by_the_code_the_kernel_runs(tmp_path, monkeypatch):
    """Comments and docstrings do not count; an edit not yet reloaded does not either
    (the kernel still runs the old code); a reloaded edit does."""
    module_path = tmp_path / "helpers_for_nbstep_test.py"
    module_path.write_text("SCALE = 2\ndef clean(v):\n    return v.strip() * SCALE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("helpers_for_nbstep_test")
    try:
        function, whole = (code_hashing.value_part(module.clean, {}),
                           code_hashing.value_part(module, {}))
        module_path.write_text('"""Helpers."""\n# scale\nSCALE = 2\ndef clean(v):\n'
                               '    """Strip, then scale."""\n    # blanks\n'
                               '    return v.strip() * SCALE\n')
        module = importlib.reload(module)
        assert code_hashing.value_part(module.clean, {}) == function
        assert code_hashing.value_part(module, {}) == whole
        module_path.write_text("SCALE = 2\ndef clean(v):\n    return v.strip().lower() * SCALE\n")
        assert code_hashing.value_part(module, {}) == whole  # edited, not reloaded
        module = importlib.reload(module)
        assert code_hashing.value_part(module.clean, {}) != function
        assert code_hashing.value_part(module, {}) != whole
        module.SCALE = 3  # what the module holds counts too
        changed = code_hashing.value_part(module, {})
        module.SCALE = 2
        assert changed != code_hashing.value_part(module, {})
    finally:
        sys.modules.pop("helpers_for_nbstep_test", None)


def test_an_installed_module_counts_by_name_and_version():
    import json

    part = module_hashing.module_part(json)
    assert part == module_hashing.module_part(json)
    assert part != module_hashing.module_part(types)


def test_a_value_pickle_cannot_write_counts_by_type_and_is_reported():
    import threading

    result = analysis("y = lock")
    got, unhashable = cellinputs.input_parts(result.canonical, result.reads,
                                             {"lock": threading.Lock()}, {})
    assert unhashable == ["lock"]
    assert got["var:lock"].startswith(code_hashing.UNHASHABLE_PREFIX)
    # Another lock is "the same input": changes go unnoticed (the cell is announced).
    again, _ = cellinputs.input_parts(result.canonical, result.reads,
                                      {"lock": threading.Lock()}, {})
    assert again == got


def test_an_object_without_a_structural_key_counts_by_its_pickled_state():
    class Model:
        def __init__(self, w):
            self.w = w

    result = analysis("y = model.predict()")
    one, unhashable = cellinputs.input_parts(result.canonical, result.reads,
                                             {"model": Model([1.0, 2.0])}, {})
    same, _ = cellinputs.input_parts(result.canonical, result.reads,
                                     {"model": Model([1.0, 2.0])}, {})
    other, _ = cellinputs.input_parts(result.canonical, result.reads,
                                      {"model": Model([1.0, 3.0])}, {})
    assert unhashable == [] and one["var:model"].startswith("state:")
    assert one == same and one != other


def test_describe_changes_names_what_changed():
    old = {"code": "a", "var:threshold": "1", "var:gone": "2", "var:same": "3"}
    new = {"code": "b", "var:threshold": "9", "var:same": "3", "var:fresh": "4"}
    text = cellinputs.describe_changes(old, new)
    assert text == ("the code, variable `fresh` (new input), variable `gone` (no longer "
                    "defined) and variable `threshold`")
    absent = {"var:LIMIT": cellinputs.ABSENT, "env:HOME": cellinputs.ABSENT}
    assert cellinputs.describe_changes(absent, {"var:LIMIT": "5", "env:HOME": "x"}) == (
        "environment variable `HOME` (now defined) and variable `LIMIT` (now defined)")
    assert cellinputs.describe_changes(old, dict(old)) is None
    assert cellinputs.describe_changes({"code": "a"}, {"code": "b"}) == "the code"


def test_a_library_wrapper_of_a_notebook_function_hashes_what_it_wraps():
    """A wrapper whose globals are a library's is hashed by its code content, and the
    function it wraps (functools.wraps) still counts."""
    import functools

    def wrapper_of(body):
        ns = {"__name__": "__main__"}
        exec(f"def g(x):\n    return {body}", ns)
        wrapper = types.FunctionType((lambda *a: None).__code__, vars(functools), "g")
        wrapper.__module__, wrapper.__wrapped__ = "__main__", ns["g"]
        return wrapper, ns

    one, ns = wrapper_of("x + 1")
    two, _ = wrapper_of("x + 2")
    same, _ = wrapper_of("x + 1")
    assert code_hashing.value_part(one, ns) != code_hashing.value_part(two, ns)
    assert code_hashing.value_part(one, ns) == code_hashing.value_part(same, ns)
