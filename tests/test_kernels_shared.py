"""Two real kernels run notebooks of one project at once while the CLI lists the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import nbformat
import pytest

CELLS = [
    "import time\nfrom nbstep import step\nNAME = {name!r}",
    # Many small steps, with handlers slow enough that both kernels interleave.
    "def work(i):\n    time.sleep(0.01)\n    return {{'nb': NAME, 'i': i}}\n"
    "values = [step.run('item', i, work) for i in range(120)]\n"
    "assert values == [{{'nb': NAME, 'i': i}} for i in range(120)]",
    # A step shared by both notebooks through an explicit namespace.
    "shared = [step.run('shared', j, lambda j: j * j, namespace='shared') for j in range(40)]\n"
    "assert shared == [j * j for j in range(40)]",
    "print(NAME, len(values), sum(shared))",
]


def _notebook(path, name):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(name=name)) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _nbstep(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "nbstep", *args], **kwargs)


@pytest.mark.kernel
def test_two_kernels_and_the_cli_share_one_store(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    for name in ("a", "b"):
        _notebook(tmp_path / f"{name}.ipynb", name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSTEP_")}

    def run_both(round_):
        procs = [
            _nbstep("run", f"{name}.ipynb", "--summary-json", f"{name}-{round_}.json",
                    cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)
            for name in ("a", "b")
        ]
        listings = []
        while any(p.poll() is None for p in procs):
            ls = subprocess.run([sys.executable, "-m", "nbstep", "ls"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
            listings.append(ls)
            time.sleep(0.2)
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, out + err
        summaries = [json.loads((tmp_path / f"{n}-{round_}.json").read_text()) for n in "ab"]
        return summaries, listings

    first, listings = run_both(1)
    # The CLI never hit a lock while the kernels worked (a store that does not exist
    # yet is the only acceptable refusal, before the first step lands).
    for ls in listings:
        assert ls.returncode == 0 or "no nbstep store at" in ls.stderr, ls.stderr
    # ... and listed the notebooks' steps while they were being recorded.
    assert any(ls.returncode == 0 and ".ipynb" in ls.stdout for ls in listings)
    computed = sum(nb["computed"] for s in first for nb in s["notebooks"])
    replayed = sum(nb["replayed"] for s in first for nb in s["notebooks"])
    # 120 own steps each, and the 40 shared steps computed once between them.
    assert computed + replayed == 2 * 160
    assert computed >= 2 * 120 + 40 and replayed <= 40

    second, _ = run_both(2)
    for summary in second:
        (nb,) = summary["notebooks"]
        assert nb["computed"] == 0 and nb["replayed"] == 160, nb

    import duckdb

    con = duckdb.connect(str(tmp_path / ".nbstep" / "steps.duckdb"), read_only=True)
    try:
        dupes = con.execute(
            "SELECT namespace, key, sequence, count(*) FROM events WHERE kind = 'recorded' "
            "GROUP BY ALL HAVING count(*) > 1"
        ).fetchall()
        namespaces = [r[0] for r in con.execute(
            "SELECT DISTINCT namespace FROM events ORDER BY 1").fetchall()]
    finally:
        con.close()
    assert dupes == []
    # Each notebook's id, which `nbstep run` wrote into it, and the ids' paths.
    ids = sorted(f"nb:{json.loads((tmp_path / f'{n}.ipynb').read_text())['metadata']['nbstep']['id']}"
                 for n in "ab")
    assert namespaces == [*ids, "nbstep:notebooks", "shared"]
