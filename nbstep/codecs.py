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

Arrow: IPC file format, chosen by measurement
---------------------------------------------
Measured on this machine (2 cores), best of 5, 1e6 rows, encode / decode from memory:

=====================  =========================  ==========================
format                 10 float64 columns         one string column
=====================  =========================  ==========================
Arrow IPC file         88 MB, 51 / 9.1 ms         28 MB, 4.5 / 0.4 ms
Arrow IPC stream       88 MB, 47 / 8.0 ms         28 MB, 3.9 / 0.4 ms
Parquet (no compr.)    91 MB, 187 / 26 ms         24 MB, 42 / 14.5 ms
=====================  =========================  ==========================

(88 MB includes a materialised RangeIndex, written with ``preserve_index=True``.)
Parquet is 3-4x slower both ways and can never be zero-copy; the two IPC formats
cost the same. The file format wins: its footer and trailing magic make any
truncated object file fail loudly ("Not an Arrow file"), where a stream cut at a
message boundary can read as fewer rows; and it is Feather v2, so
``pyarrow.feather.read_table`` opens an object file as is.

``preserve_index=None`` rather than ``True``: a ``RangeIndex`` is then stored as
metadata (start, stop, step, name) and comes back as a ``RangeIndex``; with ``True``
it is materialised as an int64 column (8 MB more) and comes back as an ``Index``,
which is not the same type. Every other index is stored as columns either way.

Replay speed: zero-copy from a private mmap
-------------------------------------------
``Table.to_pandas()`` copies every numeric column into one consolidated block:
9-11 ms warm, ~22 ms (outliers to 100 ms) for the first replay in a fresh process,
where the 80 MB of new memory must be page-faulted in. ``split_blocks=True`` is
zero-copy (0.3 ms) but yields read-only arrays: ``df.iloc[0, 0] = 1.0`` raises.
Copying the columns ourselves into numpy memory was slower (21-26 ms). So decoding
has two paths:

* ``data`` is an ``mmap`` opened with ``access=mmap.ACCESS_COPY`` (writable and
  private: copy-on-write pages, the file never changes): every numeric column
  becomes a writable numpy view straight into the mapping. 0.6-0.9 ms warm,
  ~5 ms for the first decode in a fresh process (pyarrow's lazy set-up included);
  a write copies one 4 KiB page, and the mapping lives as long as the frame.
  ``decode`` takes the mapping over: do not decode one mapping twice. (An
  ``ACCESS_WRITE`` mapping would write through to the file; a store that opens its
  object files ``"rb"`` cannot create one.)
* anything else (``bytes``, a read-only mmap): ``to_pandas()`` with its
  multi-threaded consolidating copy, then any column still pointing into the
  caller's buffer is copied.

Extension columns that are not Arrow-backed (categorical, tz-aware, nullable
``Int64`` ...) are copied in both paths (pandas would hold read-only views
otherwise); Arrow-backed ones (``str``, ``string``, ``ArrowDtype``) are immutable
and stay zero-copy. Restoring a ``freq`` validates the index: ~9 ms per 1e6 rows.

Encoding the float frame: 29 ms (pickle: 37 ms). ``from_pandas`` gathers each
column out of the 2-D block (19 ms); the IPC writer then copies once into a buffer
sized up front with a ``MockOutputStream`` pass (a growing ``BufferOutputStream``
took 47 ms). ``data`` is a ``memoryview`` of that ``pyarrow.Buffer``: no copy.

What Arrow does not carry (pickle instead)
------------------------------------------
Decided from dtypes and labels up front: ``object``, complex, sparse and
python-storage string columns or index; duplicate column labels;
``allows_duplicate_labels=False``; ``attrs`` that are not exact JSON data (JSON
``attrs`` are kept, in pyarrow's pandas metadata); a Series name that is not a
JSON scalar. A ``RangeIndex`` of column labels and the ``freq`` of a
``DatetimeIndex`` / ``TimedeltaIndex`` are restored from nbstep metadata.
Everything not known to round-trip (``MultiIndex``, non-``str`` labels, categorical
of ``object`` categories, ``ArrowDtype``, period, interval, time zones other than
``zoneinfo``/UTC ...) is encoded, decoded and compared with
``pandas.testing.assert_frame_equal(check_exact=True)``, and pickled if it differs.

Pickle load check
-----------------
Pickle streams up to ``VERIFY_PICKLE_LIMIT`` bytes are loaded back at encode time,
so a value whose pickle cannot be read (a broken ``__setstate__``, a reference that
no longer resolves) fails at record time. Larger streams are not re-loaded (that
would double the cost); they are almost always arrays and frames inside containers.
"""

from __future__ import annotations

import json
import mmap
import pickle
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from .errors import NotPersistable

CODECS: tuple[str, ...] = ("json", "arrow", "npy", "bytes", "pickle", "cloudpickle")

# Pickles up to this size are loaded back at encode time (see the module docstring).
VERIFY_PICKLE_LIMIT = 1 << 20

# The metadata key of nbstep's own schema metadata in an Arrow object.
_ARROW_META_KEY = b"nbstep"
# The column label a Series is stored under; its real name is in the metadata.
_SERIES_COLUMN = "__nbstep_series__"

_json_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False, allow_nan=False
).encode
_json_decode = json.JSONDecoder().decode


@dataclass(frozen=True, slots=True)
class Encoded:
    """A value as bytes, and the codec that reads them back."""

    codec: str  # one of CODECS
    data: bytes | memoryview  # for "json", the UTF-8 bytes of the JSON text

    @property
    def size(self) -> int:
        """Length of ``data`` in bytes."""
        data = self.data
        return len(data) if type(data) is bytes else data.nbytes


# -- encoding ------------------------------------------------------------------


def encode(value: Any) -> Encoded:
    """Encode a value with the first codec that gives it back faithfully.

    Raises :class:`~nbstep.errors.NotPersistable` when no codec can.
    """
    kind = type(value)
    if kind is bytes:
        return Encoded("bytes", value)
    if _is_json(value):
        try:
            return Encoded("json", _json_encode(value).encode("utf-8"))
        except (ValueError, UnicodeEncodeError, RecursionError):
            # Ints past sys.get_int_max_str_digits(); lone surrogates, which UTF-8
            # cannot carry. Pickle keeps both.
            pass
    module = kind.__module__
    if module.startswith("pandas"):
        pd = sys.modules.get("pandas")
        if pd is not None and (kind is pd.DataFrame or kind is pd.Series):
            encoded = _encode_arrow(value)
            if encoded is not None:
                return encoded
    elif module == "numpy":
        np = sys.modules.get("numpy")
        if np is not None and kind is np.ndarray and not value.dtype.hasobject:
            encoded = _encode_npy(value)
            if encoded is not None:
                return encoded
    return _encode_pickle(value)


def _is_json(value: Any) -> bool:
    """True if ``json.loads(json.dumps(value))`` is equal and of the same types."""
    try:
        return _json_exact(value)
    except RecursionError:
        # Too deep for JSON, or a container that holds itself: pickle copes.
        return False


def _json_exact(v: Any) -> bool:
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return True
    if t is float:
        return v - v == 0.0  # False for NaN and +-inf
    if t is list:
        for item in v:
            if not _json_exact(item):
                return False
        return True
    if t is dict:
        for key, item in v.items():
            if type(key) is not str or not _json_exact(item):
                return False
        return True
    return False


def _not_persistable(value: Any, reason: str) -> NotPersistable:
    kind = type(value)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    return NotPersistable(f"cannot record a value of type `{name}`: {reason}")


def _encode_pickle(value: Any) -> Encoded:
    codec = "pickle"
    try:
        data = pickle.dumps(value, protocol=5)
    except TypeError as e:
        # The object's type refuses pickling (generator, lock, file, socket, module):
        # cloudpickle cannot help either, and a module is not a result worth keeping.
        raise _not_persistable(value, str(e)) from e
    except RecursionError as e:
        raise _not_persistable(value, f"too deeply nested to pickle ({e})") from e
    except (pickle.PicklingError, AttributeError):
        # A function or class pickle could not find by name: a lambda, a nested
        # function, a class defined inside a function. cloudpickle stores it by value.
        data = None
    except Exception as e:  # a __reduce__ or __getstate__ of the value's own raising
        raise _not_persistable(value, f"{type(e).__name__}: {e}") from e
    # A reference into __main__ would not resolve in the next process: cloudpickle
    # stores such functions and classes by value. The scan is a superset: a global
    # in __main__ always puts the module name "__main__" in the stream, while a
    # string "__main__" inside the data merely costs a slower, equally valid pickle.
    if data is None or b"__main__" in data:
        codec = "cloudpickle"
        data = _cloudpickle_dumps(value)
    if len(data) <= VERIFY_PICKLE_LIMIT:
        try:
            pickle.loads(data)
        except Exception as e:
            raise _not_persistable(
                value, f"its {codec} does not load back ({type(e).__name__}: {e})"
            ) from e
    return Encoded(codec, data)


def _cloudpickle_dumps(value: Any) -> bytes:
    import cloudpickle

    try:
        return cloudpickle.dumps(value, protocol=5)
    except RecursionError as e:
        raise _not_persistable(value, f"too deeply nested to pickle ({e})") from e
    except Exception as e:
        raise _not_persistable(value, str(e) or type(e).__name__) from e


def _encode_npy(array: Any) -> Encoded | None:
    """``.npy`` bytes (the format ``numpy.save`` writes), built with one copy."""
    import numpy as np
    from numpy.lib import format as npy

    header = _NpyHeader()
    fields = npy.header_data_from_array_1_0(array)
    try:
        try:
            npy.write_array_header_1_0(header, fields)
        except ValueError:  # header longer than 65535 bytes: format 2.0
            header.parts.clear()
            npy.write_array_header_2_0(header, fields)
    except (ValueError, UnicodeError):
        return None  # e.g. a structured dtype with non-latin-1 field names
    head = b"".join(header.parts)
    out = bytearray(len(head) + array.nbytes)
    out[: len(head)] = head
    if array.nbytes:
        order = "F" if fields["fortran_order"] else "C"
        body = np.frombuffer(out, dtype=array.dtype, count=array.size, offset=len(head))
        np.copyto(body.reshape(array.shape, order=order), array, casting="no")
    return Encoded("npy", memoryview(out))


class _NpyHeader:
    """A write-only file object that collects the header numpy writes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


# -- pandas through Arrow --------------------------------------------------------

_FAST, _VERIFY, _PICKLE = "fast", "verify", "pickle"


def _encode_arrow(value: Any) -> Encoded | None:
    """Arrow IPC bytes, or None when Arrow would not give ``value`` back faithfully."""
    import pandas as pd

    meta: dict[str, Any] = {}
    if type(value) is pd.Series:
        if not _is_json(value.name) or type(value.name) in (list, dict):
            return None
        meta["series"] = True
        meta["name"] = value.name
        frame = value.to_frame(name=_SERIES_COLUMN)
        frame.attrs = value.attrs
    else:
        frame = value
    route = _frame_route(frame, meta)
    if route == _PICKLE:
        return None
    data = _write_ipc(frame, meta)
    if data is None:
        return None
    if route == _VERIFY and not _round_trips(value, data):
        return None
    return Encoded("arrow", data)


def _frame_route(frame: Any, meta: dict[str, Any]) -> str:
    """How far Arrow can be trusted with ``frame``: fast, verify, or pickle.

    Also records in ``meta`` what decode must restore (RangeIndex labels, freq).
    """
    import pandas as pd

    if not frame.flags.allows_duplicate_labels:
        return _PICKLE
    if frame.attrs and not _is_json(frame.attrs):
        return _PICKLE
    route = _FAST
    columns = frame.columns
    if not columns.is_unique:
        return _PICKLE
    if type(columns) is pd.RangeIndex:
        if not _is_label(columns.name):
            return _PICKLE
        meta["columns"] = [columns.start, columns.stop, columns.step, columns.name]
    else:
        route = _worse(route, _index_route(columns, meta=None))
    route = _worse(route, _index_route(frame.index, meta=meta))
    if route == _PICKLE:
        return route
    seen: set[Any] = set()
    for dtype in frame.dtypes:
        if dtype in seen:
            continue
        seen.add(dtype)
        route = _worse(route, _dtype_route(dtype))
        if route == _PICKLE:
            return route
    return route


def _worse(a: str, b: str) -> str:
    order = (_FAST, _VERIFY, _PICKLE)
    return a if order.index(a) >= order.index(b) else b


def _is_label(name: Any) -> bool:
    return name is None or type(name) is str


def _index_route(index: Any, meta: dict[str, Any] | None) -> str:
    """Route for an index (``meta`` given) or for the column labels (``meta=None``)."""
    import pandas as pd

    kind = type(index)
    if kind is pd.RangeIndex:
        return _FAST if _is_label(index.name) else _VERIFY
    if kind is pd.MultiIndex:
        route = _VERIFY
        for level in index.levels:
            route = _worse(route, _dtype_route(level.dtype))
        return route
    route = _dtype_route(index.dtype)
    if route == _PICKLE:
        return route
    if not _is_label(index.name):
        route = _worse(route, _VERIFY)
    if meta is None:
        # Column labels: Arrow stores them as strings and pandas' metadata converts
        # them back; only plain strings are known to survive.
        if not isinstance(index.dtype, pd.StringDtype) or kind is not pd.Index:
            route = _worse(route, _VERIFY)
        return route
    if kind in (pd.DatetimeIndex, pd.TimedeltaIndex):
        freq = index.freq
        if freq is not None:
            from pandas.tseries.frequencies import to_offset

            if to_offset(index.freqstr) != freq:  # e.g. business days with holidays
                return _PICKLE
            meta["freq"] = index.freqstr
    elif kind is not pd.Index:
        route = _worse(route, _VERIFY)  # CategoricalIndex, PeriodIndex, IntervalIndex ...
    return route


def _dtype_route(dtype: Any) -> str:
    import numpy as np
    import pandas as pd

    if isinstance(dtype, np.dtype):
        return _FAST if dtype.kind in "biufmM" else _PICKLE
    if isinstance(dtype, pd.StringDtype):
        return _FAST if dtype.storage == "pyarrow" else _PICKLE
    if isinstance(dtype, _masked_dtypes(pd)):
        return _FAST
    if isinstance(dtype, pd.DatetimeTZDtype):
        return _FAST if _known_tz(dtype.tz) else _VERIFY
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories
        if categories is None:
            return _VERIFY
        kind = categories.dtype
        if (isinstance(kind, np.dtype) and kind.kind in "biuf") or (
            isinstance(kind, pd.StringDtype) and kind.storage == "pyarrow"
        ):
            return _FAST
        return _VERIFY  # object categories (also those of an empty Categorical), dates ...
    if isinstance(dtype, pd.SparseDtype):
        return _PICKLE
    return _VERIFY  # ArrowDtype, period, interval, third-party extension types


def _masked_dtypes(pd: Any) -> tuple[type, ...]:
    return (
        pd.Int8Dtype, pd.Int16Dtype, pd.Int32Dtype, pd.Int64Dtype,
        pd.UInt8Dtype, pd.UInt16Dtype, pd.UInt32Dtype, pd.UInt64Dtype,
        pd.Float32Dtype, pd.Float64Dtype, pd.BooleanDtype,
    )


def _known_tz(tz: Any) -> bool:
    import datetime
    import zoneinfo

    return tz is datetime.UTC or type(tz) is zoneinfo.ZoneInfo


def _write_ipc(frame: Any, meta: dict[str, Any]) -> memoryview | None:
    """The frame as one Arrow IPC file in a single pre-sized buffer, or None."""
    import pyarrow as pa

    try:
        with warnings.catch_warnings():
            # pyarrow warns, then stringifies, for mixed-type labels and non-str index
            # names: that is a lossy round trip, so take any warning as a refusal.
            warnings.simplefilter("error")
            table = pa.Table.from_pandas(frame, preserve_index=None)
        if meta:
            metadata = dict(table.schema.metadata or {})
            metadata[_ARROW_META_KEY] = json.dumps(meta).encode()
            table = table.replace_schema_metadata(metadata)
        # Measure first, then write into a buffer of exactly that size: a growing
        # BufferOutputStream reallocates and copies the body (47 ms instead of 28 ms
        # for the 80 MB frame).
        mock = pa.MockOutputStream()
        with pa.ipc.new_file(mock, table.schema) as writer:
            writer.write_table(table)
        buffer = pa.allocate_buffer(mock.size())
        with pa.ipc.new_file(pa.FixedSizeBufferWriter(buffer), table.schema) as writer:
            writer.write_table(table)
    except (pa.ArrowException, TypeError, ValueError, Warning):
        return None
    return memoryview(buffer).cast("B")  # keeps the Arrow buffer alive, copies nothing


def _round_trips(value: Any, data: Any) -> bool:
    import pandas as pd
    import pandas.testing as tm

    try:
        back = _decode_arrow(data)
        if type(back) is not type(value):
            return False
        if type(value) is pd.Series:
            tm.assert_series_equal(
                value, back, check_exact=True, check_index_type=True,
                check_series_type=True, check_flags=True, check_freq=True,
            )
        else:
            tm.assert_frame_equal(
                value, back, check_exact=True, check_index_type=True,
                check_column_type=True, check_frame_type=True, check_flags=True,
                check_freq=True,
            )
        return back.attrs == value.attrs
    except Exception:
        # Any difference, or a decode that fails: the value goes to pickle.
        return False


# -- decoding --------------------------------------------------------------------


def decode(codec: str, data: Any) -> Any:
    """Decode what :func:`encode` produced; a fresh, writable object on every call.

    ``data`` is ``bytes``, a ``memoryview`` or an ``mmap``. An ``mmap`` opened with
    ``access=mmap.ACCESS_COPY`` is taken over: arrays and frame columns become
    writable views into it (zero-copy); every other buffer is copied where the
    result must be writable.
    """
    if codec == "json":
        text = data.decode("utf-8") if type(data) is bytes else str(data, "utf-8")
        return _json_decode(text)
    if codec == "pickle" or codec == "cloudpickle":
        return pickle.loads(data)
    if codec == "arrow":
        return _decode_arrow(data)
    if codec == "npy":
        return _decode_npy(data)
    if codec == "bytes":
        return data if type(data) is bytes else bytes(data)
    import difflib

    close = difflib.get_close_matches(str(codec), CODECS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown codec {codec!r}: expected one of {', '.join(CODECS)}.{hint} "
        "The value was written by a newer nbstep, or its record is damaged."
    )


def _is_private(data: Any) -> bool:
    """A writable mmap: MAP_PRIVATE, so views into it alias nothing else."""
    if not isinstance(data, mmap.mmap):
        return False
    with memoryview(data) as view:
        return not view.readonly


def _decode_npy(data: Any) -> Any:
    import io

    import numpy as np
    from numpy.lib import format as npy

    with memoryview(data) as view:
        major = view[6]
        if major == 1:
            header_len = 10 + int.from_bytes(view[8:10], "little")
        else:
            header_len = 12 + int.from_bytes(view[8:12], "little")
        fp = io.BytesIO(view[:header_len])
    version = npy.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = npy.read_array_header_1_0(fp, max_header_size=header_len)
    elif version == (2, 0):
        shape, fortran, dtype = npy.read_array_header_2_0(fp, max_header_size=header_len)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    count = 1
    for n in shape:
        count *= n
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    if not _is_private(data):
        flat = flat.copy()
    return flat.reshape(shape, order="F" if fortran else "C")


def _decode_arrow(data: Any) -> Any:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    private = _is_private(data)
    buffer = pa.py_buffer(data)
    start = buffer.address
    end = start + buffer.size
    table = pa.ipc.open_file(buffer).read_all()
    raw_meta = (table.schema.metadata or {}).get(_ARROW_META_KEY)
    meta = json.loads(raw_meta) if raw_meta else {}
    # Private mapping: zero-copy split blocks, made writable below. Otherwise let
    # Arrow copy into consolidated blocks (multi-threaded, and it reuses its pool).
    frame = table.to_pandas(split_blocks=private)
    del table
    replaced: dict[int, Any] = {}
    for i, (_, column) in enumerate(frame.items()):
        dtype = column.dtype
        if isinstance(dtype, np.dtype):
            array = column.array
            view = column.to_numpy()
            pointer = view.__array_interface__["data"][0]
            if start <= pointer < end and view.size:
                if private:
                    replaced[i] = np.frombuffer(
                        data, dtype=view.dtype, count=view.size, offset=pointer - start
                    )
                else:
                    replaced[i] = view.copy()
            elif private:
                replaced[i] = array
        elif isinstance(column.array, pd.arrays.ArrowExtensionArray):
            if private:
                replaced[i] = column.array  # immutable: setitem builds a new array
        else:
            replaced[i] = column.array.copy()
    if private:
        out = pd.DataFrame(replaced, index=frame.index, copy=False)
        out.columns = frame.columns
        out.attrs = frame.attrs
    else:
        out = frame
        for i, array in replaced.items():
            out.isetitem(i, pd.Series(array, index=out.index, copy=False))
    del frame
    columns = meta.get("columns")
    if columns is not None:
        start_, stop, step, name = columns
        out.columns = pd.RangeIndex(start_, stop, step, name=name)
    freq = meta.get("freq")
    if freq is not None:
        if isinstance(out.index, pd.DatetimeIndex):
            out.index = pd.DatetimeIndex(out.index, freq=freq)
        else:
            out.index = pd.TimedeltaIndex(out.index, freq=freq)
    if meta.get("series"):
        series = out.iloc[:, 0]
        series.name = meta.get("name")
        series.attrs = out.attrs
        return series
    return out
