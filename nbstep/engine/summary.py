"""One short line about a recorded value, for ``step.inspect()``'s ``value`` column.

``DataFrame 1,000×3``, ``ndarray float64 (100, 10)``, ``dict of 3: a, b, c``,
``list of 12``, ``Figure``, else the value's repr on one line, cut to about 60
characters. A ``%%step`` cell's value is its variables, each with its own summary:
``df: DataFrame 1,000×3, n: 5``. Nothing here imports a data library: a value's
type says what it is.
"""

from __future__ import annotations

import types
from typing import Any

WIDTH = 60
# A %%step cell lists several variables: each gets a shorter summary.
CELL_WIDTH = 100
_PART_WIDTH = 32

# Modules whose 2-D objects read as rows × columns (a frame, a table).
_TABULAR = ("pandas", "polars", "pyarrow", "modin", "dask")


def summarize(value: Any, width: int = WIDTH) -> str:
    """One line of at most ``width`` characters about ``value``."""
    try:
        return _shorten(_summary(value, width), width)
    except Exception as e:  # a value's own __repr__, __len__ or shape raising
        return _shorten(f"{type(value).__name__} (cannot be shown: {type(e).__name__})", width)


def summarize_variables(variables: dict[str, Any], width: int = CELL_WIDTH) -> str:
    """A ``%%step`` cell's variables: ``name: summary`` each, in the order given."""
    if not variables:
        return "(no variables)"
    parts = [f"{name}: {summarize(value, _PART_WIDTH)}" for name, value in variables.items()]
    return _shorten(", ".join(parts), width)


def _summary(value: Any, width: int) -> str:
    kind = type(value)
    name = kind.__name__
    module = kind.__module__.split(".")[0]
    if module == "matplotlib" and name == "Figure":
        return "Figure"
    shape = getattr(value, "shape", None) if module != "builtins" else None
    if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
        dtype = getattr(value, "dtype", None)
        if module in _TABULAR and len(shape) == 2:
            return f"{name} {_count(shape[0])}×{_count(shape[1])}"
        if module in _TABULAR and len(shape) == 1:
            return f"{name} {_count(shape[0])}" + (f" {dtype}" if dtype is not None else "")
        if dtype is not None:
            return f"{name} {dtype} {tuple(shape)}"
    if isinstance(value, type):
        return f"class {value.__qualname__}"
    if isinstance(value, _FUNCTIONS):
        return f"function {getattr(value, '__qualname__', name)}"
    if isinstance(value, dict):
        return _container(value, f"dict of {_count(len(value))}", list(value), width)
    if isinstance(value, (list, tuple, set, frozenset)):
        return _container(value, f"{name} of {_count(len(value))}", None, width)
    return _one_line(value)


def _container(value: Any, label: str, keys: list[Any] | None, width: int) -> str:
    """Plain short data as its repr; anything else as its length (and a dict's keys)."""
    if len(value) <= _PLAIN_ITEMS and _plain(value, 2):
        shown = _one_line(value)
        if len(shown) <= width:
            return shown
    if not keys:
        return label
    return f"{label}: " + ", ".join(str(k) for k in keys)


_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.MethodType)
_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_PLAIN_ITEMS = 20


def _plain(value: Any, depth: int) -> bool:
    """Scalars, and small containers of them (``depth`` levels): their repr is cheap."""
    if isinstance(value, _SCALARS):
        return True
    if depth == 0 or not isinstance(value, (dict, list, tuple, set, frozenset)):
        return False
    if len(value) > _PLAIN_ITEMS:
        return False
    items = [*value, *value.values()] if isinstance(value, dict) else list(value)
    return all(_plain(item, depth - 1) for item in items)


def _one_line(value: Any) -> str:
    return " ".join(repr(value).split())


def _count(n: int) -> str:
    return f"{n:,}"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"
