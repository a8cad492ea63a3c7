"""How a notebook's functions travel in a ``%%step`` record, and come back.

A function whose globals are the notebook's namespace is pickled as
``(maker, args, state)`` (:func:`reduce_function`): its code, defaults, closure and
attributes, and *no* copy of its globals; when the record loads, it gets the
namespace it is loaded into (``LOADING_INTO``). The makers here are named in every
pickle by their module path, so they stay at this path, or get an entry in
``cell_unpickle.RENAMED_MODULES`` when they move (records made before must load).
"""

from __future__ import annotations

import contextvars
import functools
import types
from typing import Any

# The namespace functions get as globals while a record loads (None: a new one).
LOADING_INTO: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "nbstep_loading_into", default=None)


class _EmptyCell:
    """Stands for an empty closure cell in a pickled function's state."""


def reduce_function(func: types.FunctionType) -> tuple[Any, ...]:
    """A notebook function as (maker, args, state): the state, set after the function
    exists, may refer back to it (recursion, a decorator's wrapper and its original)."""
    closure = []
    for cell in func.__closure__ or ():
        try:
            closure.append(cell.cell_contents)
        except ValueError:
            closure.append(_EmptyCell)
    state = {
        "qualname": func.__qualname__,
        "module": func.__module__,
        "doc": func.__doc__,
        "defaults": func.__defaults__,
        "kwdefaults": func.__kwdefaults__,
        "annotations": func.__annotations__,
        "dict": dict(func.__dict__),
        "closure": closure,
    }
    type_params = getattr(func, "__type_params__", None)
    if type_params:
        state["type_params"] = type_params
    # cloudpickle stores code under the file name "<dynamic-code>"; keep the cell's
    # name, under which a replay registers the cell's text (inspect.getsource,
    # tracebacks, and so the hash of a replayed function equals the original's).
    code = func.__code__
    return (_make_function, (code, func.__name__, len(closure), code.co_filename), state,
            None, None, _set_function_state)


LRU_CACHE_WRAPPER = type(functools.lru_cache(lambda: None))


def _make_lru_cache(func: Any, maxsize: int | None, typed: bool) -> Any:
    return functools.lru_cache(maxsize=maxsize, typed=typed)(func)


def _make_cached_property(func: Any, attrname: str | None) -> functools.cached_property:
    made = functools.cached_property(func)
    if attrname is not None:
        made.__set_name__(None, attrname)  # set by the class statement, not by setattr
    return made


def _empty_cell() -> Any:
    if False:  # pragma: no cover - makes `value` a free variable of the lambda
        value = None
    return (lambda: value).__closure__[0]  # type: ignore[union-attr]


def _make_function(code: types.CodeType, name: str, free: int,
                   filename: str | None = None) -> types.FunctionType:
    ns = LOADING_INTO.get()
    if ns is None:
        ns = {"__name__": "__main__"}
    if filename and code.co_filename != filename:
        code = _with_filename(code, filename)
    closure = tuple(_empty_cell() for _ in range(free)) if free else None
    return types.FunctionType(code, ns, name, None, closure)


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    """``code`` and the code objects nested in it, compiled from ``filename``."""
    consts = tuple(_with_filename(c, filename) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _set_function_state(func: types.FunctionType, state: dict[str, Any]) -> None:
    func.__qualname__ = state["qualname"]
    func.__module__ = state["module"]
    func.__doc__ = state["doc"]
    func.__defaults__ = state["defaults"]
    func.__kwdefaults__ = state["kwdefaults"]
    func.__annotations__ = state["annotations"]
    func.__dict__.update(state["dict"])
    if "type_params" in state:
        func.__type_params__ = state["type_params"]  # type: ignore[attr-defined]
    for cell, value in zip(func.__closure__ or (), state["closure"], strict=True):
        if value is not _EmptyCell:
            cell.cell_contents = value
