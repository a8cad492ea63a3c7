"""nbstep's own lines in a notebook: replayed, recomputing, note.

Each is one display output with two forms: ``text/html``, a small muted line that a
notebook shows apart from the cell's own output, and ``text/plain``, one readable
line (a terminal IPython, ``nbstep run``'s written notebook read as text, nbconvert to
text). Both start with ``nbstep`` and a sign, so they never pass for what the cell
printed::

    nbstep ⟲ replayed `train` - recorded 2026-12-01 09:41 UTC, saved 1.2 s
    nbstep ↻ recomputing `train`: variable `N` changed since the record of ...
    nbstep · note: `query` is not recorded: ...

The display's metadata carries ``{"nbstep": {"notice": KIND}}``, so tools (and the
tests) tell them from the user's displays.
"""

from __future__ import annotations

import html
import re
import sys
from typing import Any

SIGNS = {"replayed": "⟲", "recomputing": "↻", "note": "·"}
STYLE = ("color: var(--jp-ui-font-color2, #6b7280); font-size: 0.85em; "
         "font-family: var(--jp-ui-font-family, sans-serif); margin: 2px 0;")
_CODE = re.compile(r"`([^`]+)`")


def text(kind: str, message: str) -> str:
    """The one-line plain form: ``nbstep ⟲ replayed `key` ...``."""
    return f"nbstep {SIGNS[kind]} {message}"


def as_html(kind: str, message: str) -> str:
    """The styled form: muted, the sign and ``nbstep`` first, `names` as code."""
    body = _CODE.sub(r"<code>\1</code>", html.escape(message, quote=False))
    return (f'<div class="nbstep-notice nbstep-{kind}" style="{STYLE}">'
            f'<span title="nbstep">nbstep {SIGNS[kind]}</span> {body}</div>')


def show(shell: Any, kind: str, message: str) -> None:
    """Show one notice after what the cell has written so far."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        flush = getattr(stream, "flush", None)
        if flush is not None:
            flush()  # the notice comes after the text before it, in order
    shell.display_pub.publish(
        data={"text/plain": text(kind, message), "text/html": as_html(kind, message)},
        metadata={"nbstep": {"notice": kind}},
    )
