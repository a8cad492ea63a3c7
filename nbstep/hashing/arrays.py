"""Structural keys of numpy and pandas values (see :mod:`nbstep.hashing.recipe`).

Large arrays are streamed: buffers go to ``ctx.big`` in blocks of at most
``_COPY_CHUNK`` bytes, so hashing an 80 MB frame never copies it whole.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .sink import Ctx, Unhashable, _enter, _key_segment
from .stdlib import _tz_name
from .values import _ENC, ROOT_RESOLVERS, _bool, _enc, _list, _resolve, _str, _subclass

# ---------------------------------------------------------------------------- numpy


def _np_dtype_key(dt: Any, ctx: Ctx) -> None:
    if dt.names is None:
        _str(dt.str, ctx)
    else:
        _enc(dt.descr, ctx)


_COPY_CHUNK = 1 << 24  # bytes: bounds the memory a non-contiguous or big-endian array costs


def _np_bytes(a: Any) -> Any:
    """A C-contiguous array's memory as a flat uint8 view (bytes if numpy won't view it)."""
    try:
        return a.reshape(-1).view(sys.modules["numpy"].uint8)
    except (TypeError, ValueError):
        return a.tobytes()


def _np_raw(a: Any, ctx: Ctx) -> None:
    """``<nbytes>:`` + the array's bytes in C order, little endian, without a full copy."""
    dt = a.dtype
    le = dt.newbyteorder("<")
    ctx.w(b"%d:" % a.nbytes)
    if not a.nbytes:
        return
    if le == dt and a.flags.c_contiguous:
        ctx.big(_np_bytes(a))
    elif a.ndim == 0:
        ctx.big(_np_bytes(a.astype(le)))
    else:
        # Consecutive blocks of rows, each copied C-contiguous, give the C-order bytes.
        step = max(1, _COPY_CHUNK // (a.nbytes // a.shape[0]))
        for start in range(0, a.shape[0], step):
            ctx.big(_np_bytes(a[start : start + step].astype(le, order="C")))


def _ndarray(a: Any, ctx: Ctx, pandas: bool = False) -> None:
    dt = a.dtype
    w = ctx.w
    w(b"X7:ndarray")
    if dt.hasobject and dt.kind != "O":
        raise Unhashable(
            a,
            "is a structured array with object fields, which has no canonical bytes",
            "the array with fixed-width fields, or a list of records",
        )
    if dt.kind == "O":
        _str(dt.str, ctx)
    else:
        _np_dtype_key(dt.newbyteorder("<"), ctx)
    w(b"L" + b"".join([b"i%d;," % n for n in a.shape]) + b"]")
    if dt.kind != "O":
        _np_raw(a, ctx)
        return
    vid = _enter(a, ctx)
    flat = a.reshape(-1)
    spill = ctx.spill
    w(b"L")
    i = 0
    try:
        for i, x in enumerate(flat):
            (_ENC.get(type(x)) or _resolve(x))(x, ctx)
            w(b",")
            if not i & 0xFFF:
                spill()
    except Unhashable as e:
        if pandas:
            e.segments.append(f".iloc[{i}]")
        else:
            index = sys.modules["numpy"].unravel_index(i, a.shape) if a.ndim else ()
            e.segments.append("[" + ", ".join(str(int(j)) for j in index) + "]")
        raise
    w(b"]")
    ctx.seen.discard(vid)


def _np_scalar(v: Any, ctx: Ctx) -> None:
    a = sys.modules["numpy"].asarray(v)
    if a.dtype.kind == "O":
        raise Unhashable(v, "is a numpy scalar nbstep has no canonical encoding for")
    ctx.w(b"X8:npscalar")
    _np_dtype_key(a.dtype.newbyteorder("<"), ctx)
    _np_raw(a, ctx)


def _np_dtype(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X7:npdtype")
    _np_dtype_key(v, ctx)


def _numpy_encoder(t: type) -> Callable[[Any, Ctx], None] | None:
    np = sys.modules.get("numpy")
    if np is None:
        return None
    if issubclass(t, np.generic):
        return _np_scalar
    if t is np.ndarray:
        return _ndarray
    if t.__module__.startswith("numpy.ma"):
        return None  # a masked array's data under the mask is arbitrary
    if issubclass(t, np.ndarray):
        return _subclass(t, _ndarray)
    if issubclass(t, np.dtype):
        return _np_dtype
    return None


# --------------------------------------------------------------------------- pandas


def _pd_raw(obj: Any) -> Any:
    """The values behind a Series or Index: an ndarray for numpy dtypes, else the array."""
    np = sys.modules["numpy"]
    if isinstance(obj.dtype, np.dtype):
        return obj.to_numpy()
    return obj.array


def _pd_values(values: Any, dtype: Any, ctx: Ctx) -> None:
    np = sys.modules["numpy"]
    pd = sys.modules["pandas"]
    _str(str(dtype), ctx)
    if isinstance(dtype, np.dtype):
        _ndarray(np.asarray(values), ctx, pandas=True)
    elif isinstance(dtype, pd.CategoricalDtype):
        try:
            _index(dtype.categories, ctx)
        except Unhashable as e:
            e.segments.append(".cat.categories")
            raise
        _bool(bool(dtype.ordered), ctx)
        _ndarray(np.asarray(values.codes), ctx)
    elif isinstance(dtype, pd.DatetimeTZDtype):
        _ndarray(np.asarray(values.asi8), ctx)
    elif isinstance(dtype, pd.StringDtype):
        _pd_strings(values, ctx)
    elif isinstance(
        values, pd.arrays.IntegerArray | pd.arrays.FloatingArray | pd.arrays.BooleanArray
    ):
        numpy_dtype = dtype.numpy_dtype
        _ndarray(np.asarray(values.isna()), ctx)
        _ndarray(values.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0)), ctx)
    else:
        _ndarray(np.asarray(values), ctx, pandas=True)


def _pd_strings(values: Any, ctx: Ctx) -> None:
    """Null mask, UTF-8 lengths and concatenated UTF-8: the same for every storage."""
    import pyarrow as pa
    import pyarrow.compute as pc

    np = sys.modules["numpy"]
    arr = pa.array(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    mask = arr.is_null().to_numpy(zero_copy_only=False)
    if arr.null_count:
        arr = pc.fill_null(arr, "")  # what lies under a null slot is unspecified
    n = len(arr)
    buffers = arr.buffers()
    if n == 0:
        offsets = np.zeros(1, dtype="<i8")
    else:
        offsets = np.frombuffer(buffers[1], dtype="<i8", count=n + 1, offset=arr.offset * 8)
    _ndarray(np.asarray(mask, dtype=bool), ctx)
    _ndarray(np.diff(offsets), ctx)
    start, end = int(offsets[0]), int(offsets[-1])
    ctx.w(b"%d:" % (end - start))
    if end > start:
        ctx.big(memoryview(buffers[2])[start:end])


def _index_names(v: Any, ctx: Ctx) -> None:
    try:
        _list(list(v.names), ctx)
    except Unhashable as e:
        e.segments.append(".names")
        raise


def _index(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X8:pd.Index")
    _index_names(v, ctx)
    # A RangeIndex hashes as the int64 Index it equals (assert_frame_equal's "equiv").
    _pd_values(_pd_raw(v), v.dtype, ctx)


def _multiindex(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X13:pd.MultiIndex")
    _index_names(v, ctx)
    ctx.w(b"L")
    for i in range(v.nlevels):
        level = v.get_level_values(i)  # materialized: levels/codes are not canonical
        try:
            _pd_values(_pd_raw(level), level.dtype, ctx)
        except Unhashable as e:
            e.segments.append(f".get_level_values({i})")
            raise
        ctx.w(b",")
    ctx.w(b"]")


def _labelled(parts: tuple[tuple[str, Any], ...], ctx: Ctx) -> None:
    """Each part's key; a part that cannot be hashed is named by its segment."""
    for segment, part in parts:
        try:
            _enc(part, ctx)
        except Unhashable as e:
            e.segments.append(segment)
            raise


def _series(v: Any, ctx: Ctx) -> None:
    vid = _enter(v, ctx)
    ctx.w(b"X9:pd.Series")
    _labelled(((".name", v.name), (".index", v.index)), ctx)
    _pd_values(_pd_raw(v), v.dtype, ctx)
    ctx.seen.discard(vid)


def _frame(v: Any, ctx: Ctx) -> None:
    vid = _enter(v, ctx)
    w = ctx.w
    w(b"X12:pd.DataFrame")
    _labelled(((".columns", v.columns), (".index", v.index)), ctx)
    w(b"L")
    for i in range(v.shape[1]):
        column = v.iloc[:, i]
        try:
            _pd_values(_pd_raw(column), column.dtype, ctx)
        except Unhashable as e:
            e.segments.append(_key_segment(v.columns[i]))
            raise
        w(b",")
        ctx.spill()
    w(b"]")
    ctx.seen.discard(vid)


def _pd_array(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X8:pd.array")
    _pd_values(v, v.dtype, ctx)


_NS_PER = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def _ns(value64: Any) -> int:
    """A numpy datetime64/timedelta64 scalar as exact integer nanoseconds."""
    unit, count = sys.modules["numpy"].datetime_data(value64.dtype)
    return int(value64.astype("int64")) * _NS_PER[unit] * count


def _timestamp(v: Any, ctx: Ctx) -> None:
    # Unit-free: Timestamp("2020") is "us" in pandas 3 and "ns" in pandas 2, and equal.
    ctx.w(b"X12:pd.Timestamp")
    _list([_ns(v.to_datetime64()), _tz_name(v.tz)], ctx)  # to_datetime64 is UTC if aware


def _pd_timedelta(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X12:pd.Timedelta")
    _list([_ns(v.to_timedelta64())], ctx)


def _period(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X9:pd.Period")
    _list([v.freqstr, int(v.ordinal)], ctx)


def _interval(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X11:pd.Interval")
    _list([v.left, v.right, v.closed], ctx)


def _nat(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X6:pd.NaT")


def _na(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X5:pd.NA")


def _pandas_encoder(t: type) -> Callable[[Any, Ctx], None] | None:
    pd = sys.modules.get("pandas")
    if pd is None:
        return None
    table: list[tuple[type, Callable[[Any, Ctx], None]]] = [
        (pd.DataFrame, _frame),
        (pd.Series, _series),
        (pd.MultiIndex, _multiindex),
        (pd.Index, _index),
        (type(pd.NaT), _nat),
        (type(pd.NA), _na),
        (pd.Timestamp, _timestamp),
        (pd.Timedelta, _pd_timedelta),
        (pd.Period, _period),
        (pd.Interval, _interval),
        (pd.api.extensions.ExtensionArray, _pd_array),
    ]
    for cls, encoder in table:
        if issubclass(t, cls):
            return encoder
    return None



ROOT_RESOLVERS["numpy"] = _numpy_encoder
ROOT_RESOLVERS["pandas"] = _pandas_encoder
