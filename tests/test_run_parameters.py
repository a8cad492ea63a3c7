"""`nbstep run -p/-r/-f`: parameters injected as papermill injects them, through a real
kernel; what the run prints per cell and in its summary; the hint for a kernel that
never loaded nbstep.

The parameters module's parsing and placement are tested directly too (no kernel).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbstep.cli import parameters

STEPS = [
    "%load_ext nbstep",
    "N = 5\nlabel = 'default'",  # the cell tagged `parameters`
    "%%step double\nd = N * 2\nprint('double', d)",
    "%%step other\no = 7\nprint('other', o)",
    "tripled = step.run('triple', N, lambda n: n * 3)",
    "print(label, d, o, tripled)",
]


def write_notebook(path, sources, tagged=1):
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# parameters")]
    for i, source in enumerate(sources):
        cell = new_code_cell(textwrap.dedent(source))
        if i == tagged:
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return nb


def nbstep_cmd(*args, cwd, timeout=180):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSTEP_")}
    return subprocess.run([sys.executable, "-m", "nbstep", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def summary_counts(stdout):
    line = next(line for line in stdout.splitlines() if line.strip().startswith("steps "))
    return line.split(None, 1)[1]


def cell_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("  cell ")]


def stream_text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def injected(nb):
    return [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    return tmp_path


# -- through a real kernel -----------------------------------------------------------


@pytest.mark.kernel
def test_a_parameter_is_an_input_of_the_steps_that_read_it(project):
    path = project / "nb.ipynb"
    write_notebook(path, STEPS)
    out = project / "out.ipynb"

    def run(n):
        done = nbstep_cmd("run", "nb.ipynb", "-p", "N", str(n), "-r", "label", "007",
                          "--on-mismatch", "rerun", "-o", str(out), cwd=project)
        assert done.returncode == 0, done.stderr
        return done, nbformat.read(out, as_version=4)

    first, nb = run(10)
    assert summary_counts(first.stdout) == "0 replayed, 3 computed, 0 failed"
    assert "note: parameters: N = 10, label = '007'" in first.stderr
    # The written notebook keeps the injected cell, right after the `parameters` cell.
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1
    (cell,) = injected(nb)
    assert cell.source == "# Parameters\nN = 10\nlabel = '007'"  # -r: the text, unparsed
    assert stream_text(nb.cells[-1]) == "007 20 7 30\n"
    assert not injected(nbformat.read(path, as_version=4))  # the input is not modified

    # N changed: the steps that read it recompute, the one that does not replays.
    second, nb = run(20)
    assert summary_counts(second.stdout) == "1 replayed, 2 computed, 0 failed"
    lines = cell_lines(second.stderr)
    assert "1 computed" in next(line for line in lines if "%%step double" in line)
    assert "1 replayed" in next(line for line in lines if "%%step other" in line)
    assert "1 computed" in next(line for line in lines if "step.run('triple'" in line)
    assert stream_text(nb.cells[-1]) == "007 40 7 60\n"

    # Back to N = 10: `double` and `triple` replay N = 10's records, kept as earlier
    # versions of their slots in the notebook's nb:<id> (docs/cli.md, "Parameters").
    third, nb = run(10)
    assert summary_counts(third.stdout) == "3 replayed, 0 computed, 0 failed"
    assert stream_text(nb.cells[-1]) == "007 20 7 30\n"
    assert "1 replayed" in next(line for line in cell_lines(third.stderr)
                                if "%%step other" in line)


@pytest.mark.kernel
def test_an_injected_cell_is_replaced_and_a_notebook_without_a_parameters_cell_warns(project):
    path = project / "plain.ipynb"
    write_notebook(path, ["print('N is', N)"], tagged=None)
    done = nbstep_cmd("run", "plain.ipynb", "-p", "N", "1.5", "--inplace", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "note: the notebook has no cell tagged `parameters`" in done.stderr
    nb = nbformat.read(path, as_version=4)
    assert injected(nb) == [nb.cells[0]]  # first, before every other cell
    assert nb.cells[0].source == "# Parameters\nN = 1.5"
    assert stream_text(nb.cells[-1]) == "N is 1.5\n"

    # Running the written notebook again: its injected cell is replaced, in its place.
    (project / "params.json").write_text(json.dumps({"N": [1, 2], "unused": None}))
    done = nbstep_cmd("run", "plain.ipynb", "-f", "params.json", "-p", "N", "True",
                      "--inplace", cwd=project)
    assert done.returncode == 0, done.stderr
    nb = nbformat.read(path, as_version=4)
    assert injected(nb) == [nb.cells[0]]
    assert nb.cells[0].source == "# Parameters\nN = True\nunused = None"  # -p wins over -f
    assert stream_text(nb.cells[-1]) == "N is True\n"


@pytest.mark.parametrize(("args", "message"), [
    (["-p", "2x", "1"], "parameter name '2x' is not a Python variable name"),
    (["-p", "class", "1"], "parameter name 'class' is not a Python variable name"),
    (["-r", "a-b", "x"], "such as `a_b`"),
    (["-f", "list.json"], "holds a list; expected a mapping of names to values"),
    (["-f", "bad.json"], "is not valid JSON"),
])
def test_bad_parameters_are_a_usage_error_before_anything_runs(project, args, message):
    path = project / "nb.ipynb"
    write_notebook(path, ["print(1)"])
    (project / "list.json").write_text("[1, 2]")
    (project / "bad.json").write_text("{N: 1}")
    done = nbstep_cmd("run", "nb.ipynb", *args, cwd=project)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "cell 1/" not in done.stderr  # no kernel started


@pytest.mark.kernel
def test_progress_lines_and_the_summary_table(project):
    path = project / "nb.ipynb"
    write_notebook(path, STEPS)
    first = nbstep_cmd("run", "nb.ipynb", cwd=project)
    second = nbstep_cmd("run", "nb.ipynb", cwd=project)
    assert first.returncode == second.returncode == 0, second.stderr
    lines = cell_lines(second.stderr)
    assert len(lines) == 6
    # Each cell: its number, its time, what its steps did (plain: none), its first line.
    assert lines[0].startswith("  cell 1/6 ") and lines[0].endswith("plain (no steps)        "
                                                                      "%load_ext nbstep")
    assert "1 replayed" in lines[2] and lines[2].endswith("%%step double")
    assert "1 replayed" in lines[4] and lines[4].endswith("tripled = step.run('triple', N, "
                                                          "lambda n: n * 3)")
    assert all(" s  " in line or " ms  " in line or " µs  " in line for line in lines)
    assert "1 computed" in cell_lines(first.stderr)[2]
    assert "\x1b" not in second.stderr  # a log, not a terminal: no escape codes

    table = second.stdout.splitlines()
    assert table[0] == "nbstep run summary"
    assert table[1].split() == ["notebook", "status", "cells", "replayed", "computed",
                                "failed", "time", "saved"]
    row = table[2].split()
    assert row[:6] == ["nb.ipynb", "ok", "6/6", "3", "0", "0"]
    assert summary_counts(second.stdout) == "3 replayed, 0 computed, 0 failed"


@pytest.mark.kernel
def test_a_kernel_that_never_loaded_nbstep_gets_the_line_to_add(project):
    path = project / "magic.ipynb"
    write_notebook(path, ["x = 1", "%%step double\nd = x * 2"], tagged=None)
    done = nbstep_cmd("run", "magic.ipynb", "--kernel", "python3", cwd=project)
    assert done.returncode == 1
    assert "UsageError: Cell magic `%%step` not found" in done.stderr
    assert ("hint: kernel `python3` has not loaded nbstep, so `%%step` and `step` do not "
            "exist there. Add the line `%load_ext nbstep` to the notebook's first code "
            "cell, or run it with the \"Python 3 (nbstep)\" kernel: `nbstep run --kernel "
            "python3-nbstep ...`") in done.stderr

    # The fix the hint names works: nbstep's own kernel loads the extension itself.
    fixed = nbstep_cmd("run", "magic.ipynb", "--kernel", "python3-nbstep", cwd=project)
    assert fixed.returncode == 0, fixed.stderr
    assert summary_counts(fixed.stdout) == "0 replayed, 1 computed, 0 failed"
    assert "hint:" not in fixed.stderr


# -- the parameters module, directly -------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("20", 20), ("-3", -3), ("1.5", 1.5), ("1e3", 1000.0), ("True", True), ("False", False),
    ("None", None), ("x", "x"), ("true", "true"), ("", ""), ("'q'", "'q'"),
])
def test_values_are_parsed_as_papermill_parses_them(text, value):
    parsed = parameters.parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_the_injected_cell_goes_after_the_parameters_cell_and_replaces_an_old_one():
    nb = new_notebook(cells=[new_code_cell("import x"), new_code_cell("N = 1"),
                             new_code_cell("print(N)")])
    nb.cells[1].metadata["tags"] = ["parameters"]
    assert parameters.inject(nb, {"N": 2, "name": "a\"b"}) is None
    assert [c.source for c in nb.cells] == [
        "import x", "N = 1", "# Parameters\nN = 2\nname = 'a\"b'", "print(N)"]
    assert nb.cells[2].id == "injected-parameters"
    parameters.inject(nb, {"N": 3})
    assert [c.source for c in nb.cells] == ["import x", "N = 1", "# Parameters\nN = 3",
                                            "print(N)"]
    nbformat.validate(nb)


def test_a_value_that_is_no_literal_is_refused():
    import datetime

    with pytest.raises(parameters.ParameterError, match="cannot be written as a Python literal"):
        parameters.source({"day": datetime.date(2026, 12, 1)})


# -- progress on a terminal ----------------------------------------------------------


def test_on_a_terminal_the_running_line_is_replaced_by_the_cell_line():
    import io
    import time

    from nbstep.cli.outcomes import CellOutcome, Counts
    from nbstep.cli.progress import Progress

    stream = io.StringIO()
    progress = Progress(stream, color=True, live=True, width=80)
    progress.cell_started(1, 2, "# load\nrows = step.run('load', 3, load)")
    deadline = time.monotonic() + 10
    while "running ..." not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    progress.cell_finished(CellOutcome(1, 2, "", 1.25, Counts(replayed=2)))
    progress.cell_started(2, 2, "print(rows)")
    progress.cell_finished(CellOutcome(2, 2, "", 0.004, Counts()))
    shown = stream.getvalue()
    running, done = shown.split("\r\x1b[2K")[1:3]
    assert running.startswith("  cell 1/2 ") and "running ..." in running
    assert running.endswith("rows = step.run('load', 3, load)")  # no newline: replaced
    # The finished line replaces it: time, the status in green, the first line.
    assert done == ("  cell 1/2      1.2 s  \x1b[32m2 replayed\x1b[0m"
                    + " " * 14 + "rows = step.run('load', 3, load)\n")
    assert shown.endswith("  cell 2/2       4 ms  plain (no steps)        print(rows)\n")


@pytest.mark.parametrize(("error", "hinted"), [
    ("UsageError: Cell magic `%%step` not found.", True),
    ("UsageError: Line magic function `%step_config` not found.", True),
    ("UsageError: Line magic function `%steps` not found.", True),
    ("NameError: name 'step' is not defined", True),
    ("NameError: name 'steps' is not defined", False),
    ("UsageError: Cell magic `%%sql` not found.", False),
    ("ZeroDivisionError: division by zero", False),
    (None, False),
])
def test_the_hint_is_given_only_for_a_missing_extension(error, hinted):
    from nbstep.cli.progress import not_loaded_hint

    hint = not_loaded_hint(error, "python3")
    assert (hint is not None) == hinted
    if hinted:
        assert "`%load_ext nbstep`" in hint and "--kernel python3-nbstep" in hint
