"""`nbstep run`: real notebooks, executed by a real kernel through nbclient, twice.

The notebooks are written here with `step.run` (the `%%step` magic is tested with the
magic). Most runs are real subprocesses (`python -m nbstep run ...`), as CI would call
them; one goes through click's runner in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import nbformat
import pytest
from click.testing import CliRunner
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbstep.cli import cli
from nbstep.storage.local import LocalStore

pytestmark = pytest.mark.kernel

SETUP = textwrap.dedent("""\
    import json, os, time
    from IPython import get_ipython
    from nbstep import step
    seen_ids = []
    get_ipython().events.register("pre_run_cell", lambda info: seen_ids.append(info.cell_id))
""")


def write_notebook(path, *sources, markdown=True):
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# a test notebook")] if markdown else []
    nb.cells += [new_code_cell(textwrap.dedent(s)) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return nb


def nbstep_cmd(*args, cwd, store=None, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSTEP_")}
    env.update(env_extra or {})
    prefix = ["--store", str(store)] if store is not None else []
    return subprocess.run(
        [sys.executable, "-m", "nbstep", *prefix, *args], capture_output=True, text=True,
        cwd=cwd, env=env, timeout=timeout,
    )


def summary_counts(stdout):
    line = next(line for line in stdout.splitlines() if line.strip().startswith("steps "))
    return line.split(None, 1)[1]


def stream_text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    return tmp_path


def test_first_run_computes_second_replays(project):
    path = project / "notebooks" / "analysis.ipynb"
    nb = write_notebook(
        path,
        SETUP,
        "rows = step.run('load', 3, lambda n: (time.sleep(0.3), list(range(n)))[1])",
        """\
        total = step.run('sum', rows, sum)
        scaled = step.run('scale', {'k': 2}, lambda p: [r * p['k'] for r in rows])
        """,
        "print(json.dumps([os.environ['JPY_SESSION_NAME'], os.getcwd(), seen_ids]))",
    )
    out = project / "executed.ipynb"
    first = nbstep_cmd("run", "notebooks/analysis.ipynb", "-o", str(out),
                       "--summary-json", str(project / "s1.json"), cwd=project)
    assert first.returncode == 0, first.stderr
    assert summary_counts(first.stdout) == "0 replayed, 3 computed, 0 failed"
    assert "cell 2/4" in first.stderr and "1 computed" in first.stderr
    assert "\x1b" not in first.stdout + first.stderr  # not a terminal: no colour codes

    # The kernel ran where Jupyter would run it, and saw what JupyterLab sends.
    executed = nbformat.read(out, as_version=4)
    session, cwd, ids = json.loads(stream_text(executed.cells[-1]))
    assert session == str(path)
    assert cwd == str(path.parent)
    assert ids == [cell.id for cell in nb.cells[2:]]
    assert nbformat.read(path, as_version=4).cells[1].outputs == []  # input untouched

    # The store was found as the kernel finds it (next to pyproject.toml), and the
    # namespace is the notebook's id, which `nbstep run` wrote into it, with its path
    # beside it (docs/design.md, "Which notebook is this").
    the_id = json.loads(path.read_text())["metadata"]["nbstep"]["id"]
    # The executed copy written elsewhere does not carry the id: it would be a copy
    # of the notebook that takes over its records once the input is renamed.
    assert "id" not in executed.metadata.get("nbstep", {})
    store = LocalStore(project / ".nbstep")
    try:
        assert store.admin().namespaces() == [f"nb:{the_id}", "nbstep:notebooks"]
        assert store.read(store.lookup("nbstep:notebooks", f"nb:{the_id}", 1)) == {
            "path": "notebooks/analysis.ipynb"}
        assert [r.key for r in store.current(f"nb:{the_id}")] == [
            "load", "sum", "scale"
        ]
    finally:
        store.close()

    second = nbstep_cmd("run", str(path), "--inplace",
                        "--summary-json", str(project / "s2.json"), cwd=project / "notebooks")
    assert second.returncode == 0, second.stderr
    assert summary_counts(second.stdout) == "3 replayed, 0 computed, 0 failed"
    summary = json.loads((project / "s2.json").read_text())
    (notebook,) = summary["notebooks"]
    assert (notebook["replayed"], notebook["computed"]) == (3, 0)
    assert notebook["saved_s"] >= 0.3  # the recorded time of `load`, saved by replay
    assert json.loads((project / "s1.json").read_text())["notebooks"][0]["compute_s"] >= 0.3
    assert nbformat.read(path, as_version=4).cells[-1].outputs  # --inplace wrote it


def test_a_failing_cell_stops_the_run_and_the_notebook_is_still_written(project):
    path = project / "broken.ipynb"
    write_notebook(
        path,
        "from nbstep import step\nfirst = step.run('first', lambda: 41)\nprint(first + 1)",
        "step.run('divide', 0, lambda d: 1 / d)",
        "print('after the failure')",
    )
    out = project / "out" / "broken.ipynb"
    done = nbstep_cmd("run", str(path), "-o", str(out), cwd=project)
    assert done.returncode == 1
    assert summary_counts(done.stdout) == "0 replayed, 1 computed, 1 failed"
    assert "FAILED in a step" in done.stderr
    assert "cell 2 of 3 failed in a step: ZeroDivisionError: division by zero" in done.stderr
    assert "---- cell source ----\nstep.run('divide', 0, lambda d: 1 / d)" in done.stderr
    assert "---- traceback ----" in done.stderr
    assert "\x1b" not in done.stderr

    executed = nbformat.read(out, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert stream_text(code[0]) == "42\n"
    assert [o.output_type for o in code[1].outputs] == ["error"]
    assert code[2].outputs == [] and code[2].execution_count is None  # never ran

    # What was computed before the failure is recorded: the next run replays it.
    again = nbstep_cmd("run", str(path), cwd=project)
    assert again.returncode == 1
    assert summary_counts(again.stdout) == "1 replayed, 0 computed, 1 failed"


def test_failure_outside_a_step_in_process(project, monkeypatch):
    path = project / "typo.ipynb"
    write_notebook(path, "from nbstep import step\nstep.run('a', lambda: 1)", "undefined_name")
    monkeypatch.delenv("NBSTEP_NAMESPACE", raising=False)
    result = CliRunner().invoke(cli, ["--store", str(project / "store"), "run", str(path)])
    assert result.exit_code == 1, result.output
    assert "0 replayed, 1 computed, 0 failed" in result.stdout
    assert "cell 2 of 2 failed: NameError" in result.stderr
    assert "in a step" not in result.stderr
    assert (project / "store" / "format").exists()  # --store reached the kernel


def test_on_mismatch_and_rerun_reach_the_kernel(project):
    path = project / "params.ipynb"
    write_notebook(path, "from nbstep import step\nstep.run('train', 1, lambda lr: lr * 10)",
                   markdown=False)
    assert nbstep_cmd("run", str(path), cwd=project).returncode == 0
    write_notebook(path, "from nbstep import step\nstep.run('train', 2, lambda lr: lr * 10)",
                   markdown=False)
    strict = nbstep_cmd("run", str(path), cwd=project)
    assert strict.returncode == 1
    assert "StepInputMismatch" in strict.stderr
    relaxed = nbstep_cmd("run", str(path), "--on-mismatch", "rerun", cwd=project)
    assert relaxed.returncode == 0, relaxed.stderr
    assert summary_counts(relaxed.stdout) == "0 replayed, 1 computed, 0 failed"
    replay = nbstep_cmd("run", str(path), cwd=project)
    assert summary_counts(replay.stdout) == "1 replayed, 0 computed, 0 failed"
    rerun = nbstep_cmd("run", str(path), "--rerun", cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    assert summary_counts(rerun.stdout) == "0 replayed, 1 computed, 0 failed"
    # A new version was recorded over the old one (not a forget and a first record).
    history = nbstep_cmd("inspect", "params.ipynb", "--all", "--format", "json", cwd=project)
    assert [(r["status"], r["reason"]) for r in json.loads(history.stdout)] == [
        ("earlier", "first"), ("earlier", "input changed"), ("current", "rerun")
    ]
    # Back to the first input: its kept version replays, in the default strict mode.
    write_notebook(path, "from nbstep import step\nstep.run('train', 1, lambda lr: lr * 10)",
                   markdown=False)
    back = nbstep_cmd("run", str(path), cwd=project)
    assert back.returncode == 0, back.stderr
    assert summary_counts(back.stdout) == "1 replayed, 0 computed, 0 failed"


def test_several_notebooks_stop_at_a_failure_unless_keep_going(project):
    bad = project / "a_bad.ipynb"
    good = project / "b_good.ipynb"
    write_notebook(bad, "raise RuntimeError('no')", markdown=False)
    write_notebook(good, "from nbstep import step\nstep.run('k', lambda: 1)", markdown=False)
    stopped = nbstep_cmd("run", str(bad), str(good), cwd=project)
    assert stopped.returncode == 1
    assert "notebooks   0 ok, 1 failed, 1 not run" in stopped.stdout
    going = nbstep_cmd("run", str(bad), str(good), "--keep-going", "-o", "out", cwd=project)
    assert going.returncode == 1
    assert "notebooks   1 ok, 1 failed" in going.stdout
    assert summary_counts(going.stdout) == "0 replayed, 1 computed, 0 failed"
    assert sorted(p.name for p in (project / "out").iterdir()) == [bad.name, good.name]


def test_timeout_fails_the_cell(project):
    path = project / "slow.ipynb"
    write_notebook(path, "import time\ntime.sleep(30)", markdown=False)
    done = nbstep_cmd("run", str(path), "--timeout", "1", cwd=project)
    assert done.returncode == 1
    assert "timed out after 1 s" in done.stderr


def test_unknown_kernel_is_a_usage_error(project):
    path = project / "k.ipynb"
    write_notebook(path, "1", markdown=False)
    done = nbstep_cmd("run", str(path), "--kernel", "pyhton3", cwd=project)
    assert done.returncode == 2
    assert "no Jupyter kernel named `pyhton3`. Did you mean `python3`?" in done.stderr


def test_notebooks_that_cannot_run_fail_and_the_others_still_run(project):
    (project / "a_broken.ipynb").write_text("not json")
    write_notebook(project / "b_fine.ipynb", "print('fine')", markdown=False)
    nb = write_notebook(project / "c_elsewhere.ipynb", "1", markdown=False)
    nb.metadata["kernelspec"]["name"] = "conda-env-gone-py"
    nbformat.write(nb, project / "c_elsewhere.ipynb")
    done = nbstep_cmd("run", "a_broken.ipynb", "b_fine.ipynb", "c_elsewhere.ipynb",
                      "--keep-going", cwd=project)
    assert done.returncode == 1
    assert "cannot read" in done.stderr and "a_broken.ipynb as a notebook" in done.stderr
    assert "no Jupyter kernel named `conda-env-gone-py`" in done.stderr
    assert "notebooks   1 ok, 2 failed" in done.stdout
    assert "Traceback" not in done.stderr


def test_step_magic_cells_are_counted_like_step_run(project):
    pytest.importorskip("nbstep.notebook.magics", reason="the %%step magic is not in this tree yet")
    path = project / "magic.ipynb"
    write_notebook(
        path,
        "%load_ext nbstep",
        "%%step double\ny = 21 * 2",
        "from nbstep import step\nz = step.run('z', y, lambda v: v + 1)",
        markdown=False,
    )
    first = nbstep_cmd("run", str(path), cwd=project)
    assert first.returncode == 0, first.stderr
    assert summary_counts(first.stdout) == "0 replayed, 2 computed, 0 failed"
    second = nbstep_cmd("run", str(path), cwd=project)
    assert summary_counts(second.stdout) == "2 replayed, 0 computed, 0 failed"


def test_output_must_be_a_folder_for_several_notebooks(project):
    a, b = project / "a.ipynb", project / "b.ipynb"
    write_notebook(a, "1", markdown=False)
    write_notebook(b, "1", markdown=False)
    done = nbstep_cmd("run", str(a), str(b), "-o", "x.ipynb", cwd=project)
    assert done.returncode == 2
    assert "must be a folder" in done.stderr


def test_ctrl_c_interrupts_the_kernel_and_still_writes_the_notebook(project):
    path = project / "long.ipynb"
    marker = project / "started"
    write_notebook(
        path,
        "import pathlib, time\nfrom nbstep import step\nstep.run('quick', lambda: 1)",
        f"pathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)",
        "print('not reached')",
        markdown=False,
    )
    write_notebook(project / "next.ipynb", "print('never run')", markdown=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSTEP_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbstep", "run", "long.ipynb", "next.ipynb", "-o", "out",
         "--keep-going"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=project, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "INTERRUPTED" in stderr
    assert "Traceback (most recent call last)" not in stderr.split("---- traceback ----")[0]
    assert "1 not run" in stdout  # even a --keep-going run stops at an interrupt
    assert summary_counts(stdout) == "0 replayed, 1 computed, 0 failed"
    assert not (project / "out" / "next.ipynb").exists()
    code = nbformat.read(project / "out" / "long.ipynb", as_version=4).cells
    assert code[1].outputs[-1]["ename"] == "KeyboardInterrupt"
    assert code[2].execution_count is None


def test_a_kernel_without_nbstep_still_runs_with_counts_unknown(project):
    # A kernel whose Python has no nbstep. nbstep is installed here, so shadow it through
    # PYTHONPATH with a package that fails as a missing one does (an empty one would not
    # do: the editable install's finder still resolves nbstep's submodules).
    fake = project / "fake"
    (fake / "nbstep").mkdir(parents=True)
    (fake / "nbstep" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'nbstep'\", name='nbstep')\n"
    )
    spec = project / "share" / "jupyter" / "kernels" / "other"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "other", "language": "python", "env": {"PYTHONPATH": str(fake)},
    }))
    path = project / "plain.ipynb"
    write_notebook(path, "print(6 * 7)", markdown=False)
    done = nbstep_cmd("run", str(path), "--kernel", "other", "-o", "out.ipynb", cwd=project,
                      env_extra={"JUPYTER_PATH": str(project / "share" / "jupyter")})
    assert done.returncode == 0, done.stderr
    assert "nbstep is not importable in kernel `other`" in done.stderr
    assert "steps unknown" in done.stdout
    assert stream_text(nbformat.read(project / "out.ipynb", as_version=4).cells[0]) == "42\n"


# The kernel's handler for our silent probe may still be running (SIGINT not yet given
# back to "ignore") after its reply is sent; a kernel slow to finish a request shows it
# every time, not 1 run in 4.
SLOW_SILENT_REQUESTS = """\
import inspect, time
kernel = get_ipython().kernel
handle = kernel.shell_handlers["execute_request"]

async def slow_after_reply(stream, idents, msg):
    result = handle(stream, idents, msg)
    if inspect.isawaitable(result):
        await result
    if msg["content"].get("silent"):
        time.sleep(1)

kernel.shell_handlers["execute_request"] = slow_after_reply
"""


def test_a_failing_notebook_does_not_log_a_keyboard_interrupt_from_shutdown(project):
    path = project / "fails.ipynb"
    write_notebook(path, SLOW_SILENT_REQUESTS, "raise ValueError('boom')", markdown=False)
    done = nbstep_cmd("run", str(path), cwd=project)
    assert done.returncode == 1
    assert "cell 2 of 2 failed: ValueError: boom" in done.stderr
    assert "KeyboardInterrupt" not in done.stderr, done.stderr


def test_on_mismatch_reaches_step_magic_cells_too(project):
    pytest.importorskip("nbstep.notebook.magics", reason="the %%step magic is not in this tree yet")
    path = project / "magic_mismatch.ipynb"

    def notebook(n):
        write_notebook(path, "%load_ext nbstep", f"n = {n}", "%%step double\ny = n * 2",
                       markdown=False)

    notebook(1)
    assert nbstep_cmd("run", str(path), cwd=project).returncode == 0
    notebook(2)
    strict = nbstep_cmd("run", str(path), "--on-mismatch", "error", cwd=project)
    assert strict.returncode == 1, strict.stderr
    assert "failed in a step: UsageError: %%step: deterministic input mismatch" in strict.stderr
    # Without the flag each kind of step keeps its own default: %%step recomputes.
    relaxed = nbstep_cmd("run", str(path), cwd=project)
    assert relaxed.returncode == 0, relaxed.stderr
    assert summary_counts(relaxed.stdout) == "0 replayed, 1 computed, 0 failed"


def test_on_mismatch_help_names_both_defaults():
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    help_text = " ".join(result.output.split())
    assert "step.run: error" in help_text and "%%step: rerun" in help_text


def test_a_cell_whose_step_failed_inside_nbstep_is_a_failed_step(project):
    # What the engine's counters say decides "in a step": a cell that moved `failed`
    # and raised (as a replay that cannot read its value will) is a failed step.
    path = project / "counted.ipynb"
    write_notebook(
        path,
        "import nbstep\nfrom nbstep.engine.runtime import Runtime\nRuntime.instance().stats['failed'] += 1\n"
        "raise nbstep.StepReplayError('cannot replay step `big`: its object file is missing')",
        markdown=False,
    )
    done = nbstep_cmd("run", str(path), cwd=project)
    assert done.returncode == 1
    assert "FAILED in a step" in done.stderr
    assert "cell 1 of 1 failed in a step: StepReplayError: cannot replay" in done.stderr
    assert summary_counts(done.stdout) == "0 replayed, 0 computed, 1 failed"


def delete_object_files(store_dir):
    files = [p for p in (store_dir / "objects").glob("*/*") if p.parent.name != "tmp"]
    assert files, "the value should be in an object file (inline_limit=10)"
    for p in files:
        p.unlink()


def test_a_replay_that_cannot_read_its_object_file_is_a_failed_step(project):
    path = project / "replay.ipynb"
    write_notebook(
        path,
        "import nbstep\nfrom nbstep import step\nnbstep.configure(inline_limit=10)",
        "big = step.run('big', 100, lambda n: set(range(n)))",
        markdown=False,
    )
    assert nbstep_cmd("run", str(path), cwd=project).returncode == 0
    delete_object_files(project / ".nbstep")
    done = nbstep_cmd("run", str(path), cwd=project)
    assert done.returncode == 1
    assert "StepReplayError" in done.stderr and "is missing" in done.stderr
    assert "FAILED in a step" in done.stderr
    assert summary_counts(done.stdout) == "0 replayed, 0 computed, 1 failed"


def test_a_step_magic_replay_that_cannot_read_its_object_file_is_a_failed_step(project):
    pytest.importorskip("nbstep.notebook.magics", reason="the %%step magic is not in this tree yet")
    path = project / "magic_replay.ipynb"
    write_notebook(
        path,
        "import nbstep\nnbstep.configure(inline_limit=10)\n%load_ext nbstep",
        "%%step big\nbig = set(range(100))",
        markdown=False,
    )
    assert nbstep_cmd("run", str(path), cwd=project).returncode == 0
    delete_object_files(project / ".nbstep")
    done = nbstep_cmd("run", str(path), cwd=project)
    assert done.returncode == 1
    assert "is missing" in done.stderr
    assert "FAILED in a step" in done.stderr
    assert summary_counts(done.stdout) == "0 replayed, 0 computed, 1 failed"


def test_a_mistyped_notebook_path_suggests_close_names(project, monkeypatch):
    write_notebook(project / "nb" / "analysis.ipynb", "1", markdown=False)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(cli, ["run", "nb/analsis.ipynb"])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Did you mean `nb/analysis.ipynb`?" in result.output
