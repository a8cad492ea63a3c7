"""Encoding a ``%%step`` cell's variables: one pickle, shared objects stay shared.

:func:`encode_values` pickles every variable (and the displayed result) together, so
objects shared between variables stay shared (``fig, ax = plt.subplots()``,
``handlers = {"f": f}``), with a cloudpickle subclass that knows the notebook:

- a function or class of an earlier cell: by name (:meth:`Context.by_name`);
- a function whose globals are the notebook's namespace (defined in a cell, a
  lambda, a decorator's wrapper): by value, without its globals
  (:mod:`.cell_functions`);
- an object that *is* the value of a notebook variable the cell did not bind (a
  default ``c=conn``, a large array in a closure): by that variable's name
  (:meth:`Context.references`), looked up in the namespace on replay;
- an array that is a view of a notebook variable's array (``x2[:2, :2]``): as a view
  of that variable (by name when the record does not hold it, in the same pickle
  when it does), so it shares that memory again after a replay
  (:func:`.cell_state.make_view`);
- a class of an installed module that is not imported yet under its own name
  (numpy's ``recarray`` lives in ``numpy.rec``, imported lazily): by name, as pickle
  does for every imported class, never by value;
- everything else as cloudpickle does (classes of ``__main__`` by value, library
  objects by reference).
"""

from __future__ import annotations

import functools
import importlib
import io
import pickle
import sys
import types
from typing import Any

from nbstep.core.names import is_ipython_name, is_shell_value
from nbstep.errors import NotPersistable

from .cell_functions import (
    LRU_CACHE_WRAPPER,
    _make_cached_property,
    _make_lru_cache,
    reduce_function,
)
from .cell_state import make_view, view_of

_MISSING = object()
NOT_REFERENCED = (int, float, complex, str, bytes, tuple, frozenset, range, type(None),
                   type(Ellipsis), type(NotImplemented), types.ModuleType, types.FunctionType,
                   types.BuiltinFunctionType, type)


NS_REFERENCE = "nbstep-ns"
NS_VIEW = "nbstep-view"



class Context:
    """What pickling a cell's values needs to know about the notebook."""

    def __init__(self, ns: dict[str, Any] | None = None, before: dict[str, Any] | None = None,
                 user_modules: set[str] | None = None, hidden: dict[str, Any] | None = None,
                 recorded: set[str] | None = None) -> None:
        self.ns = ns
        self.before = before or {}
        self.user_modules = user_modules or {"__main__"}
        self.hidden = hidden or {}
        self.recorded = recorded or set()  # the names the record restores
        self.wrote_code = False  # code objects are specific to a Python version
        self.referenced: set[str] = set()  # names the last pickle refers to
        self._anchors: list[tuple[str, Any, bool]] | None = None

    def anchors(self) -> list[tuple[str, Any, bool]]:
        """``(name, array, referenced)`` of the notebook's C-contiguous arrays: what a
        view in the record may be a view of (``referenced``: stored by name)."""
        if self._anchors is None:
            numpy = sys.modules.get("numpy")
            found: list[tuple[str, Any, bool]] = []
            if numpy is not None and self.ns is not None:
                refs = self.references()
                for name, value in self.ns.items():
                    if (isinstance(value, numpy.ndarray) and not is_ipython_name(name)
                            and value.flags.c_contiguous):
                        found.append((name, value, refs.get(id(value)) == name))
            self._anchors = found
        return self._anchors

    def view(self, array: Any) -> tuple[str, Any, bool, tuple[Any, ...]] | None:
        """The notebook array ``array`` is a view of: (name, anchor, referenced,
        (offset, shape, strides)), else None."""
        if array.base is None:
            return None
        for name, anchor, referenced in self.anchors():
            geometry = view_of(array, anchor)
            if geometry is not None:
                return name, anchor, referenced, geometry
        return None

    def references(self) -> dict[int, str]:
        """``{id(value): name}`` of the notebook's variables a pickle refers to by name.

        Those the namespace held before the cell ran, still bound to the same object,
        and that the record does not restore itself: a default, closure or decorator
        object holding an earlier cell's connection, lock or large array is stored as
        that variable's name, and is that very object after a replay. Immutable atoms
        (whose identity means nothing: small ints, interned strings, ``()``), modules,
        functions and classes are left out.
        """
        if self.ns is None:
            return {}
        refs: dict[int, str] = {}
        hidden = self.hidden
        for name, value in self.before.items():
            if (name in self.recorded or is_ipython_name(name)
                    or self.ns.get(name, _MISSING) is not value
                    or (name in hidden and hidden[name] is value)
                    or isinstance(value, NOT_REFERENCED)
                    or is_shell_value(name, value)):
                continue
            refs.setdefault(id(value), name)
        return refs

    def by_name(self, obj: Any) -> bool:
        """A function or class of an earlier cell, found by its name: store the name.

        So an object of a class defined in an earlier cell comes back as an instance
        of that very class (the notebook runs that cell before this one). True when
        ``obj``'s qualified name leads to it from a name the namespace already held,
        with the same object, before this cell ran.
        """
        if getattr(obj, "__module__", None) not in self.user_modules:
            return False
        qualname = getattr(obj, "__qualname__", None)
        if not isinstance(qualname, str) or "<" in qualname:
            return False
        first, *rest = qualname.split(".")
        found = self.before.get(first, _MISSING)
        if found is _MISSING or (self.ns is not None and self.ns.get(first) is not found):
            return False
        for part in rest:
            found = getattr(found, part, _MISSING)
        return found is obj

    def named_here(self, obj: Any) -> str | None:
        """Why ``obj`` would be pickled by a name only this cell defines, else None.

        Objects whose ``__reduce__`` is their name (what a decorator such as
        ``@functools.singledispatchmethod`` or a JIT compiler returns): the next kernel
        would look the name up before anything defined it.
        """
        if isinstance(obj, (types.FunctionType, type)) or type(obj) is LRU_CACHE_WRAPPER:
            return None  # pickled by value
        if getattr(obj, "__module__", None) not in self.user_modules:
            return None
        if not isinstance(getattr(obj, "__qualname__", None), str) or self.by_name(obj):
            return None
        try:
            reduced = obj.__reduce_ex__(5)
        except Exception:
            return None  # pickling it will say what is wrong
        if not isinstance(reduced, str):
            return None
        return ("pickle stores it by its name, and this very cell defines that name, so a "
                "new kernel could not find it")


@functools.cache
def _cell_pickler_class() -> type:
    import cloudpickle

    class CellPickler(cloudpickle.Pickler):
        """cloudpickle, but the notebook's own functions keep the notebook as globals.

        - a function or class of an earlier cell: by name (:meth:`Context.by_name`);
        - a function whose globals are the notebook's namespace (defined in a cell,
          a lambda, a decorator's wrapper): by value, with its code, defaults,
          closure and attributes, and *no* copy of its globals; it gets the
          namespace it is loaded into (:func:`_make_function`);
        - classes defined in the cell, and everything else: as cloudpickle does
          (classes of ``__main__`` by value, library objects by reference).
        """

        def __init__(self, file: Any, context: Context) -> None:
            super().__init__(file, protocol=5)
            self.context = context
            self.refs = context.references()
            self.referenced: set[str] = set()

        def persistent_id(self, obj: Any) -> Any:
            # An earlier cell's variable, by its name (see Context.references).
            name = self.refs.get(id(obj))
            if name is None:
                if _is_view(obj):
                    view = self.context.view(obj)
                    if view is not None and view[2]:
                        # A view of an earlier cell's array: of that very array.
                        self.referenced.add(view[0])
                        return (NS_VIEW, view[0], *view[3], obj.dtype)
                return None
            self.referenced.add(name)
            return (NS_REFERENCE, name)

        def reducer_override(self, obj: Any) -> Any:
            if _is_view(obj):
                view = self.context.view(obj)
                if view is not None and not view[2]:
                    # A view of an array the record holds too: of that one, shared.
                    return make_view, (view[1], *view[3], obj.dtype)
            if isinstance(obj, (types.FunctionType, type)):
                context = self.context
                if context.by_name(obj) or _importable_by_name(obj, context.user_modules):
                    return NotImplemented  # pickle's own save_global
                if (isinstance(obj, types.FunctionType) and context.ns is not None
                        and obj.__globals__ is context.ns):
                    context.wrote_code = True
                    return reduce_function(obj)
                reduced = super().reducer_override(obj)
                if reduced is not NotImplemented:
                    context.wrote_code = True
                return reduced
            elif type(obj) is functools.cached_property:
                # It holds a lock before Python 3.12; its state is the function.
                return _make_cached_property, (obj.func, obj.attrname)
            elif type(obj) is LRU_CACHE_WRAPPER and not self.context.by_name(obj):
                # `@lru_cache def f`: pickle would store it by a name this cell defines.
                parameters = obj.cache_parameters()
                return _make_lru_cache, (obj.__wrapped__, parameters["maxsize"],
                                         parameters["typed"])
            return super().reducer_override(obj)

    return CellPickler


def _is_view(obj: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and type(obj) is numpy.ndarray and obj.base is not None


def _importable_by_name(obj: Any, user_modules: set[str]) -> bool:
    """An installed module's class or function whose module is not imported yet by its
    own name (cloudpickle would pickle it by value, a copy of the class)."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if (not isinstance(module_name, str) or not isinstance(qualname, str) or "<" in qualname
            or module_name in user_modules or module_name in sys.modules
            or module_name.split(".")[0] not in sys.modules):
        return False
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:  # not importable after all: cloudpickle decides
        return False
    return found is obj


def encode_values(payload: Any, context: Context | None = None) -> tuple[str, bytes]:
    """Encode a cell's variables together, so objects they share stay shared.

    One pickle (protocol 5) by :func:`_cell_pickler_class`: functions and classes the
    cell defined go by value, those of earlier cells by name.
    """
    buffer = io.BytesIO()
    context = context or Context()
    try:
        pickler = _cell_pickler_class()(buffer, context)
        pickler.dump(payload)
        context.referenced = pickler.referenced
    except RecursionError as e:
        raise NotPersistable(f"too deeply nested to pickle ({e})") from e
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        # "cannot pickle 'sqlite3.Connection' object"
        raise NotPersistable(str(e)) from e
    except Exception as e:  # a __reduce__ of the value's own raising
        raise NotPersistable(f"{type(e).__name__}: {e}") from e
    return "pickle", buffer.getvalue()


def why_not(value: Any, context: Context | None = None) -> str | None:
    """Why a value cannot be persisted, or None when it can."""
    try:
        encode_values(value, context)
    except NotPersistable as e:
        return str(e).rstrip(".")
    return None
