"""Objects a cell changed in place, recorded as their state and put back into them.

A cell that changes an earlier cell's object without rebinding it (``clf.fit(X)``
inside ``train(clf)``, ``items.append(3)``, ``x2_sub[0, 0] = 99``) leaves every holder
of that object seeing the change: ``model is clf``, ``holder[0] is clf``. A replay
that rebound the name to a new object would break that, so where it can the record
keeps the object's *state* and a replay writes it into the object the notebook holds
(:func:`apply_state`):

===========  ===================================================  =================
kind         objects                                              state, put back by
===========  ===================================================  =================
``list``     list, collections.deque                              the items: ``[:]=``
``dict``     dict, OrderedDict, defaultdict, Counter              the items: clear, update
``set``      set                                                  the members
``bytes``    bytearray                                            the bytes
``array``    numpy.ndarray                                        a copy: ``a[...] =``
``object``   instances of the notebook's or the project's classes its ``__getstate__`` or
             (any ``__getstate__``), and of other classes that   ``__dict__`` and slots:
             keep their state in ``__dict__`` and pickle by it    ``__setstate__`` or an
                                                                  update
===========  ===================================================  =================

Anything else (a pandas object, a matplotlib figure, a library object with its own
pickling) is recorded whole and rebound; :func:`inplace_kind` says which is which.
When the object found at replay is not of the recorded class (or an array of another
shape), the recorded state is put into a new object, which is rebound.

Views: an array that shares the memory of a notebook variable's array (``x2[:2, :2]``)
is recorded as a view of it (:func:`make_view`), so it is one again after a replay.
"""

from __future__ import annotations

import copyreg
import sys
import types
from collections.abc import Callable
from typing import Any

_DICTS = {"dict", "OrderedDict", "defaultdict", "Counter"}


def _kind_name(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def inplace_kind(obj: Any, user_class: Callable[[type], bool] | None = None) -> str | None:
    """How :func:`apply_state` can put a state back into ``obj``, or None (rebind it).

    ``user_class(cls)``: whether ``cls`` is the notebook's or the project's (its own
    ``__setstate__`` is then trusted with an object that exists).
    """
    kind = type(obj)
    module = kind.__module__
    if isinstance(obj, (type, types.ModuleType, types.FunctionType)):
        return None  # their attributes are tracked one by one (:mod:`nbstep.notebook.tracking`)
    if kind is list or (module == "collections" and kind.__name__ == "deque"):
        return "list"
    if kind is dict or (module == "collections" and kind.__name__ in _DICTS):
        return "dict"
    if kind is set:
        return "set"
    if kind is bytearray:
        return "bytes"
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, numpy.ndarray):
        return "array" if not getattr(obj, "__dict__", None) else None
    if not (hasattr(obj, "__dict__") or copyreg._slotnames(kind)):  # type: ignore[attr-defined]
        return None
    if kind.__reduce_ex__ is not object.__reduce_ex__ or kind.__reduce__ is not object.__reduce__:
        return None  # pickles itself its own way: recorded whole
    own_state = (getattr(kind, "__setstate__", None) is not None
                 or kind.__getstate__ is not object.__getstate__)
    if own_state and not (user_class is not None and user_class(kind)):
        return None  # a library's own __setstate__ may expect a fresh object
    return "object"


def capture_state(obj: Any, kind: str) -> tuple[str, Any, Any]:
    """``(kind, class, state)`` of an object :func:`inplace_kind` accepted."""
    if kind == "list":
        return kind, type(obj), list(obj)
    if kind == "dict":
        return kind, type(obj), (dict(obj), getattr(obj, "default_factory", None))
    if kind == "set":
        return kind, type(obj), set(obj)
    if kind == "bytes":
        return kind, type(obj), bytes(obj)
    if kind == "array":
        return kind, type(obj), obj.copy()
    getstate = getattr(obj, "__getstate__", None)
    state = getstate() if getstate is not None else dict(obj.__dict__)
    return kind, type(obj), state


def apply_state(old: Any, recorded: tuple[str, Any, Any]) -> Any:
    """Put a recorded state into ``old`` and return it, or return a new object holding
    the state when ``old`` cannot take it (another class, an array of another shape)."""
    kind, cls, state = recorded
    if kind == "array":
        if (type(old) is cls and old.shape == state.shape and old.dtype == state.dtype
                and old.flags.writeable):
            old[...] = state
            return old
        return state
    if type(old) is not cls:
        old = _new(kind, cls, state)
        return old
    if kind == "list":
        if isinstance(old, list):
            old[:] = state
        else:
            old.clear()
            old.extend(state)
    elif kind == "dict":
        items, factory = state
        old.clear()
        old.update(items)
        if factory is not None:
            old.default_factory = factory
    elif kind == "set":
        old.clear()
        old.update(state)
    elif kind == "bytes":
        old[:] = state
    else:
        _set_object_state(old, state)
    return old


def _new(kind: str, cls: Any, state: Any) -> Any:
    if kind == "dict":
        items, factory = state
        made = cls(factory) if factory is not None else cls()
        made.update(items)
        return made
    if kind in ("list", "set", "bytes"):
        return cls(state)
    made = cls.__new__(cls)
    _set_object_state(made, state)
    return made


def _set_object_state(obj: Any, state: Any) -> None:
    """What pickle's BUILD does with a state, on an object that exists."""
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state is not None:
        obj.__dict__.clear()
        obj.__dict__.update(state)
    for name, value in (slots or {}).items():
        setattr(obj, name, value)


def make_view(anchor: Any, offset: int, shape: tuple[int, ...], strides: tuple[int, ...],
              dtype: Any) -> Any:
    """An array over ``anchor``'s memory, ``offset`` bytes from its start."""
    import numpy

    return numpy.ndarray(shape, dtype=dtype, buffer=anchor, offset=offset, strides=strides)


def view_of(array: Any, anchor: Any) -> tuple[int, tuple[int, ...], tuple[int, ...]] | None:
    """``(offset, shape, strides)`` when ``array`` lies inside C-contiguous ``anchor``'s
    memory (so :func:`make_view` can make it again), else None."""
    import numpy

    if array is anchor or not anchor.flags.c_contiguous or anchor.size == 0:
        return None
    byte_bounds = getattr(numpy, "byte_bounds", None) or numpy.lib.array_utils.byte_bounds
    low, high = byte_bounds(array)
    start, end = byte_bounds(anchor)
    if not (start <= low and high <= end):
        return None
    offset = array.__array_interface__["data"][0] - anchor.__array_interface__["data"][0]
    if offset < 0:
        return None
    return offset, tuple(array.shape), tuple(array.strides)
