"""Which notebook is this: the notebook id, its namespace, adoption, copies, and where
the store is found (docs/design.md, "Which notebook is this"). In-process: the engine
is told the notebook's path the way a kernel is (``__session__``, ``__vsc_ipynb_file__``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from nbstep import step
from nbstep.core import location, notebook_id
from nbstep.engine import notebooks
from nbstep.engine.runtime import Runtime


def write_nb(path: Path, nb_id: str | None = None) -> Path:
    content = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    if nb_id is not None:
        content["metadata"]["nbstep"] = {"id": nb_id}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1, sort_keys=True))
    return path


def in_notebook(path: Path, key: str = "__session__") -> Runtime:
    """A fresh runtime as a kernel of the notebook at ``path`` has it."""
    Runtime.clear_instance()
    runtime = Runtime.instance()
    runtime.user_ns = {key: str(path)}
    return runtime


def computes(calls: list[int], value: int = 1):
    def handler():
        calls.append(value)
        return value
    return handler


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the kernel's cwd is not where the store is found from
    return tmp_path


def test_a_notebook_with_an_id_records_under_nb_id_and_the_store_is_its_projects(project):
    nb = write_nb(project / "notebooks" / "Untitled.ipynb", "a" * 32)
    runtime = in_notebook(nb)
    calls: list[int] = []
    assert step.run("k", computes(calls)) == 1
    assert runtime.default_namespace() == "nb:" + "a" * 32
    assert runtime.store().location == str(project / ".nbstep")
    assert notebooks.paths(runtime.store()) == {"nb:" + "a" * 32: "notebooks/Untitled.ipynb"}


def test_rename_and_move_keep_the_records_and_a_new_untitled_never_replays_them(project):
    first = write_nb(project / "Untitled.ipynb", "a" * 32)
    calls: list[int] = []
    in_notebook(first)
    step.run("k", computes(calls, 1))
    renamed = project / "sub" / "analysis.ipynb"
    renamed.parent.mkdir()
    os.replace(first, renamed)
    in_notebook(renamed)  # a kernel started after the rename
    assert step.run("k", computes(calls, 2)) == 1 and calls == [1]  # replayed
    # A new notebook takes the old name: another id, its own records.
    write_nb(project / "Untitled.ipynb", "b" * 32)
    runtime = in_notebook(project / "Untitled.ipynb")
    assert step.run("k", computes(calls, 3)) == 3 and calls == [1, 3]
    assert notebooks.paths(runtime.store()) == {"nb:" + "a" * 32: "sub/analysis.ipynb",
                                                "nb:" + "b" * 32: "Untitled.ipynb"}


def test_a_running_kernel_keeps_its_id_when_its_file_is_renamed_and_replaced(project):
    path = write_nb(project / "Untitled.ipynb", "a" * 32)
    runtime = in_notebook(path)
    assert runtime.default_namespace() == "nb:" + "a" * 32
    os.replace(path, project / "analysis.ipynb")
    runtime.reset()  # the next cell: jupyter_server never tells the kernel the new name
    assert runtime.default_namespace() == "nb:" + "a" * 32
    write_nb(project / "Untitled.ipynb", "b" * 32)  # a new notebook takes the old name
    runtime.reset()
    assert runtime.default_namespace() == "nb:" + "a" * 32


def test_records_made_before_the_notebook_had_an_id_are_adopted_once(project, capfd):
    path = write_nb(project / "analysis.ipynb")
    calls: list[int] = []
    runtime = in_notebook(path)
    step.run("k", computes(calls, 1))
    assert runtime.default_namespace() == "analysis.ipynb"
    time.sleep(0.01)
    write_nb(path, "c" * 32)  # saved through Jupyter: the pre-save hook gave it an id
    runtime = in_notebook(path)
    assert step.run("k", computes(calls, 2)) == 1 and calls == [1]  # nothing recomputes
    assert runtime.store().current("analysis.ipynb") == []
    assert len(runtime.store().current("nb:" + "c" * 32)) == 1
    assert "1 records of `analysis.ipynb` now belong to this notebook's id" in capfd.readouterr().err


def test_an_adopted_notebook_still_goes_back_to_a_kept_version(project):
    """Adoption moves the kept earlier versions too: N=10, N=20 before the id, then
    N=10 after it replays N=10's record instead of recomputing."""
    path = write_nb(project / "sweep.ipynb")
    calls: list[int] = []

    def times_ten(n):
        calls.append(n)
        return n * 10

    runtime = in_notebook(path)
    for n in (10, 20):  # one cell run twice: occurrence 1 of `k` each time
        runtime.reset()
        assert step.run("k", n, times_ten, on_mismatch="rerun") == n * 10
    assert calls == [10, 20]
    time.sleep(0.01)
    write_nb(path, "9" * 32)  # saved through Jupyter: the pre-save hook gave it an id
    runtime = in_notebook(path)
    assert step.run("k", 10, times_ten, on_mismatch="rerun") == 100
    assert calls == [10, 20]  # replayed the kept N=10 version, in nb:<id>
    assert runtime.default_namespace() == "nb:" + "9" * 32


def test_a_copy_with_its_originals_id_does_not_share_its_records(project, capfd):
    original = write_nb(project / "analysis.ipynb", "d" * 32)
    calls: list[int] = []
    in_notebook(original)
    step.run("k", computes(calls, 1))
    copy = write_nb(project / "analysis-Copy1.ipynb", "d" * 32)  # copied outside Jupyter
    runtime = in_notebook(copy)
    assert step.run("k", computes(calls, 2)) == 2 and calls == [1, 2]
    assert runtime.default_namespace() == "analysis-Copy1.ipynb"
    runtime.reset()  # the next cell: still the copy's own namespace
    assert runtime.default_namespace() == "analysis-Copy1.ipynb"
    assert "carries the notebook id of analysis.ipynb (a copy)" in capfd.readouterr().err
    in_notebook(original)
    assert step.run("k", computes(calls, 3)) == 1  # the original still replays its own


def test_vs_code_names_the_notebook_in_its_own_variable(project):
    nb = write_nb(project / "vs.ipynb", "e" * 32)
    runtime = in_notebook(nb, key="__vsc_ipynb_file__")
    assert runtime.default_namespace() == "nb:" + "e" * 32
    assert runtime.store().location == str(project / ".nbstep")


def test_a_notebook_without_id_keeps_the_path_namespace(project):
    runtime = in_notebook(write_nb(project / "plain.ipynb"))
    assert runtime.default_namespace() == "plain.ipynb"


def test_the_store_setting_still_wins_over_discovery(project, monkeypatch, tmp_path_factory):
    chosen = tmp_path_factory.mktemp("chosen") / "store"
    monkeypatch.setenv("NBSTEP_STORE", str(chosen))
    runtime = in_notebook(write_nb(project / "x.ipynb", "f" * 32))
    assert runtime.store().location == str(chosen)


def test_read_id_is_cached_per_version_and_survives_the_file_going(tmp_path):
    path = write_nb(tmp_path / "n.ipynb", "1" * 32)
    assert notebook_id.read_id(path) == "1" * 32
    os.remove(path)
    assert notebook_id.read_id(path) == "1" * 32
    assert notebook_id.read_id(tmp_path / "never.ipynb") is None
    (tmp_path / "bad.ipynb").write_text('{"metadata": {"nbstep": {"id": "nope"}}}')
    assert notebook_id.read_id(tmp_path / "bad.ipynb") is None
    (tmp_path / "broken.ipynb").write_text('{"nbstep": ')
    assert notebook_id.read_id(tmp_path / "broken.ipynb") is None


@pytest.mark.parametrize(("argv", "expected"), [
    (["/v/bin/python", "/v/bin/papermill", "in.ipynb", "out.ipynb", "-p", "a", "1"], "in.ipynb"),
    (["/v/bin/python", "-m", "papermill", "sub/in.ipynb", "out.ipynb"], "sub/in.ipynb"),
    (["/v/bin/python", "/v/bin/jupyter-nbconvert", "--to", "notebook", "--execute", "a.ipynb"],
     "a.ipynb"),
    (["/v/bin/python", "/v/bin/jupyter", "nbconvert", "--execute", "a.ipynb"], "a.ipynb"),
    (["/v/bin/python", "/v/bin/jupyter-nbconvert", "--execute", "a.ipynb", "b.ipynb"], None),
    (["/v/bin/python", "script.py", "a.ipynb"], None),
    (["/v/bin/python", "/v/bin/jupyter-nbconvert", "--execute", "missing.ipynb"], None),
])
def test_the_runner_names_the_notebook_on_its_command_line(tmp_path, argv, expected):
    for name in ("in.ipynb", "sub/in.ipynb", "a.ipynb", "b.ipynb"):
        write_nb(tmp_path / name)
    found = location.notebook_in_command(argv, str(tmp_path))
    assert found == (None if expected is None else str(tmp_path / expected))


@pytest.mark.kernel
def test_in_a_notebook_the_adoption_line_is_an_nbstep_notice(tmp_path):
    """The engine's lines about a notebook's identity are nbstep notices (display
    outputs apart from the cell's own), like every other nbstep line, not stderr."""
    from kernels import Kernel

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    path = write_nb(tmp_path / "analysis.ipynb")
    with Kernel(path) as kernel:
        assert kernel.run("%load_ext nbstep").ok
        assert kernel.run("step.run('k', lambda: 1)").ok
        time.sleep(0.01)
        write_nb(path, "8" * 32)  # saved through Jupyter: the pre-save hook gave it an id
        cell = kernel.run("step.run('k', lambda: 2)")
    assert cell.ok and cell.rich("execute_result") == [{"text/plain": "1"}]
    assert any("1 records of `analysis.ipynb` now belong to this notebook's id" in line
               for line in cell.notices())
    assert "now belong" not in cell.stream("stderr")
