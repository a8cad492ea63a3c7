"""The kernel side of ``nbstep run``: imported inside the notebook's kernel.

``nbstep run`` evaluates :func:`report` as a ``user_expression`` after each cell (and
in a silent request after a failing one), and :func:`start` once before the first
cell. Both return JSON text. Keep this module tiny and free of heavy imports: it
runs in the user's kernel.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def start(on_mismatch: str | None = None, rerun: bool = False) -> str:
    """Apply ``--on-mismatch`` / ``--rerun`` through ``nbstep.configure``; report.

    ``rerun`` sets the engine's process-wide ``rerun``: every step recomputes and
    records a new version, and the old records stay current until replaced. A kernel
    whose nbstep predates that setting reports ``rerun: unsupported`` instead.
    """
    import nbstep
    from nbstep import config

    if on_mismatch is not None:
        nbstep.configure(on_mismatch=on_mismatch)
    rerun_how = None
    if rerun:
        if "rerun" in config.SETTING_TYPES:
            nbstep.configure(rerun=True)
            rerun_how = "setting"
        else:
            rerun_how = "unsupported"
    return json.dumps({**_report(), "rerun": rerun_how,
                       "version": getattr(nbstep, "__version__", "?")})


def report() -> str:
    """The engine's counters, and whether the last error was raised inside a step."""
    return json.dumps(_report())


def _report() -> dict[str, Any]:
    from nbstep.api import runtime

    stats = dict(runtime().stats)
    return {"stats": stats, "error_in_step": _error_in_step()}


def _error_in_step() -> bool:
    """Did the last exception IPython showed pass through nbstep's code?

    Then a step failed (its handler raised, or its record did not match); otherwise
    the cell failed outside any step. The traceback is walked, not its text matched.
    """
    tb = getattr(sys, "last_traceback", None)
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(name, str) and name.startswith("nbstep.") and name != __name__:
            return True
        tb = tb.tb_next
    return False
