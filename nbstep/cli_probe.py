"""The kernel side of ``nbstep run`` under the name nbstep 0.1 used.

``nbstep run`` of that version asks a kernel for ``nbstep.cli_probe``; a kernel with
this nbstep answers through :mod:`nbstep.notebook.probe`.
"""

from __future__ import annotations

from nbstep.notebook.probe import report, start

__all__ = ["report", "start"]
