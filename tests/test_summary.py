"""The one-line value summaries and durations of ``step.inspect()``'s display."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nbstep.engine.steps_frame import _duration_text
from nbstep.engine.summary import summarize, summarize_variables


class Loud:
    def __repr__(self):
        raise RuntimeError("no")


@pytest.mark.parametrize(("value", "shown"), [
    (pd.DataFrame({"a": range(1000), "b": 1.0, "c": "x"}), "DataFrame 1,000×3"),
    (pd.Series([1.5, 2.5], name="s"), "Series 2 float64"),
    (np.zeros((100, 10)), "ndarray float64 (100, 10)"),
    (np.arange(3), "ndarray int64 (3,)"),
    ({"a": pd.DataFrame(), "b": pd.DataFrame(), "c": pd.DataFrame()}, "dict of 3: a, b, c"),
    (list(range(12)), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]"),
    (list(range(100)), "list of 100"),
    ([pd.DataFrame()], "list of 1"),
    ({"lr": 0.1, "cfg": {"depth": 3}}, "{'lr': 0.1, 'cfg': {'depth': 3}}"),
    ((1, "a"), "(1, 'a')"),
    ("x" * 100, "'" + "x" * 58 + "…"),
    (None, "None"),
    (3.5, "3.5"),
    (len, "function len"),
    (pd.DataFrame, "class DataFrame"),
    (Loud(), "Loud (cannot be shown: RuntimeError)"),
])
def test_summaries(value, shown):
    assert summarize(value) == shown
    assert len(summarize(value)) <= 60


def test_a_figure_is_a_figure():
    from matplotlib.figure import Figure

    assert summarize(Figure()) == "Figure"


def test_a_cells_variables_each_summarized():
    variables = {"df": pd.DataFrame({"a": range(1000), "b": 1, "c": 2}), "n": 5}
    assert summarize_variables(variables) == "df: DataFrame 1,000×3, n: 5"
    assert summarize_variables({}) == "(no variables)"
    many = {f"v{i}": list(range(50)) for i in range(20)}
    assert len(summarize_variables(many)) == 100 and summarize_variables(many).endswith("…")


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.000079, "79 µs"), (0.0042, "4 ms"), (1.23, "1.2 s"), (125, "2 min 5 s"),
    (3725, "1 h 2 min"), (None, ""), (math.nan, ""),
])
def test_the_frame_writes_durations_as_every_message_does(seconds, shown):
    # The frame's column uses the one formatter (tests/test_durations.py has its
    # edges), with a blank where a duration is unknown.
    assert _duration_text(seconds) == shown
