"""Input hashes: ``structural_key``, ``input_hash`` and ``step_identity``.

A step's input is reduced to its *structural key*: a canonical, type-tagged byte
string. ``input_hash(value)`` is ``"sha256:" + sha256(structural_key(value)).hexdigest()``
and is what a record stores to detect drift. docs/hashing.md has the full recipe,
the reasons behind each decision and pinned reference vectors.

What is hashed: the value's type and its data, recursively, never its identity,
its pickle, its ``repr`` or Python's salted ``hash()``. The key is the same in every
process, on every machine and under every ``PYTHONHASHSEED``. What is not hashed:
code (functions, classes, modules), open resources (files, sockets, generators and
other iterators) and anything else without a tag below; those raise ``NotHashable``,
whose message names the offending part (``input["rows"][3]``) and how to fix it.

For the JSON-like values the key is exactly the seed's (harn-vm's
``value_structural_hash_key``), so nbstep hashes them as Harn does:

=============================  ==========================================================
value                          key
=============================  ==========================================================
None                           ``N``
True / False                   ``T`` / ``F``
int                            ``i<decimal>;``
float                          ``f<IEEE-754 bits as an unsigned decimal>;``
str                            ``s<UTF-8 byte length>:<UTF-8 text>``
bytes                          ``b<lowercase hex>;``
list                           ``L`` + each item's key + ``,`` ... + ``]``
dict, every key a str          ``D`` + per key, sorted: ``<len>:<key>=`` + value key + ``,`` + ``}``
set / frozenset                ``S`` + members' keys sorted bytewise, each + ``,`` + ``}``
=============================  ==========================================================

nbstep's own tags. ``X<n>:<name>`` is an extension tag (``n`` = byte length of the
name); the payload that follows is one or more keys, so every key stays
self-delimiting and a concatenation of keys decodes one way only:

=============================  ==========================================================
value                          key
=============================  ==========================================================
tuple                          ``X5:tuple`` + key of ``list(t)``
dict with a non-str key        ``X4:dict`` + key of the list of ``[k, v]`` pairs sorted by
                               (key of k, key of v)
bytearray                      ``X9:bytearray`` + key of ``bytes(v)``
complex                        ``X7:complex`` + key of real + key of imag (floats)
range                          ``X5:range`` + keys of start, stop, step
datetime.datetime, naive       ``X8:datetime`` + key of ``[local µs since 0001-01-01, fold]``
datetime.datetime, aware       ``X8:datetime`` + key of ``[UTC µs since 0001-01-01, utcoffset
                               µs, zone name]``
datetime.date                  ``X4:date`` + key of the proleptic ordinal
datetime.time                  ``X4:time`` + key of ``[µs since midnight, fold]``, plus
                               ``[..., utcoffset µs or None, zone name]`` if it has a tzinfo
datetime.timedelta             ``X9:timedelta`` + key of total microseconds
datetime.timezone, ZoneInfo    ``X2:tz`` + key of the zone name
decimal.Decimal                ``X7:decimal`` + key of ``str(d)`` (so 1.0 and 1.00 differ)
fractions.Fraction             ``X8:fraction`` + keys of numerator, denominator
uuid.UUID                      ``X4:uuid`` + key of ``str(u)``
PurePosixPath / PosixPath      ``X9:posixpath`` + key of ``str(p)``
PureWindowsPath / WindowsPath  ``X11:windowspath`` + key of ``str(p)``
numpy.ndarray                  ``X7:ndarray`` + dtype + key of the shape list + data: raw
                               bytes of a C-contiguous little-endian copy as
                               ``<nbytes>:<bytes>``; object arrays: ``L`` + each element's
                               key + ``,`` ... + ``]``
numpy scalar (np.generic)      ``X8:npscalar`` + dtype + ``<nbytes>:<bytes>``
numpy.dtype                    ``X7:npdtype`` + dtype as given (byte order kept)
pandas.DataFrame               ``X12:pd.DataFrame`` + columns index + row index + ``L`` +
                               each column's values payload + ``,`` ... + ``]``
pandas.Series                  ``X9:pd.Series`` + key of name + index + values payload
pandas.Index (any flat kind)   ``X8:pd.Index`` + key of ``list(names)`` + values payload
pandas.MultiIndex              ``X13:pd.MultiIndex`` + key of names + ``L`` + each level's
                               values payload (``get_level_values``) + ``,`` ... + ``]``
pandas ExtensionArray          ``X8:pd.array`` + values payload (Categorical included)
pandas.Timestamp / Timedelta   ``X12:pd.Timestamp`` + key of ``[UTC ns since 1970, zone name]``
                               / ``X12:pd.Timedelta`` + key of ``[ns]`` (whatever the unit)
pandas.Period / Interval       ``X9:pd.Period`` + key of ``[freqstr, ordinal]`` /
                               ``X11:pd.Interval`` + key of ``[left, right, closed]``
pandas.NaT / pandas.NA         ``X6:pd.NaT`` / ``X5:pd.NA``
Enum member                    ``E<n>:<module.qualname>`` + key of name + key of value
dataclass instance             ``R<n>:<module.qualname>`` + per compared field, in order:
                               ``<len>:<field>=`` + key + ``,`` + ``}``
other subclass of a tagged     ``C<n>:<module.qualname>`` + the base type's key (so a
type (int, str, dict, ...)     namedtuple or an OrderedDict never equals its base)
=============================  ==========================================================

A numpy dtype is written as the key of ``dtype.str`` after normalizing to little
endian (``<f8``, ``|b1``, ``<U5``, ``<M8[ns]``) or, for a structured dtype, as the
key of its ``descr``. A pandas *values payload* is the key of ``str(dtype)`` then:
numpy dtypes: the ndarray key; category: categories index + ordered (``T``/``F``) +
codes ndarray; tz-aware datetimes: the int64 ndarray of UTC values (the zone is in
``str(dtype)``); strings (``str``/``string``, any storage): null-mask ndarray +
UTF-8 length ndarray (int64) + ``<nbytes>:<concatenated UTF-8>``; nullable
Int/Float/boolean: mask ndarray + values ndarray with NA filled by 0; anything else:
the ndarray key of ``numpy.asarray(values)``.

Large arrays are streamed: ``input_hash`` feeds numpy and Arrow buffers straight
into the digest instead of building the key in memory.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Callable
from typing import Any

from .errors import NotHashable

__all__ = ["NotHashable", "input_hash", "step_identity", "structural_key"]

FIX = "Pass a hashable summary, e.g. a version string or a file's content hash, as the step input."


# --------------------------------------------------------------------------- plumbing

Write = Callable[[Any], Any]


class _Ctx:
    """Where the encoders write: ``w`` small pieces, ``big`` large buffers."""

    __slots__ = ("w", "big", "spill", "seen")

    def __init__(self, w: Write, big: Write, spill: Callable[[], None], seen: set[int]) -> None:
        self.w = w
        self.big = big
        self.spill = spill  # a chance to move buffered bytes into the digest
        self.seen = seen  # ids of the containers being encoded: cycle detection


def _noop() -> None:
    pass


class _HashSink:
    """Buffers small writes (one C call each) and streams big buffers into sha256."""

    __slots__ = ("h", "buf")
    _FLUSH_AT = 1 << 16

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.buf = bytearray()

    def big(self, data: Any) -> None:
        if len(data) < self._FLUSH_AT:
            self.buf.extend(data)
        else:
            self.h.update(self.buf)
            self.buf.clear()
            self.h.update(data)

    def spill(self) -> None:
        if len(self.buf) >= self._FLUSH_AT:
            self.h.update(self.buf)
            self.buf.clear()

    def hexdigest(self) -> str:
        self.h.update(self.buf)
        self.buf.clear()
        return self.h.hexdigest()


class _Unhashable(Exception):
    """Internal: raised at the offending value; containers add path segments on the way up."""

    def __init__(self, value: Any, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.value = value
        self.reason = reason
        self.hint = hint
        self.segments: list[str] = []  # innermost first

    def to_error(self) -> NotHashable:
        path = "input" + "".join(reversed(self.segments))
        type_name = _qualname(type(self.value))
        here = f" (here: {self.hint})" if self.hint else ""
        message = (
            f"cannot hash the step input: {path} (type {type_name}) {self.reason}. "
            f"{FIX[:-1]}{here}."
        )
        return NotHashable(message, path=path, type_name=type_name, reason=self.reason)


def _run(value: Any, ctx: _Ctx) -> None:
    try:
        (_ENC.get(type(value)) or _resolve(value))(value, ctx)
    except _Unhashable as e:
        raise e.to_error() from None
    except RecursionError:
        reason = "is nested more deeply than Python's recursion limit allows"
        raise NotHashable(
            f"cannot hash the step input: it {reason}. {FIX}",
            type_name=_qualname(type(value)),
            reason=reason,
        ) from None


def _feed(value: Any, h: Any) -> None:
    """Write ``structural_key(value)`` into ``h`` (anything with ``update``), streaming."""
    _run(value, _Ctx(h.update, h.update, _noop, set()))


def structural_key(value: Any) -> bytes:
    """The canonical, type-tagged encoding of ``value`` (see the module docstring)."""
    buf = bytearray()
    _run(value, _Ctx(buf.extend, buf.extend, _noop, set()))
    return bytes(buf)


def input_hash(value: Any) -> str:
    """``"sha256:" + sha256(structural_key(value)).hexdigest()``, computed by streaming."""
    sink = _HashSink()
    _run(value, _Ctx(sink.buf.extend, sink.big, sink.spill, set()))
    return "sha256:" + sink.hexdigest()


def step_identity(namespace: str, key: str, sequence: int, input_hash: str) -> str:
    """The seed's record identity: sha256 of ``namespace\\0key\\0sequence\\0input_hash``."""
    material = f"{namespace}\0{key}\0{sequence}\0{input_hash}".encode()
    return "sha256:" + hashlib.sha256(material).hexdigest()


def _sub(value: Any, ctx: _Ctx) -> bytes:
    """The key of ``value`` as bytes (for sorting set members and dict entries)."""
    buf = bytearray()
    sub = _Ctx(buf.extend, buf.extend, _noop, ctx.seen)
    (_ENC.get(type(value)) or _resolve(value))(value, sub)
    return bytes(buf)


def _enc(value: Any, ctx: _Ctx) -> None:
    (_ENC.get(type(value)) or _resolve(value))(value, ctx)


def _qualname(t: type) -> str:
    module = getattr(t, "__module__", None) or "?"
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
    return name if module == "builtins" else f"{module}.{name}"


def _tag(letter: bytes, name: str) -> bytes:
    b = name.encode("utf-8", "surrogatepass")
    return b"%b%d:%b" % (letter, len(b), b)


def _short(value: Any) -> str:
    import reprlib

    return reprlib.repr(value)


def _key_segment(key: Any) -> str:
    if type(key) is str:
        import json

        return f"[{json.dumps(key, ensure_ascii=False)}]"
    return f"[{_short(key)}]"


def _enter(value: Any, ctx: _Ctx) -> int:
    vid = id(value)
    if vid in ctx.seen:
        raise _Unhashable(
            value,
            "contains itself (a reference cycle), so it has no finite encoding",
            "the data the cycle was built from",
        )
    ctx.seen.add(vid)
    return vid


# ------------------------------------------------------------------- seed's encodings

_pack_d = struct.Struct("<d").pack
_unpack_q = struct.Struct("<Q").unpack


def _int_text(v: int) -> bytes:
    try:
        return b"%d" % v
    except ValueError:
        # Python refuses str() of ints over 4300 digits (CVE-2020-10735); convert in chunks.
        sign, n = (b"-", -v) if v < 0 else (b"", v)
        base = 10**1000
        parts = []
        while n >= base:
            n, r = divmod(n, base)
            parts.append(b"%01000d" % r)
        parts.append(b"%d" % n)
        return sign + b"".join(reversed(parts))


def _none(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"N")


def _bool(v: bool, ctx: _Ctx) -> None:
    ctx.w(b"T" if v else b"F")


def _int(v: int, ctx: _Ctx) -> None:
    try:
        ctx.w(b"i%d;" % v)
    except ValueError:
        ctx.w(b"i%b;" % _int_text(v))


def _float(v: float, ctx: _Ctx) -> None:
    ctx.w(b"f%d;" % _unpack_q(_pack_d(v))[0])


def _str(v: str, ctx: _Ctx) -> None:
    # surrogatepass: lone surrogates (os.fsdecode of odd file names) still encode,
    # injectively and in code-point order.
    b = str.encode(v, "utf-8", "surrogatepass")
    ctx.w(b"s%d:%b" % (len(b), b))


def _bytes(v: bytes, ctx: _Ctx) -> None:
    ctx.w(b"b%b;" % bytes.hex(v).encode("ascii"))


def _list(v: list[Any], ctx: _Ctx, opener: bytes = b"L") -> None:
    vid = _enter(v, ctx)
    w = ctx.w
    w(opener)
    i = 0
    try:
        for i, x in enumerate(v):  # noqa: B007 (i is read in the handler)
            (_ENC.get(type(x)) or _resolve(x))(x, ctx)
            w(b",")
    except _Unhashable as e:
        e.segments.append(f"[{i}]")
        raise
    w(b"]")
    ctx.seen.discard(vid)


def _dict(v: dict[Any, Any], ctx: _Ctx) -> None:
    for k in v:
        if type(k) is not str:
            _dict_general(v, ctx)
            return
    vid = _enter(v, ctx)
    w = ctx.w
    w(b"D")
    k = None
    try:
        # Python orders str by code point, which is the byte order of their UTF-8
        # (also with surrogatepass): the order of the seed's BTreeMap<String>.
        for k in sorted(v):
            kb = str.encode(k, "utf-8", "surrogatepass")
            w(b"%d:%b=" % (len(kb), kb))
            x = v[k]
            (_ENC.get(type(x)) or _resolve(x))(x, ctx)
            w(b",")
    except _Unhashable as e:
        e.segments.append(_key_segment(k))
        raise
    w(b"}")
    ctx.seen.discard(vid)


def _dict_general(v: dict[Any, Any], ctx: _Ctx) -> None:
    vid = _enter(v, ctx)
    entries = []
    for k, x in v.items():
        try:
            entries.append((_sub(k, ctx), k, x))
        except _Unhashable as e:
            e.segments.append(f"<key {_short(k)}>")
            raise
    entries.sort(key=lambda entry: entry[0])
    w = ctx.w
    w(b"X4:dictL")
    keys = [entry[0] for entry in entries]
    if len(set(keys)) == len(keys):
        k = None
        try:
            for kk, k, x in entries:  # noqa: B007 (k is read in the handler)
                w(b"L%b," % kk)
                (_ENC.get(type(x)) or _resolve(x))(x, ctx)
                w(b",],")
        except _Unhashable as e:
            e.segments.append(_key_segment(k))
            raise
    else:
        # Distinct keys with one encoding (e.g. two float('nan') objects): order by value too.
        pairs = []
        for kk, k, x in entries:
            try:
                pairs.append((kk, _sub(x, ctx)))
            except _Unhashable as e:
                e.segments.append(_key_segment(k))
                raise
        for kk, vk in sorted(pairs):
            w(b"L%b,%b,]," % (kk, vk))
    w(b"]")
    ctx.seen.discard(vid)


def _set(v: set[Any] | frozenset[Any], ctx: _Ctx) -> None:
    keys = []
    for x in v:
        try:
            keys.append(_sub(x, ctx))
        except _Unhashable as e:
            e.segments.append("{" + _short(x) + "}")
            raise
    keys.sort()  # bytewise, as the seed sorts its Strings
    ctx.w(b"S" + b"".join([k + b"," for k in keys]) + b"}")


# --------------------------------------------------------------------- nbstep's tags


def _tuple(v: tuple[Any, ...], ctx: _Ctx) -> None:
    _list(v, ctx, b"X5:tupleL")  # type: ignore[arg-type]


def _bytearray(v: bytearray, ctx: _Ctx) -> None:
    ctx.w(b"X9:bytearray")
    _bytes(bytes(v), ctx)


def _complex(v: complex, ctx: _Ctx) -> None:
    ctx.w(b"X7:complexf%d;f%d;" % (_unpack_q(_pack_d(v.real))[0], _unpack_q(_pack_d(v.imag))[0]))


def _range(v: range, ctx: _Ctx) -> None:
    # Not normalized: range(0, 3, 2) == range(0, 4, 2), but their stop (and repr) differ.
    ctx.w(b"X5:rangei%b;i%b;i%b;" % (_int_text(v.start), _int_text(v.stop), _int_text(v.step)))


def _us_of_day(v: Any) -> int:
    return ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond


def _us_of_delta(d: Any) -> int:
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _tz_name(tz: Any) -> str | None:
    """A zone's stable name: ZoneInfo key, pytz zone, or str() of a datetime.timezone."""
    if tz is None:
        return None
    key = getattr(tz, "key", None)  # zoneinfo.ZoneInfo
    if type(key) is str:
        return key
    zone = getattr(tz, "zone", None)  # pytz
    if type(zone) is str:
        return zone
    dt = sys.modules.get("datetime")
    if dt is not None and type(tz) is dt.timezone:
        return str(tz)  # "UTC", "UTC+01:00" or the name it was given
    # dateutil and friends: not guaranteed stable across machines (documented).
    return f"{_qualname(type(tz))}:{tz}"


def _datetime(v: Any, ctx: _Ctx) -> None:
    local = (v.toordinal() - 1) * 86_400_000_000 + _us_of_day(v)
    offset = v.utcoffset()
    ctx.w(b"X8:datetime")
    if offset is None:
        _list([local, v.fold], ctx)
    else:
        off = _us_of_delta(offset)
        _list([local - off, off, _tz_name(v.tzinfo)], ctx)


def _date(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X4:datei%d;" % v.toordinal())


def _time(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X4:time")
    if v.tzinfo is None:
        _list([_us_of_day(v), v.fold], ctx)
    else:
        offset = v.utcoffset()
        off = None if offset is None else _us_of_delta(offset)
        _list([_us_of_day(v), v.fold, off, _tz_name(v.tzinfo)], ctx)


def _timedelta(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X9:timedeltai%d;" % _us_of_delta(v))


def _tzinfo(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X2:tz")
    _str(_tz_name(v) or "", ctx)


def _decimal(v: Any, ctx: _Ctx) -> None:
    # str() is canonical for (sign, digits, exponent): 1.0 and 1.00 differ on purpose.
    ctx.w(b"X7:decimal")
    _str(str(v), ctx)


def _fraction(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X8:fractioni%b;i%b;" % (_int_text(v.numerator), _int_text(v.denominator)))


def _uuid(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X4:uuid")
    _str(str(v), ctx)


def _path(v: Any, ctx: _Ctx) -> None:
    pathlib = sys.modules["pathlib"]
    ctx.w(b"X11:windowspath" if isinstance(v, pathlib.PureWindowsPath) else b"X9:posixpath")
    _str(str(v), ctx)


def _enum(v: Any, ctx: _Ctx) -> None:
    ctx.w(_tag(b"E", _qualname(type(v))))
    _enc(v.name, ctx)  # None for a composite Flag on old Pythons
    try:
        _enc(v.value, ctx)
    except _Unhashable as e:
        e.segments.append(".value")
        raise


def _dataclass(v: Any, ctx: _Ctx) -> None:
    vid = _enter(v, ctx)
    w = ctx.w
    w(_tag(b"R", _qualname(type(v))))
    # Only the fields that take part in ==: compare=False marks caches and handles.
    for f in sys.modules["dataclasses"].fields(v):
        if not f.compare:
            continue
        nb = f.name.encode("utf-8", "surrogatepass")
        w(b"%d:%b=" % (len(nb), nb))
        try:
            _enc(getattr(v, f.name), ctx)
        except _Unhashable as e:
            e.segments.append("." + f.name)
            raise
        w(b",")
    w(b"}")
    ctx.seen.discard(vid)


# ---------------------------------------------------------------------------- numpy


def _np_dtype_key(dt: Any, ctx: _Ctx) -> None:
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


def _np_raw(a: Any, ctx: _Ctx) -> None:
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


def _ndarray(a: Any, ctx: _Ctx, pandas: bool = False) -> None:
    dt = a.dtype
    w = ctx.w
    w(b"X7:ndarray")
    if dt.hasobject and dt.kind != "O":
        raise _Unhashable(
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
    except _Unhashable as e:
        if pandas:
            e.segments.append(f".iloc[{i}]")
        else:
            index = sys.modules["numpy"].unravel_index(i, a.shape) if a.ndim else ()
            e.segments.append("[" + ", ".join(str(int(j)) for j in index) + "]")
        raise
    w(b"]")
    ctx.seen.discard(vid)


def _np_scalar(v: Any, ctx: _Ctx) -> None:
    a = sys.modules["numpy"].asarray(v)
    if a.dtype.kind == "O":
        raise _Unhashable(v, "is a numpy scalar nbstep has no canonical encoding for")
    ctx.w(b"X8:npscalar")
    _np_dtype_key(a.dtype.newbyteorder("<"), ctx)
    _np_raw(a, ctx)


def _np_dtype(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X7:npdtype")
    _np_dtype_key(v, ctx)


def _numpy_encoder(t: type) -> Callable[[Any, _Ctx], None] | None:
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


def _pd_values(values: Any, dtype: Any, ctx: _Ctx) -> None:
    np = sys.modules["numpy"]
    pd = sys.modules["pandas"]
    _str(str(dtype), ctx)
    if isinstance(dtype, np.dtype):
        _ndarray(np.asarray(values), ctx, pandas=True)
    elif isinstance(dtype, pd.CategoricalDtype):
        try:
            _index(dtype.categories, ctx)
        except _Unhashable as e:
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


def _pd_strings(values: Any, ctx: _Ctx) -> None:
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


def _index_names(v: Any, ctx: _Ctx) -> None:
    try:
        _list(list(v.names), ctx)
    except _Unhashable as e:
        e.segments.append(".names")
        raise


def _index(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X8:pd.Index")
    _index_names(v, ctx)
    # A RangeIndex hashes as the int64 Index it equals (assert_frame_equal's "equiv").
    _pd_values(_pd_raw(v), v.dtype, ctx)


def _multiindex(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X13:pd.MultiIndex")
    _index_names(v, ctx)
    ctx.w(b"L")
    for i in range(v.nlevels):
        level = v.get_level_values(i)  # materialized: levels/codes are not canonical
        try:
            _pd_values(_pd_raw(level), level.dtype, ctx)
        except _Unhashable as e:
            e.segments.append(f".get_level_values({i})")
            raise
        ctx.w(b",")
    ctx.w(b"]")


def _series(v: Any, ctx: _Ctx) -> None:
    vid = _enter(v, ctx)
    ctx.w(b"X9:pd.Series")
    for segment, part in ((".name", v.name), (".index", v.index)):
        try:
            _enc(part, ctx)
        except _Unhashable as e:
            e.segments.append(segment)
            raise
    _pd_values(_pd_raw(v), v.dtype, ctx)
    ctx.seen.discard(vid)


def _frame(v: Any, ctx: _Ctx) -> None:
    vid = _enter(v, ctx)
    w = ctx.w
    w(b"X12:pd.DataFrame")
    for segment, part in ((".columns", v.columns), (".index", v.index)):
        try:
            _enc(part, ctx)
        except _Unhashable as e:
            e.segments.append(segment)
            raise
    w(b"L")
    for i in range(v.shape[1]):
        column = v.iloc[:, i]
        try:
            _pd_values(_pd_raw(column), column.dtype, ctx)
        except _Unhashable as e:
            e.segments.append(_key_segment(v.columns[i]))
            raise
        w(b",")
        ctx.spill()
    w(b"]")
    ctx.seen.discard(vid)


def _pd_array(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X8:pd.array")
    _pd_values(v, v.dtype, ctx)


_NS_PER = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def _ns(value64: Any) -> int:
    """A numpy datetime64/timedelta64 scalar as exact integer nanoseconds."""
    unit, count = sys.modules["numpy"].datetime_data(value64.dtype)
    return int(value64.astype("int64")) * _NS_PER[unit] * count


def _timestamp(v: Any, ctx: _Ctx) -> None:
    # Unit-free: Timestamp("2020") is "us" in pandas 3 and "ns" in pandas 2, and equal.
    ctx.w(b"X12:pd.Timestamp")
    _list([_ns(v.to_datetime64()), _tz_name(v.tz)], ctx)  # to_datetime64 is UTC if aware


def _pd_timedelta(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X12:pd.Timedelta")
    _list([_ns(v.to_timedelta64())], ctx)


def _period(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X9:pd.Period")
    _list([v.freqstr, int(v.ordinal)], ctx)


def _interval(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X11:pd.Interval")
    _list([v.left, v.right, v.closed], ctx)


def _nat(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X6:pd.NaT")


def _na(v: Any, ctx: _Ctx) -> None:
    ctx.w(b"X5:pd.NA")


def _pandas_encoder(t: type) -> Callable[[Any, _Ctx], None] | None:
    pd = sys.modules.get("pandas")
    if pd is None:
        return None
    table: list[tuple[type, Callable[[Any, _Ctx], None]]] = [
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


# ------------------------------------------------------------------------- dispatch

Encoder = Callable[[Any, _Ctx], None]

_BUILTIN: dict[type, Encoder] = {
    type(None): _none,
    bool: _bool,
    int: _int,
    float: _float,
    str: _str,
    bytes: _bytes,
    list: _list,
    dict: _dict,
    set: _set,
    frozenset: _set,
    tuple: _tuple,
    bytearray: _bytearray,
    complex: _complex,
    range: _range,
}

# Standard-library types, found by module and name so that hashing never imports them:
# an instance can only exist once its module has been imported.
_STDLIB: dict[str, dict[str, Encoder]] = {
    "datetime": {
        "datetime": _datetime,
        "date": _date,
        "time": _time,
        "timedelta": _timedelta,
        "timezone": _tzinfo,
    },
    "zoneinfo": {"ZoneInfo": _tzinfo},
    "decimal": {"Decimal": _decimal},
    "fractions": {"Fraction": _fraction},
    "uuid": {"UUID": _uuid},
}

# Exact type -> encoder; resolved types are cached here (bounded: classes made in a loop).
_ENC: dict[type, Encoder] = dict(_BUILTIN)
_CACHE_LIMIT = 4096


def _stdlib_encoder(t: type) -> Encoder | None:
    names = _STDLIB.get(getattr(t, "__module__", None) or "")
    if names is None:
        return None
    encoder = names.get(t.__qualname__)
    module = sys.modules.get(t.__module__)
    if encoder is None or getattr(module, t.__qualname__, None) is not t:
        return None
    return encoder


def _subclass(t: type, base: Encoder) -> Encoder:
    prefix = _tag(b"C", _qualname(t))

    def encode(v: Any, ctx: _Ctx) -> None:
        ctx.w(prefix)
        base(v, ctx)

    return encode


def _base_encoder(t: type) -> Encoder | None:
    encoder = _BUILTIN.get(t) or _stdlib_encoder(t)
    if encoder is None:
        root = (getattr(t, "__module__", None) or "").partition(".")[0]
        if root == "numpy":
            encoder = _numpy_encoder(t)
        elif root == "pandas":
            encoder = _pandas_encoder(t)
    return encoder


def _type_encoder(t: type) -> Encoder | None:
    root = (getattr(t, "__module__", None) or "").partition(".")[0]
    if root in ("numpy", "pandas"):
        return _base_encoder(t)
    encoder = _stdlib_encoder(t)
    if encoder is not None:
        return encoder
    enum = sys.modules.get("enum")
    if enum is not None and issubclass(t, enum.Enum):
        return _enum
    if getattr(t, "__dataclass_fields__", None) is not None and "dataclasses" in sys.modules:
        return _dataclass
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and issubclass(t, pathlib.PurePath):
        return _path
    zoneinfo = sys.modules.get("zoneinfo")
    if zoneinfo is not None and issubclass(t, zoneinfo.ZoneInfo):
        return _tzinfo
    for base in t.__mro__[1:-1]:
        encoder = _base_encoder(base)
        if encoder is not None:
            return _subclass(t, encoder)
    return None


def _resolve(v: Any) -> Encoder:
    t = type(v)
    encoder = _type_encoder(t)
    if encoder is None:
        raise _Unhashable(v, *_why_not(v))
    if len(_ENC) < _CACHE_LIMIT:
        _ENC[t] = encoder
    return encoder


def _why_not(v: Any) -> tuple[str, str]:
    """Why a value has no encoding (a predicate on it), and a fix specific to it."""
    import types

    io = sys.modules.get("io")
    if type(v).__module__.startswith("numpy.ma"):
        return (
            "is a masked array, whose data under the mask is arbitrary",
            "(arr.filled(fill_value), arr.mask)",
        )
    if isinstance(v, types.GeneratorType | types.AsyncGeneratorType | types.CoroutineType):
        return (
            "is consumed by running it, so it has no stable value to hash",
            "what it is made from, or list(it) if it is small and finite",
        )
    if io is not None and isinstance(v, io.IOBase):
        return (
            "is an open file or stream: a handle, not its content",
            "the file's path and its hashlib.file_digest(f, 'sha256').hexdigest()",
        )
    if isinstance(v, type | types.ModuleType):
        return ("is code (a class or module), not data", "a version string for that code")
    if isinstance(
        v, types.FunctionType | types.BuiltinFunctionType | types.MethodType | types.LambdaType
    ):
        return (
            "is a function, and a function's code, closure and globals are not hashed",
            "a version string for the logic it stands for",
        )
    if hasattr(type(v), "__next__"):
        return (
            "is an iterator, which is consumed by reading it, so it has no stable value",
            "what it iterates over, or list(it) if it is small and finite",
        )
    return (
        "has no stable, process-independent encoding in nbstep "
        "(which never hashes pickles, reprs or object ids)",
        "",
    )
