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
from typing import Any

from nbstep.errors import NotHashable

from . import arrays, stdlib  # noqa: F401  (they register their encoders)
from .sink import FIX, Ctx, HashSink, Unhashable, _noop, _qualname
from .values import _ENC, _resolve

__all__ = ["input_hash", "input_hash_and_classes", "step_identity", "structural_key"]


def _run(value: Any, ctx: Ctx) -> None:
    try:
        (_ENC.get(type(value)) or _resolve(value))(value, ctx)
    except Unhashable as e:
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
    _run(value, Ctx(h.update, h.update, _noop, set()))


def structural_key(value: Any) -> bytes:
    """The canonical, type-tagged encoding of ``value`` (see the module docstring)."""
    buf = bytearray()
    _run(value, Ctx(buf.extend, buf.extend, _noop, set()))
    return bytes(buf)


def input_hash(value: Any) -> str:
    """``"sha256:" + sha256(structural_key(value)).hexdigest()``, computed by streaming."""
    sink = HashSink()
    _run(value, Ctx(sink.buf.extend, sink.big, sink.spill, set()))
    return "sha256:" + sink.hexdigest()


def input_hash_and_classes(value: Any) -> tuple[str, set[type]]:
    """``input_hash(value)``, and the classes whose names its key holds (Enum members,
    dataclass instances, subclasses of tagged types): their *code* is not in the key."""
    sink = HashSink()
    classes: set[type] = set()
    _run(value, Ctx(sink.buf.extend, sink.big, sink.spill, set(), classes))
    return "sha256:" + sink.hexdigest(), classes


def step_identity(namespace: str, key: str, sequence: int, input_hash: str) -> str:
    """The seed's record identity: sha256 of ``namespace\\0key\\0sequence\\0input_hash``."""
    material = f"{namespace}\0{key}\0{sequence}\0{input_hash}".encode()
    return "sha256:" + hashlib.sha256(material).hexdigest()
