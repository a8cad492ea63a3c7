"""The one duration formatter (nbstep/core/durations.py): units and their edges."""

from __future__ import annotations

import math

import pytest

from nbstep.core.durations import duration


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"),
    (4e-7, "0 µs"),
    (7.92e-05, "79 µs"),
    (0.0009994, "999 µs"),
    (0.0009996, "1 ms"),  # rounds to 1000 µs: the next unit
    (0.012, "12 ms"),
    (0.9994, "999 ms"),
    (0.9996, "1.0 s"),
    (1.0, "1.0 s"),
    (1.23, "1.2 s"),
    (9.94, "9.9 s"),
    (9.96, "10 s"),  # not "10.0 s"
    (42.4, "42 s"),
    (59.4, "59 s"),
    (59.6, "1 min 0 s"),  # not "60 s"
    (60, "1 min 0 s"),
    (125, "2 min 5 s"),
    (3599.4, "59 min 59 s"),
    (3599.6, "1 h 0 min"),
    (7380, "2 h 3 min"),
    (7409, "2 h 3 min"),
    (7411, "2 h 4 min"),
    (100 * 3600, "100 h 0 min"),
    (-0.5, "0 s"),  # a clock that stepped back
])
def test_units_and_their_edges(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize("seconds", [None, math.nan, math.inf])
def test_unknown(seconds):
    assert duration(seconds) == "-"
    assert duration(seconds, unknown="unknown") == "unknown"
