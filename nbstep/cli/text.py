"""Plain-text formatting for the command line: sizes, durations, tables, previews.

Nothing here writes to a terminal or imports click; the commands decide where text
goes and whether it may be coloured.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from nbstep.core.durations import duration

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Text without terminal escape codes (IPython colours its tracebacks)."""
    return _ANSI.sub("", text)


_COLORS = {"red": 31, "green": 32, "yellow": 33, "blue": 34, "cyan": 36}


def style(message: str, fg: str | None = None, bold: bool = False) -> str:
    """``message`` in ANSI colour; callers decide whether colour is wanted."""
    codes = ([str(_COLORS[fg])] if fg else []) + (["1"] if bold else [])
    return f"\x1b[{';'.join(codes)}m{message}\x1b[0m" if codes else message


def size(n: int | float | None) -> str:
    """Bytes in binary units: ``0 B``, ``812 B``, ``1.5 KiB``, ``23.4 MiB``."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def seconds(s: float | None) -> str:
    """A duration that reads at a glance (:func:`nbstep.core.durations.duration`)."""
    return duration(s)


def timestamp(epoch_us: int | float | None) -> str:
    """A UTC time as ``YYYY-MM-DD HH:MM:SS`` (the engine's messages use UTC too)."""
    if epoch_us is None or epoch_us != epoch_us:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(epoch_us) / 1e6))


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters, with ``…`` where it was cut."""
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    return line[: max(width - 1, 0)] + "…"


def first_line(source: str) -> str:
    """A cell's first line that is not blank or a comment, else its first line."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    for line in lines:
        if not line.startswith("#"):
            return line
    return lines[0] if lines else ""


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Columns separated by two spaces; ``right`` are the indexes to right-align."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i])
            for i in range(len(row))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def describe(value: Any, width: int = 60) -> str:
    """A one-line summary of a recorded value, for tables (``DataFrame 1000×3``)."""
    kind = type(value).__name__
    shape = getattr(value, "shape", None)
    module = type(value).__module__.split(".")[0]
    if isinstance(shape, tuple) and module in ("pandas", "numpy", "pyarrow", "polars"):
        dims = "×".join(str(d) for d in shape)
        extra = f" {value.dtype}" if module == "numpy" and hasattr(value, "dtype") else ""
        return f"{kind} {dims}{extra}"
    if isinstance(value, (dict, list, tuple, set, frozenset)) and len(repr(value)) > width:
        return shorten(f"{kind} of {len(value)}: {value!r}", width)
    return shorten(repr(value), width)
