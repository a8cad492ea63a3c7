"""The example notebooks, executed twice by a real kernel through nbclient.

Each notebook is copied to tmp_path and run as jupyter_server runs one:
``JPY_SESSION_NAME`` is the notebook's absolute path and the kernel's working
directory is the notebook's folder. The store is ``tmp_path/.nbstep``. The cells
append to ``runs.log`` whenever a body really runs, so the log proves which run
computed and which replayed; the outputs prove what the replay showed again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import nbstep

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = ROOT / "jupyter-config" / "kernels" / "python3-nbstep"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NBSTEP_") and k not in ("JPY_SESSION_NAME", "MPLBACKEND")}
    env.update(extra)
    return env


def execute(path: Path, kernel_name: str = "python3", **env: str) -> nbformat.NotebookNode:
    """Run a notebook once, in a new kernel; return it with its outputs."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=base_env(JPY_SESSION_NAME=str(path.resolve()),
                                NBSTEP_STORE=str(path.parent / ".nbstep"), **env))
    return nb


def cell(nb: nbformat.NotebookNode, first_line: str) -> nbformat.NotebookNode:
    matches = [c for c in nb.cells
               if c.cell_type == "code" and c.source.splitlines()[0] == first_line]
    assert len(matches) == 1, first_line
    return matches[0]


def stream(c: nbformat.NotebookNode, name: str = "stdout") -> str:
    return "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == name)


def rich(c: nbformat.NotebookNode, kind: str) -> list[dict]:
    """The cell's own rich outputs (nbstep's notices left out)."""
    return [dict(o.data) for o in c.outputs
            if o.output_type == kind and "nbstep" not in o.get("metadata", {})]


def notices(c: nbformat.NotebookNode) -> list[str]:
    """nbstep's own lines (replayed, recomputing, note) as text, in order."""
    return [o.data["text/plain"] for o in c.outputs
            if o.output_type == "display_data" and "nbstep" in o.get("metadata", {})]


def log_lines(folder: Path) -> list[str]:
    return (folder / "runs.log").read_text().splitlines()


@pytest.fixture
def copy_notebook(tmp_path):
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copy(NOTEBOOKS / name, target)
        return target

    return copy


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, path.name


def test_quickstart_replays_the_slow_cell_and_the_step_run_loop(copy_notebook, monkeypatch):
    path = copy_notebook("quickstart.ipynb")
    first = execute(path)
    assert log_lines(path.parent) == ["slow_squares ran", *[f"cube({n}) ran" for n in range(5)]]
    second = execute(path)
    # Nothing ran again: the log is unchanged.
    assert log_lines(path.parent) == ["slow_squares ran", *[f"cube({n}) ran" for n in range(5)]]

    slow = cell(second, "%%step slow_squares")
    assert stream(slow) == "computed 10 squares\n"
    assert len(notices(slow)) == 1
    assert notices(slow)[0].startswith("nbstep ⟲ replayed `slow_squares` - recorded ")
    # After the outputs (the result comes after it, as Out[n] does).
    kinds = [o.output_type for o in slow.outputs]
    assert kinds == ["stream", "display_data", "execute_result"]
    assert stream(cell(first, "%%step slow_squares")) == "computed 10 squares\n"
    assert rich(slow, "execute_result") == [{"text/plain": "285"}]
    # The next cell got the restored variable.
    assert stream(cell(second, 'print(squares[:5], "...")')) == "[0, 1, 4, 9, 16] ...\n"
    cubes = cell(second, "def cube(n):")
    assert rich(cubes, "execute_result") == [{"text/plain": "[0, 1, 8, 27, 64]"}]

    # The namespace is the notebook's path relative to the store's root.
    monkeypatch.setenv("NBSTEP_STORE", str(path.parent / ".nbstep"))
    frame = nbstep.step.inspect("quickstart.ipynb", results=False)
    current = frame[frame["status"] == "current"]
    assert sorted(current["key"]) == ["cube"] * 5 + ["slow_squares"]


def test_pandas_pipeline_replays_frames_and_the_plot(copy_notebook):
    path = copy_notebook("pandas_pipeline.ipynb")
    first = execute(path)
    second = execute(path)
    assert log_lines(path.parent) == ["load ran", "summarise ran", "plot ran"]

    for head in ("%%step load", "%%step summarise"):
        before, after = cell(first, head), cell(second, head)
        html = rich(before, "execute_result")[0]["text/html"]
        assert "<table" in html
        assert rich(after, "execute_result")[0]["text/html"] == html
        assert notices(after)[-1].startswith(f"nbstep ⟲ replayed `{head.split()[1]}`")
    assert stream(cell(second, "%%step load")).splitlines()[0] == "loaded 10,000 rows"

    plot_before = rich(cell(first, "%%step plot"), "display_data")
    plot_after = rich(cell(second, "%%step plot"), "display_data")
    assert len(plot_before) == 1 and "image/png" in plot_before[0]
    assert plot_after == plot_before  # the same figure, shown again

    last = "print(summary.index.tolist(), raw.dtypes.to_dict())"
    assert stream(cell(second, last)) == stream(cell(first, last))
    assert "float64" in stream(cell(second, last))


def test_failures_notebook(copy_notebook):
    path = copy_notebook("failures.ipynb")
    first = execute(path, DEMO_THRESHOLD="3")
    second = execute(path, DEMO_THRESHOLD="5")
    log = log_lines(path.parent)

    # A cell that raises records nothing: it runs, and fails, both times.
    for nb in (first, second):
        errors = [o for o in cell(nb, "%%step flaky_download").outputs
                  if o.output_type == "error"]
        assert [e.ename for e in errors] == ["ConnectionError"]
        # The traceback starts at the cell's own line, as for a cell without %%step.
        shown = "\n".join(errors[0].traceback)
        assert "run_cell_magic" not in shown and "skipping hidden" not in shown
        assert "%%step flaky_download" in shown
    assert log.count("flaky_download ran") == 2

    # A changed input: recomputed by default, with one line saying what changed.
    keep = cell(second, "%%step keep_large")
    assert notices(keep)[0].startswith(
        "nbstep ↻ recomputing `keep_large`: variable `threshold` changed since the record of ")
    assert rich(keep, "execute_result") == [{"text/plain": "[6, 7, 8, 9]"}]
    assert rich(cell(first, "%%step keep_large"), "execute_result") == [
        {"text/plain": "[4, 5, 6, 7, 8, 9]"}]
    assert log.count("keep_large ran") == 2

    # --on-mismatch error: the seed's mismatch error, naming what changed.
    strict = cell(second, "%%step keep_large_strict --on-mismatch error")
    assert "UsageError: %%step: deterministic input mismatch for key `keep_large_strict`" in (
        stream(strict, "stderr"))
    assert "What changed: variable `threshold`." in stream(strict, "stderr")
    assert rich(cell(first, "%%step keep_large_strict --on-mismatch error"),
                "execute_result") == [{"text/plain": "6"}]

    # An unpersistable variable: a warning names it, nothing is recorded, the cell's
    # effects stay, and the next run computes again.
    for nb in (first, second):
        warning = stream(cell(nb, "%%step connect"), "stderr")
        assert "StepNotPersistedWarning" in warning
        assert "variable `con` (sqlite3.Connection) cannot be persisted" in warning
        assert rich(cell(nb, 'con.execute("select 42").fetchall()'), "execute_result") == [
            {"text/plain": "[(42,)]"}]
    assert log.count("connect ran") == 2


def _install_kernelspec(tmp_path: Path, monkeypatch) -> None:
    """The kernelspec as pip installs it, found through JUPYTER_PATH."""
    data = tmp_path / "share" / "jupyter"
    shutil.copytree(KERNELSPEC, data / "kernels" / KERNELSPEC.name)
    monkeypatch.setenv("JUPYTER_PATH", str(data))


def _write(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def test_the_nbstep_kernel_loads_the_extension_without_load_ext(tmp_path, monkeypatch):
    _install_kernelspec(tmp_path, monkeypatch)
    spec = json.loads((KERNELSPEC / "kernel.json").read_text())
    assert "--ext=nbstep.notebook.autoload" in spec["argv"]
    path = _write(tmp_path / "auto.ipynb",
                  "%%step auto\nwith open('runs.log', 'a') as log:\n    log.write('auto ran\\n')\n"
                  "answer = 42\nanswer",
                  # Top-level await inside a kernel, whose event loop is already running.
                  "%%step waited\nimport asyncio\nawait asyncio.sleep(0.01)\n"
                  "with open('runs.log', 'a') as log:\n    log.write('waited ran\\n')\n"
                  "later = answer + 1",
                  "print(answer, later, type(step).__name__)")
    first = execute(path, kernel_name="python3-nbstep")
    second = execute(path, kernel_name="python3-nbstep")
    assert log_lines(tmp_path) == ["auto ran", "waited ran"]
    assert rich(second.cells[0], "execute_result") == [{"text/plain": "42"}]
    assert notices(second.cells[0])[0].startswith("nbstep ⟲ replayed `auto`")
    assert notices(second.cells[1])[0].startswith("nbstep ⟲ replayed `waited`")
    assert stream(first.cells[2]) == stream(second.cells[2]) == "42 43 StepAPI\n"


def test_nbstep_autoload_0_turns_the_kernel_autoload_off(tmp_path, monkeypatch):
    _install_kernelspec(tmp_path, monkeypatch)
    path = _write(tmp_path / "off.ipynb",
                  "print('step' in dir(), sorted(get_ipython().extension_manager.loaded))",
                  "%load_ext nbstep\nprint('step' in dir())")
    nb = execute(path, kernel_name="python3-nbstep", NBSTEP_AUTOLOAD="0")
    assert stream(nb.cells[0]).startswith("False ")
    assert "'nbstep'" not in stream(nb.cells[0])
    assert stream(nb.cells[1]) == "True\n"  # an explicit %load_ext still works


def test_loading_is_cheap_in_a_running_kernel(tmp_path):
    path = _write(
        tmp_path / "cost.ipynb",
        "import sys, time\n"
        "heavy = ('pandas', 'duckdb', 'pyarrow', 'numpy')\n"
        "before = [m for m in heavy if m in sys.modules]\n"
        "cpu, wall = time.process_time(), time.perf_counter()\n"
        "get_ipython().run_line_magic('load_ext', 'nbstep')\n"
        "cpu, wall = time.process_time() - cpu, time.perf_counter() - wall\n"
        "print(before, [m for m in heavy if m in sys.modules])\n"
        "print(f'{cpu:.4f} {wall:.4f}')",
    )
    nb = execute(path)
    modules, timing = stream(nb.cells[0]).splitlines()
    assert modules == "[] []"  # nothing heavy imported by loading
    cpu, wall = map(float, timing.split())
    assert cpu <= 0.060, f"loading took {cpu * 1000:.0f} ms of CPU ({wall * 1000:.0f} ms wall)"
