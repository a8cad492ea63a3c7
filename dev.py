#!/usr/bin/env python3
"""The project's two front doors, for a machine with nothing but Python 3.11+.

    python3 dev.py demo     run the quick-start notebook twice: compute, then replay
    python3 dev.py test     run the test suite (extra arguments go to pytest)
    python3 dev.py bench    run the benchmarks and print their tables

Each creates ``.venv/`` beside this file on first use and installs nbstep into it
(editable, with its test and benchmark extras), again whenever pyproject.toml
changes. Nothing outside the checkout is touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_env() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"nbstep needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    stamp = VENV / ".nbstep-installed"
    wanted = hashlib.sha256((HERE / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating {VENV.relative_to(HERE)}/ ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing nbstep and its test dependencies (first run only) ...", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "-e", f"{HERE}[test,bench]"], check=True
    )
    stamp.write_text(wanted)


def demo() -> int:
    """Execute notebooks/quickstart.ipynb twice against a fresh store, showing each
    cell's outputs: the second run replays (nbstep's ``⟲ replayed`` lines)."""
    notebook = HERE / "notebooks" / "quickstart.ipynb"
    with tempfile.TemporaryDirectory(prefix="nbstep-demo-") as tmp:
        work = Path(tmp)
        shutil.copy(notebook, work / notebook.name)
        env = {**os.environ, "NBSTEP_STORE": str(work / ".nbstep")}
        nbstep = str(BIN / "nbstep")
        timings = []
        for n, label in enumerate(("first run (computes every step)",
                                   "second run (replays them)"), 1):
            print(f"\n=== {label} ===", flush=True)
            executed = work / f"run{n}.ipynb"
            started = time.perf_counter()
            code = subprocess.run([nbstep, "run", str(work / notebook.name), "-o",
                                   str(executed)], env=env).returncode
            timings.append(time.perf_counter() - started)
            if executed.exists():
                print(f"\n--- what the cells showed ({label.split(' (')[0]}) ---")
                print(cell_outputs(executed), flush=True)
            if code != 0:
                return code
        print(f"\nfirst run {timings[0]:.1f} s, second run {timings[1]:.1f} s "
              "(both include starting a kernel)")
    return 0


def cell_outputs(path: Path, lines_per_output: int = 6, width: int = 100) -> str:
    """Each code cell's first line and its outputs as text, trimmed: what a person
    would see in Jupyter (text/plain of displays, nbstep's notices included)."""
    import json

    def trimmed(text: str) -> list[str]:
        rows = text.rstrip("\n").splitlines()
        shown = [r if len(r) <= width else r[: width - 1] + "…" for r in rows[:lines_per_output]]
        if len(rows) > lines_per_output:
            shown.append(f"... ({len(rows) - lines_per_output} more lines)")
        return shown

    out = []
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(cells, 1):
        source = "".join(cell["source"]).strip().splitlines() or [""]
        out.append(f"[{i}] {source[0]}")
        for output in cell.get("outputs", []):
            kind = output["output_type"]
            if kind == "stream":
                text = "".join(output["text"])
            elif kind in ("display_data", "execute_result"):
                text = "".join(output.get("data", {}).get("text/plain", ""))
                if kind == "execute_result":
                    text = "Out: " + text
            elif kind == "error":
                text = f"{output['ename']}: {output['evalue']}"
            else:
                continue
            out += [f"      {row}" for row in trimmed(text)]
    return "\n".join(out)


def compile_package() -> None:
    """Byte-compile nbstep, as `pip install` does for a regular install.

    An editable install leaves that to the first import, and where
    PYTHONDONTWRITEBYTECODE is set every interpreter compiles the package again: the
    tests and benchmarks that time imports would measure the compiler.
    """
    subprocess.run([str(PYTHON), "-m", "compileall", "-q", str(HERE / "nbstep")], check=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "bench"):
        print(__doc__)
        return 2
    ensure_env()
    compile_package()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return demo()
    if command == "test":
        return subprocess.run([str(PYTHON), "-m", "pytest", *rest], cwd=HERE).returncode
    return subprocess.run([str(PYTHON), str(HERE / "benchmarks" / "run.py"), *rest], cwd=HERE).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
