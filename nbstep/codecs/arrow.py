"""The ``arrow`` codec: exact ``pandas.DataFrame`` / ``Series`` that Arrow carries faithfully.

Arrow IPC file format; a Series is a one-column frame plus a flag in the schema
metadata. docs/codecs.md has the measurements in full.

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
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from .mapping import is_private
from .plain import is_json
from .streamed import Streamed

# The metadata key of nbstep's own schema metadata in an Arrow object.
_ARROW_META_KEY = b"nbstep"


# The column label a Series is stored under; its real name is in the metadata.
_SERIES_COLUMN = "__nbstep_series__"


_FAST, _VERIFY, _PICKLE = "fast", "verify", "pickle"


def encode(value: Any) -> Streamed | memoryview | None:
    """Arrow IPC bytes (written to their file by Arrow when stored), or None when Arrow
    would not give ``value`` back faithfully."""
    import pandas as pd

    meta: dict[str, Any] = {}
    if type(value) is pd.Series:
        if not is_json(value.name) or type(value.name) in (list, dict):
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
    if route == _VERIFY:
        buffer = data.buffer()
        return buffer if _round_trips(value, buffer) else None
    return data


def _frame_route(frame: Any, meta: dict[str, Any]) -> str:
    """How far Arrow can be trusted with ``frame``: fast, verify, or pickle.

    Also records in ``meta`` what decode must restore (RangeIndex labels, freq).
    """
    import pandas as pd

    if not frame.flags.allows_duplicate_labels:
        return _PICKLE
    if frame.attrs and not is_json(frame.attrs):
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


def _write_ipc(frame: Any, meta: dict[str, Any]) -> ArrowFile | None:
    """The frame as an Arrow IPC file to be written (its length known), or None."""
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
        # Measure: the store needs the length before it writes (an inline value or a
        # file), and a failure to serialize shows here, before anything is written.
        mock = pa.MockOutputStream()
        with pa.ipc.new_file(mock, table.schema) as writer:
            writer.write_table(table)
    except (pa.ArrowException, TypeError, ValueError, Warning):
        return None
    return ArrowFile(table, mock.size())


class ArrowFile(Streamed):
    """A table's IPC file, written by Arrow straight from the frame's columns.

    ``Table.from_pandas`` shares the columns' memory where it can, so the only copy
    of the value's bytes is the one into the file (with the GIL released).
    """

    def __init__(self, table: Any, nbytes: int) -> None:
        self.table = table
        self.nbytes = nbytes

    def write_to(self, path: str) -> None:
        import pyarrow as pa

        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, self.table.schema) as writer:
            writer.write_table(self.table)

    def buffer(self) -> memoryview:
        """The file's bytes in one buffer of exactly their size."""
        import pyarrow as pa

        buffer = pa.allocate_buffer(self.nbytes)
        with pa.ipc.new_file(pa.FixedSizeBufferWriter(buffer), self.table.schema) as writer:
            writer.write_table(self.table)
        return memoryview(buffer).cast("B")  # keeps the Arrow buffer alive

    def tobytes(self) -> bytes:
        return bytes(self.buffer())


def _round_trips(value: Any, data: Any) -> bool:
    import pandas as pd
    import pandas.testing as tm

    try:
        back = decode(data)
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



def decode(data: Any) -> Any:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    private = is_private(data)
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
