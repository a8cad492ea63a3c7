"""Several versions per step: an input seen before replays its kept version, through a
real kernel (issue 12 B). The store side is in tests/storage/test_contract.py, the
step.run side in tests/test_api.py."""

from __future__ import annotations

import pytest
from kernels import Kernel

pytestmark = pytest.mark.kernel

LOAD = "%load_ext nbstep"
STEP = ("%%step squares\n"
        "import time\n"
        "squares = [i * i for i in range(N)]\n"
        "stamp = time.time_ns()\n"
        "print('computed', N)")
SHOW = "print('state', N, len(squares), stamp)"
RUN = ("import time\n"
       "from nbstep import step\n"
       "pair = step.run('pair', N, lambda n: (n, time.time_ns()), on_mismatch='rerun')\n"
       "print('pair', pair[0], pair[1])")
COUNT = "from nbstep import step\nprint('events', len(step.inspect(history=True)))"


def state(cell):
    (line,) = [line for line in cell.lines() if line.startswith("state ")]
    _, n, length, stamp = line.split()
    return int(n), int(length), int(stamp)


def pair(cell):
    (line,) = [line for line in cell.lines() if line.startswith("pair ")]
    _, n, stamp = line.split()
    return int(n), int(stamp)


def said(cell, start):
    """nbstep's own notices of the cell that start with ``start`` (after the mark)."""
    return [line for line in cell.notices() if line.split(" ", 2)[-1].startswith(start)]


def test_alternating_inputs_replay_their_kept_versions(tmp_path):
    notebook = tmp_path / "analysis.ipynb"
    stamps, pairs = {}, {}
    with Kernel(notebook) as kernel:
        assert kernel.run(LOAD).ok
        for n in (10, 20, 10, 20):
            assert kernel.run(f"N = {n}").ok
            cell = kernel.run(STEP, cell_id="step")
            shown = kernel.run(SHOW)
            ran = kernel.run(RUN, cell_id="run")
            assert cell.ok and shown.ok and ran.ok, cell.errors() + shown.errors() + ran.errors()
            got_n, length, stamp = state(shown)
            assert (got_n, length) == (n, n)
            if n not in stamps:
                # First time: computed (the second N recomputes, saying what changed).
                assert "computed" in cell.stream() and not said(cell, "replayed `")
                stamps[n], pairs[n] = stamp, pair(ran)
            else:
                # Seen before: the kept version replays, outputs and variables.
                assert said(cell, "replayed `squares`"), cell.lines()
                assert not said(cell, "recomputing `")
                assert f"computed {n}" in cell.stream()  # the recorded output, shown again
                assert stamp == stamps[n]
                assert pair(ran) == pairs[n]
        assert stamps[10] != stamps[20]
        counted = kernel.run(COUNT)
        # Two versions of each step, nothing appended by the replays.
        assert [x for x in counted.lines() if x.startswith("events ")] == ["events 4"], counted.lines() + counted.errors()
    # A new kernel: both inputs replay from the store, whichever comes first.
    with Kernel(notebook) as kernel:
        assert kernel.run(LOAD).ok
        for n in (10, 20):
            assert kernel.run(f"N = {n}").ok
            cell = kernel.run(STEP, cell_id="step")
            shown = kernel.run(SHOW)
            assert said(cell, "replayed `squares`"), cell.lines() + cell.errors()
            assert state(shown) == (n, n, stamps[n])
            assert pair(kernel.run(RUN, cell_id="run")) == pairs[n]


def test_an_input_no_kept_version_has_recomputes_and_is_kept(tmp_path):
    notebook = tmp_path / "analysis.ipynb"
    with Kernel(notebook, NBSTEP_KEEP_VERSIONS="2") as kernel:
        assert kernel.run(LOAD).ok
        stamps = {}
        for n in (1, 2, 3):
            kernel.run(f"N = {n}")
            assert said(kernel.run(STEP, cell_id="step"), "replayed `") == []
            stamps[n] = state(kernel.run(SHOW))[2]
        # Two versions kept: 2 (earlier) replays, 1 fell out and recomputes.
        kernel.run("N = 2")
        assert said(kernel.run(STEP, cell_id="step"), "replayed `squares`")
        assert state(kernel.run(SHOW))[2] == stamps[2]
        kernel.run("N = 1")
        cell = kernel.run(STEP, cell_id="step")
        assert said(cell, "recomputing `squares`: variable `N` changed")
        assert state(kernel.run(SHOW))[2] != stamps[1]
