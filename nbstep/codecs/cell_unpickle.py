"""Loading a ``%%step`` record's variables, in a notebook or outside one.

In the notebook the record's functions get the notebook's namespace as globals, and
an earlier cell's variable the record refers to by name must be defined. Outside it
(``step.inspect()``, ``nbstep show``) a class the record names but this process cannot
find loads as an :class:`Unavailable` stand-in, and a referenced variable as a
:class:`NotebookVariable`.
"""

from __future__ import annotations

import functools
import io
import pickle
from typing import Any

from . import registry
from .cell_functions import LOADING_INTO
from .cell_pickle import NS_REFERENCE, NS_VIEW
from .cell_state import make_view

# Modules whose names records made by an earlier nbstep carry (for the functions
# that rebuild notebook functions), and where those live now.
RENAMED_MODULES = {"nbstep.cellstep": "nbstep.codecs.cell_functions"}


def decode_values(codec: str, data: Any, ns: dict[str, Any] | None = None,
                  lenient: bool = False) -> Any:
    """Load a blob of :func:`~.cell_pickle.encode_values`; its functions get ``ns`` as globals.

    ``lenient``: a class or function the blob names but this process cannot find
    (a class of an earlier notebook cell, read from the command line) loads as a
    stand-in (:class:`Unavailable`) instead of failing.
    """
    if codec != "pickle":
        return registry.decode(codec, data)
    token = LOADING_INTO.set(ns if ns is not None else {"__name__": "__main__"})
    try:
        if lenient:
            return _lenient_unpickler_class()(io.BytesIO(bytes(data))).load()
        return _unpickler_class()(io.BytesIO(data)).load()
    finally:
        LOADING_INTO.reset(token)


def _find_class(unpickler: pickle.Unpickler, module: str, name: str) -> Any:
    return pickle.Unpickler.find_class(unpickler, RENAMED_MODULES.get(module, module), name)


def _load_reference(pid: Any, lenient: bool = False) -> Any:
    """The notebook variable a pickle refers to by name (``Context.references``), or a
    view of its array."""
    if isinstance(pid, tuple) and len(pid) == 6 and pid[0] == NS_VIEW:
        anchor = _load_reference((NS_REFERENCE, pid[1]), lenient)
        if isinstance(anchor, NotebookVariable):
            return anchor
        return make_view(anchor, *pid[2:])
    if not (isinstance(pid, tuple) and len(pid) == 2 and pid[0] == NS_REFERENCE):
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    name = pid[1]
    ns = LOADING_INTO.get() or {}
    if name in ns:
        return ns[name]
    if lenient:
        return NotebookVariable(name)
    raise LookupError(f"the record refers to the notebook variable `{name}` (an earlier "
                      "cell's object), which is not defined; run the cell that defines it "
                      "first")



@functools.cache
def _unpickler_class() -> type:
    class CellUnpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return _load_reference(pid)

        def find_class(self, module: str, name: str) -> Any:
            return _find_class(self, module, name)

    return CellUnpickler


class StandIn:
    """Stands for something a record names that this process does not have."""

    shown = "<{name}>"

    def __init__(self, name: str) -> None:
        self.name = self.__name__ = name

    def __repr__(self) -> str:
        return self.shown.format(name=self.name)


class NotebookVariable(StandIn):
    """An earlier cell's variable a record refers to, read outside the notebook."""

    shown = "<notebook variable `{name}`>"


class ModuleName(StandIn):
    """A module a record names but this process has not imported."""

    shown = "<module '{name}' (not imported)>"


class Unavailable:
    """Stands for an object whose class a record names but this process cannot find.

    Typically a class defined in an earlier notebook cell, read from the command line.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._nbstep_args = (args, kwargs)

    def __setstate__(self, state: Any) -> None:
        self._nbstep_state = state

    def __repr__(self) -> str:
        kind = type(self)
        name = f"{kind.__module__}.{kind.__qualname__}"
        return f"<{name} object: its class is defined in the notebook>"


def _unavailable(module: str, name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (Unavailable,),
                {"__module__": module, "__qualname__": name})



@functools.cache
def _lenient_unpickler_class() -> type:
    class LenientUnpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return _load_reference(pid, lenient=True)

        def find_class(self, module: str, name: str) -> Any:
            try:
                found = _find_class(self, module, name)
            except (AttributeError, ImportError):
                return _unavailable(module, name)
            if module.startswith("cloudpickle") and name in _TRACKER_ARGUMENT:
                return _untracked(found, _TRACKER_ARGUMENT[name])
            return found

    return LenientUnpickler


# cloudpickle gives a class it pickled by value back as the very class when it is
# still alive in this process, and sets the recorded attributes on it again. Reading
# a record (step.inspect) must not change the notebook's classes: a copy then.
_TRACKER_ARGUMENT = {"_make_skeleton_class": 4, "_make_skeleton_enum": 5}


def _untracked(maker: Any, index: int) -> Any:
    def make(*args: Any) -> Any:
        if len(args) > index:
            args = (*args[:index], None, *args[index + 1:])
        return maker(*args)

    return make
