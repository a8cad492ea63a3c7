"""The frame ``step.inspect()`` returns: a pandas DataFrame that reads at a glance.

Its data are plain (durations in seconds as floats, times as UTC timestamps, the
full values as objects), so sorting, filtering and sums work as on any frame; only
its display differs: durations as ``79 µs`` or ``1.2 s``, times to the second, and
a value column on one line. Imported only by :mod:`.inspect` (``step.inspect``
imports pandas anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd  # noqa: TID253 - loaded only by step.inspect, which needs pandas

from nbstep.core.durations import duration

from .summary import summarize

DURATIONS = ("duration", "saved")
TIMES = ("recorded_at",)
VALUES = ("result",)
# The value column is a summary already (about 60 characters, a cell's up to 100):
# show it whole rather than cut at pandas' default 50.
MAX_COLWIDTH = 110


class StepsFrame(pd.DataFrame):
    """A DataFrame of records whose repr (text and HTML) is readable.

    Every pandas operation works and keeps the class (so a filtered frame still reads
    well); ``pd.DataFrame(frame)`` is a plain one.
    """

    _metadata: list[str] = []

    @property
    def _constructor(self) -> Callable[..., StepsFrame]:
        return StepsFrame

    def formatters(self) -> dict[str, Callable[[Any], str]]:
        """How the duration and time columns are shown (only the rows on screen)."""
        shown: dict[str, Callable[[Any], str]] = {}
        for column in self.columns:
            if column in DURATIONS:
                shown[column] = _duration_text
            elif column in TIMES:
                shown[column] = _time_text
        return shown

    def shown(self) -> pd.DataFrame:
        """A plain frame to display: the full values as their one-line summaries.

        (pandas prints a DataFrame held in a cell whole, whatever the formatter.) Only
        the rows pandas can show are summarized: a long frame shows its ends.
        """
        plain = pd.DataFrame(self)
        n = len(plain)
        limit = pd.get_option("display.max_rows")
        if limit and n > limit:
            ends = max(limit, pd.get_option("display.min_rows") or 0)
            rows: Any = [*range(min(ends, n)), *range(max(n - ends, ends), n)]
        else:
            rows = range(n)
        for column in VALUES:
            if column in plain.columns:
                values = plain[column].to_numpy()
                summaries = _objects([""] * n)
                for i in rows:
                    summaries[i] = summarize(values[i])
                plain = plain.assign(**{column: summaries})
        return plain

    def __repr__(self) -> str:
        if self._info_repr():  # pandas' own choice (display.large_repr = "info")
            return super().__repr__()
        params = _repr_params()
        params["max_colwidth"] = max(params.get("max_colwidth") or 0, MAX_COLWIDTH)
        return self.shown().to_string(formatters=self.formatters(), **params)

    def _repr_html_(self) -> str | None:
        if self._info_repr() or not pd.get_option("display.notebook_repr_html"):
            return super()._repr_html_()
        max_rows = pd.get_option("display.max_rows")
        if max_rows and len(self) > max_rows:  # as pandas: a long frame shows min_rows
            max_rows = pd.get_option("display.min_rows") or max_rows
        with pd.option_context("display.max_colwidth", MAX_COLWIDTH):
            return self.shown().to_html(
                formatters=self.formatters(), notebook=True, max_rows=max_rows,
                max_cols=pd.get_option("display.max_columns"),
                show_dimensions=pd.get_option("display.show_dimensions"))


def _repr_params() -> dict[str, Any]:
    """pandas' display options, as ``DataFrame.__repr__`` reads them."""
    from pandas.io.formats import format as fmt  # noqa: TID253

    return dict(fmt.get_dataframe_repr_params())


def _objects(values: list[Any]) -> Any:
    import numpy as np  # noqa: TID253 - pandas has loaded it

    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        column[i] = value
    return column


def _duration_text(seconds: Any) -> str:
    """A duration as every nbstep message writes it (``79 µs``, ``1.2 s``); blank
    where unknown."""
    return duration(None if seconds is None else float(seconds), unknown="")


def _time_text(moment: Any) -> str:
    if moment is None or moment is pd.NaT or moment != moment:
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S")
