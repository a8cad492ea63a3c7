"""Names: IPython's own variables (never a step's input or output), and step names as text.

Keys and namespaces are saved as UTF-8 text: a ``str`` subclass (an Enum member of
``class Stage(str, Enum)``) is saved as its plain text, so reading a store never
needs the user's class; text UTF-8 cannot hold (a lone surrogate, from a file name
that was not UTF-8) is refused before anything runs.
"""

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


def plain_text(value: str, what: str) -> str:
    """``value`` as a plain ``str``; ValueError naming ``what`` if UTF-8 cannot hold it."""
    text = str.__str__(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start:e.end].encode("unicode_escape").decode("ascii")
        raise ValueError(
            f"{what} {text!r} holds {bad} at position {e.start}, a lone surrogate that UTF-8 "
            "cannot save (typically from a file name that was not UTF-8): pass valid text"
        ) from None
    return text
