"""The kernel side of ``nbstep run``: imported inside the notebook's kernel.

``nbstep run`` evaluates :func:`report` as a ``user_expression`` after each cell (and
in a silent request after a failing one), and :func:`start` once before the first
cell. Both return JSON text. Keep this module tiny and free of heavy imports: it
runs in the user's kernel.
"""

from __future__ import annotations

import json
from typing import Any


def start(on_mismatch: str | None = None, rerun: bool = False) -> str:
    """Apply ``--on-mismatch`` / ``--rerun`` through ``nbstep.configure``; report.

    ``on_mismatch`` sets both defaults: ``on_mismatch`` (``step.run``, default
    "error") and ``magic_on_mismatch`` (``%%step`` cells, default "rerun"), so the
    flag means the same for every step of the notebook. ``rerun`` sets the engine's
    process-wide ``rerun``: every step recomputes and records a new version, and the
    old records stay current until replaced.
    """
    from nbstep.core.version import __version__
    from nbstep.engine.runtime import Runtime

    runtime = Runtime.instance()
    if on_mismatch is not None:
        runtime.configure(on_mismatch=on_mismatch, magic_on_mismatch=on_mismatch)
    if rerun:
        runtime.configure(rerun=True)
    return json.dumps({**_report(), "version": __version__})


def report() -> str:
    """The engine's counters (replayed, computed, failed, ...) as JSON."""
    return json.dumps(_report())


def _report() -> dict[str, Any]:
    from nbstep.engine.runtime import Runtime

    return {"stats": dict(Runtime.instance().stats)}
