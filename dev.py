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
    """Execute notebooks/quickstart.ipynb twice against a fresh store."""
    notebook = HERE / "notebooks" / "quickstart.ipynb"
    with tempfile.TemporaryDirectory(prefix="nbstep-demo-") as tmp:
        work = Path(tmp)
        shutil.copy(notebook, work / notebook.name)
        env = {**os.environ, "NBSTEP_STORE": str(work / ".nbstep")}
        nbstep = str(BIN / "nbstep")
        timings = []
        for label in ("first run (computes every step)", "second run (replays them)"):
            print(f"\n=== {label} ===", flush=True)
            started = time.perf_counter()
            code = subprocess.run([nbstep, "run", str(work / notebook.name)], env=env).returncode
            timings.append(time.perf_counter() - started)
            if code != 0:
                return code
        print(f"\nfirst run {timings[0]:.1f} s, second run {timings[1]:.1f} s "
              "(both include starting a kernel)")
    return 0


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
