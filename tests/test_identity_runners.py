"""Which notebook is this, under each runner that can run here: ``nbstep run``,
papermill, ``jupyter nbconvert --execute``, ``python script.py``, ``ipython script.py``.
Real processes and kernels; each notebook or script is its own namespace, in the
store of its own project (not the working directory's), and a second run replays.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.kernel

BIN = Path(sys.executable).parent
# Each step appends a line to this file when it computes: how a test sees what ran.
CELL = """
import os, nbstep
def compute():
    with open(os.environ["COMPUTED_LOG"], "a") as f:
        f.write({name!r} + "\\n")
    return 42
print("value", nbstep.step.run("answer", compute))
"""


def write_notebook(path: Path, name: str) -> Path:
    nb = new_notebook()
    nb.cells = [new_code_cell(CELL.format(name=name))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (tmp_path / "elsewhere").mkdir()
    return tmp_path / "proj"


def run(args: list[str], cwd: Path, log: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NBSTEP_", "JPY_"))}
    env["COMPUTED_LOG"] = str(log)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def computed(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def namespaces(project: Path) -> list[str]:
    from nbstep.storage.local import LocalStore

    store = LocalStore(project / ".nbstep")
    try:
        return [ns for ns in store.admin().namespaces() if not ns.startswith("nbstep:")]
    finally:
        store.close()


def test_papermill_two_notebooks_two_namespaces_and_a_second_run_replays(project):
    log = project.parent / "computed.txt"
    a = write_notebook(project / "nb" / "a.ipynb", "a")
    b = write_notebook(project / "nb" / "b.ipynb", "b")
    for _ in range(2):
        for path in (a, b):
            run([str(BIN / "papermill"), str(path), str(path.with_suffix(".out.ipynb")),
                 "--kernel", "python3"], project.parent / "elsewhere", log)
    assert computed(log) == ["a", "b"]  # each once: the second run replayed
    assert namespaces(project) == ["nb/a.ipynb", "nb/b.ipynb"]


def test_nbconvert_execute_two_notebooks_two_namespaces_and_a_second_run_replays(project):
    log = project.parent / "computed.txt"
    a = write_notebook(project / "a.ipynb", "a")
    b = write_notebook(project / "b.ipynb", "b")
    for _ in range(2):
        for path in (a, b):
            run([str(BIN / "jupyter-nbconvert"), "--to", "notebook", "--execute",
                 "--output", path.stem + ".out", str(path)], project.parent / "elsewhere", log)
    assert computed(log) == ["a", "b"]
    assert namespaces(project) == ["a.ipynb", "b.ipynb"]


def test_nbstep_run_gives_an_id_and_the_records_follow_a_rename(project):
    log = project.parent / "computed.txt"
    path = write_notebook(project / "Untitled.ipynb", "u")
    first = run([sys.executable, "-m", "nbstep", "run", str(path)], project.parent, log)
    assert "gave Untitled.ipynb a notebook id (metadata.nbstep.id)" in first.stdout + first.stderr
    the_id = json.loads(path.read_text())["metadata"]["nbstep"]["id"]
    renamed = project / "analysis" / "final.ipynb"
    renamed.parent.mkdir()
    os.replace(path, renamed)
    second = run([sys.executable, "-m", "nbstep", "run", str(renamed)], project.parent, log)
    assert "gave" not in second.stdout + second.stderr  # it has one: said only once
    assert computed(log) == ["u"]
    assert namespaces(project) == [f"nb:{the_id}"]


def test_nbstep_run_adopts_the_records_a_notebook_made_before_it_had_an_id(project):
    log = project.parent / "computed.txt"
    path = write_notebook(project / "old.ipynb", "o")
    # Records under the path namespace, as a kernel made them before ids existed.
    run([str(BIN / "jupyter-nbconvert"), "--to", "notebook", "--execute", "--output",
         "old.out", str(path)], project, log)
    assert namespaces(project) == ["old.ipynb"]
    run([sys.executable, "-m", "nbstep", "run", str(path)], project.parent, log)
    assert computed(log) == ["o"]  # replayed after the adoption
    the_id = json.loads(path.read_text())["metadata"]["nbstep"]["id"]
    assert namespaces(project) == [f"nb:{the_id}", "old.ipynb"]  # the old one: forgotten


SCRIPT = """
import os, nbstep
def compute():
    with open(os.environ["COMPUTED_LOG"], "a") as f:
        f.write("script\\n")
    return 1
print(nbstep.step.run("k", compute))
"""


@pytest.mark.parametrize("interpreter", ["python", "ipython"])
def test_a_script_uses_its_projects_store_not_the_working_directorys(project, interpreter):
    log = project.parent / "computed.txt"
    script = project / "scripts" / "job.py"
    script.parent.mkdir()
    script.write_text(textwrap.dedent(SCRIPT))
    cwd = project.parent / "elsewhere"
    command = [sys.executable] if interpreter == "python" else [str(BIN / "ipython")]
    for _ in range(2):
        run([*command, str(script)], cwd, log)
    assert computed(log) == ["script"]
    assert namespaces(project) == ["scripts/job.py"]
    assert not (cwd / ".nbstep").exists()


def test_a_runner_that_names_no_notebook_never_shares_records(project):
    """papermill's Python API from a script: the kernel's parent is `python -c`, so the
    kernel cannot tell which notebook it runs; each gets a namespace of its own and
    says so in its output."""
    log = project.parent / "computed.txt"
    a = write_notebook(project / "a.ipynb", "a")
    b = write_notebook(project / "b.ipynb", "b")
    code = ("import papermill as pm, sys\n"
            "for path in sys.argv[1:]:\n"
            "    pm.execute_notebook(path, path.replace('.ipynb', '.out.ipynb'), "
            "kernel_name='python3', progress_bar=False)\n")
    run([sys.executable, "-c", code, str(a), str(b)], project, log)
    assert computed(log) == ["a", "b"]  # b did not replay a's record
    found = namespaces(project)
    assert len(found) == 2 and all(ns.startswith("kernel:") for ns in found)
    out = nbformat.read(project / "a.out.ipynb", as_version=4)
    stderr = "".join(o.get("text", "") for o in out.cells[0].outputs if o.get("name") == "stderr")
    assert "cannot tell which notebook it runs" in stderr and "nbstep run" in stderr
