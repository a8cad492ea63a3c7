"""``nbstep ls`` shows each notebook's file and marks the orphans; ``nbstep mv`` moves
records; ``nbstep gc --orphans`` removes the records of notebooks that are gone."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from test_identity import write_nb

from nbstep import step
from nbstep.cli.main import cli
from nbstep.engine.runtime import Runtime

A, B, C = "a" * 32, "b" * 32, "c" * 32


def record(path, key="k", value=1):
    Runtime.clear_instance()
    Runtime.instance().user_ns = {"__session__": str(path)}
    step.run(key, lambda: value)
    Runtime.clear_instance()


def invoke(project, *args, code=0, input=None):
    result = CliRunner().invoke(cli, ["--store", str(project / ".nbstep"), *args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    monkeypatch.chdir(tmp_path)
    record(write_nb(tmp_path / "kept.ipynb", A))          # nb:A, its file in place
    record(write_nb(tmp_path / "deleted.ipynb", B))       # nb:B, file deleted below
    record(write_nb(tmp_path / "before.ipynb", C))        # nb:C, renamed in the shell
    record(write_nb(tmp_path / "plain.ipynb"))            # a path namespace, file present
    record(write_nb(tmp_path / "gone.ipynb"))             # a path namespace, file deleted
    os.remove(tmp_path / "deleted.ipynb")
    os.remove(tmp_path / "gone.ipynb")
    (tmp_path / "sub").mkdir()
    os.replace(tmp_path / "before.ipynb", tmp_path / "sub" / "after.ipynb")
    return tmp_path


def test_ls_shows_files_and_marks_the_orphans(project):
    rows = {r["notebook"]: r for r in json.loads(invoke(project, "ls", "--format", "json"))}
    assert set(rows) == {f"nb:{A}", f"nb:{B}", f"nb:{C}", "plain.ipynb", "gone.ipynb"}
    assert (rows[f"nb:{A}"]["path"], rows[f"nb:{A}"]["orphaned"]) == ("kept.ipynb", False)
    assert rows[f"nb:{B}"]["orphaned"] is True
    # Renamed outside Jupyter: found by its id under the store's root.
    assert (rows[f"nb:{C}"]["path"], rows[f"nb:{C}"]["orphaned"]) == ("sub/after.ipynb", False)
    assert rows["plain.ipynb"]["orphaned"] is False and rows["gone.ipynb"]["orphaned"] is True
    table = invoke(project, "ls")
    line = next(line for line in table.splitlines() if line.startswith(f"nb:{B}"))
    assert line.rstrip().endswith("deleted.ipynb ORPHANED")
    assert "nbstep gc --orphans" in table and "nbstep:notebooks" not in table


def test_mv_moves_records_and_refuses_a_target_with_its_own(project):
    assert invoke(project, "mv", "gone.ipynb", "new.ipynb") == \
        "moved 1 record of `gone.ipynb` to `new.ipynb`\n"
    rows = {r["notebook"]: r for r in json.loads(invoke(project, "ls", "--format", "json"))}
    assert rows["new.ipynb"]["steps"] == 1
    # What is left of the old one: no steps, no orphan (plain `nbstep gc` drops it).
    assert (rows["gone.ipynb"]["steps"], rows["gone.ipynb"]["orphaned"]) == (0, False)
    out = invoke(project, "mv", "new.ipynb", "plain.ipynb", code=1)
    assert "`plain.ipynb` already has 1 records of its own" in out
    # A notebook with an id renamed in the shell: OLD names its recorded path, NEW the
    # file; the records stay in nb:<id> and its new path is recorded.
    out = invoke(project, "mv", "before.ipynb", "sub/after.ipynb")
    assert out == f"moved 0 records of `nb:{C}` to `nb:{C}` (sub/after.ipynb)\n"
    # Into a namespace of one's choosing, and from a notebook file that has an id.
    assert invoke(project, "mv", "kept.ipynb", "experiment-1") == \
        f"moved 1 record of `nb:{A}` to `experiment-1`\n"
    out = invoke(project, "mv", "nothing.ipynb", "x.ipynb", code=2)
    assert "no notebook `nothing.ipynb`" in out


def test_gc_orphans_lists_asks_and_removes(project):
    out = invoke(project, "gc", "--orphans", "--dry-run")
    assert f"nb:{B}" in out and "gone.ipynb" in out and f"nb:{A}" not in out
    assert "would remove 2 orphaned notebooks" in out
    out = invoke(project, "gc", "--orphans", code=1)  # no terminal to answer: nothing done
    assert "Pass --yes" in out
    assert "removed 2 records of 2 orphaned notebooks" in invoke(project, "gc", "--orphans",
                                                                  "--yes")
    rows = {r["notebook"] for r in json.loads(invoke(project, "ls", "--format", "json"))}
    assert rows == {f"nb:{A}", f"nb:{C}", "plain.ipynb"}
    assert "no orphaned notebooks" in invoke(project, "gc", "--orphans")


def test_nbstep_run_gives_a_copy_made_in_the_shell_an_id_of_its_own(project):
    """The kernel's notice for a copy says `nbstep run` gives it an id of its own:
    it does (before running it), and leaves the original's id alone."""
    from nbstep.cli.identity import ensure_id

    store = project / ".nbstep"
    copy = write_nb(project / "kept-copy.ipynb", A)  # `cp kept.ipynb kept-copy.ipynb`
    nb = json.loads(copy.read_text())
    notes = ensure_id(copy, nb, store)
    assert len(notes) == 1 and "gave kept-copy.ipynb a notebook id of its own" in notes[0]
    new = json.loads(copy.read_text())["metadata"]["nbstep"]["id"]
    assert new != A and nb["metadata"]["nbstep"]["id"] == new
    original = project / "kept.ipynb"
    assert ensure_id(original, json.loads(original.read_text()), store) == []
    assert json.loads(original.read_text())["metadata"]["nbstep"]["id"] == A
    # A notebook moved in the shell (its recorded path gone) is no copy: it keeps its id.
    moved = project / "sub" / "after.ipynb"
    assert ensure_id(moved, json.loads(moved.read_text()), store) == []
    assert json.loads(moved.read_text())["metadata"]["nbstep"]["id"] == C


def test_a_copy_named_by_its_path_is_its_own_namespace_not_its_originals(project):
    """`nbstep ls/inspect/forget copy.ipynb` (and `%steps copy.ipynb`) mean the
    namespace the copy's steps go to (its path), never the original's nb:<id>."""
    copy = write_nb(project / "kept-copy.ipynb", A)  # `cp kept.ipynb kept-copy.ipynb`
    record(copy, key="c", value=2)  # its kernel records in its path namespace
    steps = json.loads(invoke(project, "ls", "kept-copy.ipynb", "--format", "json"))
    assert [s["key"] for s in steps] == ["c"]
    assert "forgot 1 record of `kept-copy.ipynb`" in invoke(project, "forget",
                                                           "kept-copy.ipynb", "--yes")
    original = json.loads(invoke(project, "ls", "kept.ipynb", "--format", "json"))
    assert [s["key"] for s in original] == ["k"]  # the original's record is untouched


def test_nbstep_run_runs_a_notebook_it_cannot_write_an_id_into(project, monkeypatch):
    """A notebook whose file or folder is read-only runs in its path namespace, with a
    note, instead of failing with advice to pass a --namespace that `nbstep run` does
    not have. Test double: `replacing` refusing with EACCES stands for the read-only
    file (the tests may run as root, whom file permissions do not stop)."""
    from nbstep.cli import identity

    def refused(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(identity, "replacing", refused)
    path = write_nb(project / "readonly.ipynb")
    nb = json.loads(path.read_text())
    (note,) = identity.ensure_id(path, nb, project / ".nbstep")
    assert note.startswith(f"cannot write a notebook id into {path} (Permission denied): "
                           "it runs in its path namespace")
    assert "nbstep" not in nb["metadata"] and "nbstep" not in json.loads(path.read_text())[
        "metadata"]
    copy = write_nb(project / "kept-copy.ipynb", A)  # a copy that cannot get its own id
    (note,) = identity.ensure_id(copy, json.loads(copy.read_text()), project / ".nbstep")
    assert "it runs in its path namespace" in note
