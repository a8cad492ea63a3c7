"""Names IPython itself puts in a notebook's namespace: never a step's input or output."""

from __future__ import annotations

import re
from typing import Any

_IPYTHON_NAME = re.compile(
    r"^(_+|_i+|_i\d+|_\d+|_oh|_ih|_dh|_exit_code|In|Out|get_ipython|exit|quit|__\w+__)$"
)
# The shell and nbstep's own API object: never descended into when hashing.
_SHELL_TYPES = ("ZMQInteractiveShell", "InteractiveShell", "TerminalInteractiveShell", "StepAPI")


def is_ipython_name(name: str) -> bool:
    """``_``, ``_i3``, ``Out``, ``_exit_code``, ``__name__``...: IPython's bookkeeping."""
    return bool(_IPYTHON_NAME.match(name))


def is_shell_value(name: str, value: Any) -> bool:
    """The shell itself, or a handle on it (``get_ipython``, ``In``, the ``step`` API)."""
    return name in ("get_ipython", "In", "Out", "exit", "quit") or (
        type(value).__name__ in _SHELL_TYPES)
