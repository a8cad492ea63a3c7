"""One way to write a duration, for every message nbstep prints.

``79 µs``, ``12 ms``, ``1.2 s``, ``42 s``, ``2 min 5 s``, ``2 h 3 min``: the unit that
keeps two or three significant digits, never scientific notation. A value is
rounded first and then placed, so 999.7 µs reads ``1 ms`` and 59.7 s ``1 min 0 s``.
"""

from __future__ import annotations

import math

__all__ = ["duration"]


def duration(seconds: float | None, unknown: str = "-") -> str:
    """``seconds`` as a person reads it; ``unknown`` for None, NaN or infinity.

    Zero, or a negative value (clocks stepping back), reads ``0 s``.
    """
    if seconds is None or not math.isfinite(seconds):
        return unknown
    s = max(float(seconds), 0.0)
    if s == 0:
        return "0 s"  # nothing at all, as in "saved 0 s"
    micro = round(s * 1e6)
    if micro < 1000:
        return f"{micro} µs"
    milli = round(s * 1e3)
    if milli < 1000:
        return f"{milli} ms"
    if round(s, 1) < 10:
        return f"{round(s, 1):.1f} s"
    whole = round(s)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s"
    minutes = round(s / 60)
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min"
