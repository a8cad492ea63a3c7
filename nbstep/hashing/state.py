"""Digests of an object's state, through pickling: for values no structural key fits.

The structural key (:mod:`.recipe`) encodes data types it knows and refuses the rest
(a plain class instance, a model object, a list of functions). A ``%%step`` cell
reads and changes such objects all the time, so nbstep also digests them the way
pickle sees them: the pickle stream of the object, with every buffer it hands out of
band (numpy and pandas data) fed into the same digest. Two uses, two modes:

``state_digest`` (within one process)
    Did a cell change this object? Taken before the body runs and again after it;
    the digests differ exactly when what a pickle would record differs. xxh3-128,
    about ten times faster than sha256 on array data. Other notebook variables met
    inside the object are not descended into: they count by name (``refs``), are
    reported (``Digest.refs``), and the caller digests them on their own, so a change
    is found in the variable that holds it (``model["cfg"]["lr"] = 0.5`` changes
    ``cfg`` when ``model["cfg"] is cfg``). Functions, classes and modules inside count
    by identity: code does not change in place.
``canonical_digest`` (across processes)
    The input part of such a value, compared with a record made by another kernel:
    sha256, and nothing that varies between processes. Sets are ordered by their
    members' digests, functions and classes count by their code (``code_part``),
    nothing counts by ``id``.

A part that cannot be pickled (a lock, an open file, a connection inside an object)
counts by its type and identity (``state_digest``) or its type alone
(``canonical_digest``), and is listed in ``Digest.opaque``; when the object itself
cannot be pickled, ``Digest.digest`` is None. The kernel's own machinery (the shell,
its sockets and event loop) is never pickled: it counts the same way.

Pickling must not change what it digests, and the same state must give the same
digest. matplotlib breaks both: a ``CallbackRegistry`` writes ``next()`` of its id
counter into its pickle (every pickle differs, and the counter moves), and an
artist's pickle holds its ``stale`` flag and whether pyplot still manages its
figure, which drawing and showing change. So a registry counts by the callbacks it
would pickle, and an artist by its pickled state without those three entries.
"""

from __future__ import annotations

import copyreg
import hashlib
import pickle
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_CODE_TYPES = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
               types.ModuleType, types.BuiltinMethodType, types.MethodDescriptorType,
               types.WrapperDescriptorType, types.MethodWrapperType,
               types.ClassMethodDescriptorType, types.GetSetDescriptorType,
               types.MemberDescriptorType)
_SETS = (set, frozenset)
# The kernel's own machinery: never pickled to digest it (the shell, its sockets and
# event loop). Pickling a socket's wrapper can touch the socket itself, and none of
# it is the notebook's data: such an object counts by its type (and identity).
_MACHINERY = frozenset({
    "IPython", "ipykernel", "zmq", "jupyter_client", "jupyter_core", "tornado", "traitlets",
    "comm", "ipywidgets", "asyncio", "threading", "_thread", "socket", "ssl", "selectors",
    "concurrent", "multiprocessing", "subprocess", "nbstep", "matplotlib_inline",
})


# An artist's pickled state, without what drawing and showing change.
_ARTIST_TRANSIENT = ("_stale", "stale_callback", "_restore_to_pylab")


def _stable_state(obj: Any) -> Any:
    """The state to digest of a matplotlib object whose own pickle is not stable, or
    None. (Written as pickle writes an object with a state: the object is in the
    memo before its state, so the figure an axes holds back is a reference.)"""
    kind = type(obj)
    module = getattr(kind, "__module__", "") or ""
    if not module.startswith("matplotlib."):
        return None
    if kind.__name__ == "CallbackRegistry" and module == "matplotlib.cbook":
        pickled = getattr(obj, "_pickled_cids", set())
        return {signal: {cid: proxy() for cid, proxy in sorted(found.items()) if cid in pickled}
                for signal, found in sorted(obj.callbacks.items())}
    artist = sys.modules.get("matplotlib.artist")
    if artist is not None and isinstance(obj, artist.Artist):
        state = obj.__getstate__()
        for key in _ARTIST_TRANSIENT:
            state.pop(key, None)
        return state
    return None


def _token(*args: Any) -> None:
    """Stands for a function, class, module or opaque object inside a digested pickle
    (only its name is written: a digest is never loaded)."""


@dataclass
class Digest:
    """A digest of an object's state and what was met on the way."""

    digest: str | None
    refs: set[str] = field(default_factory=set)  # other notebook variables met inside
    opaque: list[str] = field(default_factory=list)  # types of parts that do not pickle


class _Sink:
    """The file a digest pickler writes to: straight into the hash."""

    __slots__ = ("write",)

    def __init__(self, h: Any) -> None:
        self.write = h.update


def root_owner(array: Any) -> Any:
    """The object that owns a numpy array's memory (its last ``.base``)."""
    owner = array
    while getattr(owner, "base", None) is not None:
        owner = owner.base
    return owner


def _is_ndarray(obj: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(obj, numpy.ndarray)


class _DigestPickler(pickle.Pickler):
    """Pickles into a hash; see the module docstring for what each mode writes."""

    def __init__(self, h: Any, root: Any, refs: dict[int, str], owners: dict[int, str],
                 code_part: Callable[[Any], str] | None) -> None:
        super().__init__(_Sink(h), protocol=5, buffer_callback=self._buffer)
        self.h = h
        self.root_id = id(root)
        self.refs = refs
        self.owners = owners
        self.code_part = code_part  # None: within one process (identity counts)
        self.found: set[str] = set()
        self.opaque: list[str] = []
        self.root_opaque = False
        self._reduces: dict[type, bool] = {}

    def _buffer(self, buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        self.h.update(b"\x00buffer:%d:" % raw.nbytes)
        self.h.update(raw)
        return False  # out of band: in the digest, not in the stream

    def persistent_id(self, obj: Any) -> Any:
        key = id(obj)
        if key != self.root_id:
            name = self.refs.get(key)
            if name is not None:
                self.found.add(name)
                return ("ref", name, key)  # the variable, and that very object
        if self.owners and _is_ndarray(obj):
            owner = self.owners.get(id(root_owner(obj)))
            if owner is not None:
                self.found.add(owner)  # a view of a notebook array's memory
        if self.code_part is not None and type(obj) in _SETS and obj:
            # Iteration order varies between processes; the members' digests do not.
            members = sorted(canonical_digest(m, self.code_part).digest or "?" for m in obj)
            return (type(obj).__name__, tuple(members))
        return None

    def reducer_override(self, obj: Any) -> Any:
        if obj is _token:
            return NotImplemented  # by its name, as any module-level function
        if isinstance(obj, _CODE_TYPES):
            if self.code_part is not None:
                return _token, ("code", self.code_part(obj))
            if hasattr(obj, "__self__") and not isinstance(obj, (type, types.ModuleType)):
                # A bound method is made anew at each attribute access: it counts by
                # its function (or name) and the object it is bound to.
                function = getattr(obj, "__func__", None)
                return _token, ("method", _name(obj), id(function), id(obj.__self__))
            return _token, ("code", _name(obj), id(obj))
        stable = _stable_state(obj)
        if stable is not None:
            return copyreg.__newobj__, (type(obj),), stable
        kind = type(obj)
        reduces = self._reduces.get(kind)
        if reduces is None:
            if (getattr(kind, "__module__", None) or "").partition(".")[0] in _MACHINERY:
                reduces = False
            else:
                try:
                    obj.__reduce_ex__(5)
                    reduces = True
                except Exception:  # what pickling it would raise: a lock, a file, a socket
                    reduces = False
            self._reduces[kind] = reduces
        if reduces:
            return NotImplemented
        name = _name(kind)
        self.opaque.append(name)
        if id(obj) == self.root_id:
            self.root_opaque = True
        if self.code_part is None:
            return _token, ("opaque", name, id(obj))
        return _token, ("opaque", name)


def _name(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _run(value: Any, h: Any, refs: dict[int, str], owners: dict[int, str],
         code_part: Callable[[Any], str] | None) -> tuple[bool, Digest]:
    """Pickle ``value`` into ``h``; (whether the digest stands for its state, details)."""
    pickler = _DigestPickler(h, value, refs, owners, code_part)
    try:
        pickler.dump(value)
    except RecursionError:
        return False, Digest(None, pickler.found, [*pickler.opaque, "too deeply nested"])
    except Exception as e:  # the object's own __reduce__ / __getstate__ raising
        return False, Digest(None, pickler.found,
                             [*pickler.opaque, f"{_name(type(value))}: {e}"])
    return not pickler.root_opaque, Digest(None, pickler.found, pickler.opaque)


def state_digest(value: Any, refs: dict[int, str] | None = None,
                 owners: dict[int, str] | None = None) -> Digest:
    """The state of ``value`` as pickle sees it, within this process (module docstring).

    ``refs``: ``{id(obj): name}`` of other notebook variables, counted by name.
    ``owners``: ``{id(memory owner): name}`` of notebook arrays; an array inside
    ``value`` that shares such memory names that variable in ``Digest.refs``.
    """
    import xxhash

    h = xxhash.xxh3_128()
    ok, result = _run(value, h, refs or {}, owners or {}, None)
    if ok:
        result.digest = "xxh3:" + h.hexdigest()
    return result


def canonical_digest(value: Any, code_part: Callable[[Any], str]) -> Digest:
    """The state of ``value`` as pickle sees it, the same in every process.

    ``code_part(obj)`` gives a function, class or module met inside its code's part.
    ``Digest.digest`` is None when ``value`` itself cannot be pickled.
    """
    h = hashlib.sha256()
    ok, result = _run(value, h, {}, {}, code_part)
    if ok:
        result.digest = "sha256:" + h.hexdigest()
    return result
