"""Turning a step's value into bytes and back, faithfully.

``encode(value)`` picks one codec per value and returns an :class:`Encoded`;
``decode(codec, data)`` gives back a value equal to the original and of the same
type. ``data`` may be ``bytes``, a ``memoryview`` or an ``mmap`` of an object file.
docs/codecs.md has the byte layouts and the measurements in full.

How a codec is chosen (first match wins)
----------------------------------------
``bytes``        exact ``bytes``: the raw bytes, no framing.
``json``         exact ``dict`` with exact ``str`` keys, ``list``, ``str``, ``int``,
                 finite ``float``, ``bool``, ``None``, nested; decided by a recursive
                 exact-type check, so it never changes a type (no tuples, NaN, subclasses
                 such as ``OrderedDict`` or ``IntEnum``). Readable in SQL.
``arrow``        exact ``pandas.DataFrame`` / ``pandas.Series`` that Arrow represents
                 faithfully (Arrow IPC file format; a Series is a one-column frame plus a
                 flag in the schema metadata). Anything else goes to pickle, see below.
``npy``          exact ``numpy.ndarray`` of a dtype without Python objects.
``pickle``       everything else, protocol 5, when the stream does not mention ``__main__``.
``cloudpickle``  when plain pickle would store a reference into ``__main__`` (functions and
                 classes defined in a notebook cannot be imported by a new process), or
                 could not find a function or class by name (lambdas, nested functions,
                 classes defined inside a function): these are pickled by value.
Nothing fits (pickle raises ``TypeError``: generators, locks, open files, sockets,
modules, ...): :class:`~nbstep.errors.NotPersistable`, naming the type and the reason.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

from . import arrow, npy, pickled, plain
from .streamed import Streamed

CODECS: tuple[str, ...] = ("json", "arrow", "npy", "bytes", "pickle", "cloudpickle")


class Encoded(NamedTuple):
    """A value as bytes, and the codec that reads them back."""

    codec: str  # one of CODECS
    # For "json", the UTF-8 bytes of the JSON text. A large array or frame is a
    # Streamed: written to its file when stored (bytes(data) gives the bytes).
    data: bytes | memoryview | Streamed

    @property
    def size(self) -> int:
        """Length of ``data`` in bytes."""
        data = self.data
        return len(data) if type(data) is bytes else data.nbytes



def encode(value: Any) -> Encoded:
    """Encode a value with the first codec that gives it back faithfully.

    Raises :class:`~nbstep.errors.NotPersistable` when no codec can.
    """
    kind = type(value)
    if kind is bytes:
        return Encoded("bytes", value)
    data = plain.encode_json(value)
    if data is not None:
        return Encoded("json", data)
    module = kind.__module__
    if module.startswith("pandas"):
        pd = sys.modules.get("pandas")
        if pd is not None and (kind is pd.DataFrame or kind is pd.Series):
            data = arrow.encode(value)
            if data is not None:
                return Encoded("arrow", data)
    elif module == "numpy":
        np = sys.modules.get("numpy")
        if np is not None and kind is np.ndarray and not value.dtype.hasobject:
            data = npy.encode(value)
            if data is not None:
                return Encoded("npy", data)
    return Encoded(*pickled.encode(value))


def decode(codec: str, data: Any) -> Any:
    """Decode what :func:`encode` produced; a fresh, writable object on every call.

    ``data`` is ``bytes``, a ``memoryview``, an ``mmap`` (or a :class:`.Streamed`
    from ``encode``, joined first). An ``mmap`` opened with
    ``access=mmap.ACCESS_COPY`` is taken over: arrays and frame columns become
    writable views into it (zero-copy); every other buffer is copied where the
    result must be writable.
    """
    if isinstance(data, Streamed):
        data = data.tobytes()
    if codec == "json":
        return plain.decode_json(data)
    if codec == "pickle" or codec == "cloudpickle":
        return pickled.decode(data)
    if codec == "arrow":
        return arrow.decode(data)
    if codec == "npy":
        return npy.decode(data)
    if codec == "bytes":
        return data if type(data) is bytes else bytes(data)
    import difflib

    close = difflib.get_close_matches(str(codec), CODECS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown codec {codec!r}: expected one of {', '.join(CODECS)}.{hint} "
        "The value was written by a newer nbstep, or its record is damaged."
    )
