"""The package's shape: layers import downwards only, no module cycles, a cheap front door.

docs/architecture.md describes the layers; pyproject.toml holds them as import-linter
contracts. Function-level imports count as imports here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules)
             for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return groups


def test_no_module_imports_itself_through_others():
    # Imports under `if TYPE_CHECKING:` count too: a cycle of types is a cycle of design.
    graph = grimp.build_graph("nbstep", cache_dir=None)
    # A package's __init__ re-exporting its modules is not a cycle of logic: leave the
    # package -> module edges out, keep every edge between modules.
    for module in sorted(graph.modules):
        for child in graph.find_children(module):
            if graph.direct_import_exists(importer=module, imported=child):
                graph.remove_import(importer=module, imported=child)
    assert _cycles(graph) == []


@pytest.mark.parametrize("statement", ["import nbstep", "from nbstep import step"])
def test_the_front_door_loads_nothing_heavy(statement):
    heavy = ("duckdb", "pandas", "pyarrow", "numpy", "click", "nbclient", "IPython",
             "cloudpickle", "xxhash", "psycopg", "obstore")
    code = (f"import sys\n{statement}\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_replaying_a_step_in_a_fresh_process_never_loads_duckdb(tmp_path):
    """The replay path reads the namespace's log: the query table (DuckDB) and the
    data libraries load only when a step needs them (a frame, step.inspect())."""
    code = (
        "import sys\nimport nbstep\nfrom nbstep import step\n"
        f"nbstep.configure(store={str(tmp_path / 'store')!r}, namespace='nb')\n"
        "print(step.run('k', 3, lambda x: {'v': x}))\n"
        "print([m for m in ('duckdb', 'pandas', 'pyarrow', 'numpy', 'click') "
        "if m in sys.modules])"
    )
    for run in ("records", "replays"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=True, cwd=tmp_path)
        assert done.stdout.split("\n")[:2] == ["{'v': 3}", "[]"], (run, done.stdout)
