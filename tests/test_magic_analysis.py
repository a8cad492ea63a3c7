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
        ("df['col'] = 1", ["df"]),
        ("cfg.lr = 0.1", ["cfg"]),
        ("cfg.a.b[0] = 0.1", ["cfg"]),
        ("lst[0] += 1", ["lst"]),
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


def test_names_not_defined_and_hidden_names_are_not_inputs():
    ns = {"get_ipython": object(), "x": 1}
    result = analysis("y = len(x) + get_ipython()")
    got, _ = cellinputs.input_parts(result.canonical, result.reads, ns,
                                    {"get_ipython": ns["get_ipython"]})
    assert set(got) == {"code", "var:x"}


def test_a_user_function_counts_by_source_and_what_it_uses():
    ns: dict = {"__name__": "__main__"}
    exec(compile("def helper(v):\n    return v * scale\n", "<nb-1>", "exec"), ns)
    ns["scale"] = 2
    # Functions defined by exec have no retrievable source: their bytecode counts.
    first = code_hashing.value_part(ns["helper"], ns)
    ns["scale"] = 3
    assert code_hashing.value_part(ns["helper"], ns) != first


def test_a_project_function_counts_by_source_not_comments(tmp_path, monkeypatch):
    module_path = tmp_path / "helpers_for_nbstep_test.py"
    module_path.write_text("def clean(v):\n    return v.strip()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("helpers_for_nbstep_test")
    try:
        before = code_hashing.value_part(module.clean, {})
        module_part = module_hashing.module_part(module)
        module_path.write_text("def clean(v):\n    # strip blanks\n    return v.strip()\n")
        module = importlib.reload(module)
        assert code_hashing.value_part(module.clean, {}) == before  # a comment: no change
        module_path.write_text("def clean(v):\n    return v.strip().lower()\n")
        module = importlib.reload(module)
        assert code_hashing.value_part(module.clean, {}) != before
        # The module itself counts by its file's bytes.
        assert module_hashing.module_part(module) != module_part
    finally:
        sys.modules.pop("helpers_for_nbstep_test", None)


def test_an_installed_module_counts_by_name_and_version():
    import json

    part = module_hashing.module_part(json)
    assert part == module_hashing.module_part(json)
    assert part != module_hashing.module_part(types)


def test_an_unhashable_value_counts_by_type_and_is_reported():
    class Opaque:
        pass

    result = analysis("y = model")
    got, unhashable = cellinputs.input_parts(result.canonical, result.reads,
                                             {"model": Opaque()}, {})
    assert unhashable == ["model"]
    assert got["var:model"].startswith(code_hashing.UNHASHABLE_PREFIX)
    # Another instance of the same type is "the same input": changes go unnoticed.
    again, _ = cellinputs.input_parts(result.canonical, result.reads, {"model": Opaque()}, {})
    assert again == got


def test_describe_changes_names_what_changed():
    old = {"code": "a", "var:threshold": "1", "var:gone": "2", "var:same": "3"}
    new = {"code": "b", "var:threshold": "9", "var:same": "3", "var:fresh": "4"}
    text = cellinputs.describe_changes(old, new)
    assert text == ("the code, variable `fresh` (new input), variable `gone` (no longer "
                    "defined) and variable `threshold`")
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
