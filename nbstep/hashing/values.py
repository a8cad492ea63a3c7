"""Structural keys of Python's own values: the seed's encodings, nbstep's tags, dispatch.

:mod:`nbstep.hashing.recipe` documents every key; this module writes them. Dispatch
is by exact type (a dict lookup, cached); a type seen for the first time is resolved
once: a tagged type, an Enum, a dataclass, a path, or a subclass of a tagged type
(``C`` tag + the base's key). Standard-library types are encoded by
:mod:`nbstep.hashing.stdlib`, numpy and pandas types by :mod:`nbstep.hashing.arrays`;
both register themselves here. Hashing never imports those libraries: an instance
exists only once its module has been imported.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from typing import Any

from .sink import Ctx, Unhashable, _enter, _key_segment, _noop, _qualname, _short, _tag


def _sub(value: Any, ctx: Ctx) -> bytes:
    """The key of ``value`` as bytes (for sorting set members and dict entries)."""
    buf = bytearray()
    sub = Ctx(buf.extend, buf.extend, _noop, ctx.seen, ctx.classes)
    (_ENC.get(type(value)) or _resolve(value))(value, sub)
    return bytes(buf)


def _enc(value: Any, ctx: Ctx) -> None:
    (_ENC.get(type(value)) or _resolve(value))(value, ctx)


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


def _none(v: Any, ctx: Ctx) -> None:
    ctx.w(b"N")


def _bool(v: bool, ctx: Ctx) -> None:
    ctx.w(b"T" if v else b"F")


def _int(v: int, ctx: Ctx) -> None:
    try:
        ctx.w(b"i%d;" % v)
    except ValueError:
        ctx.w(b"i%b;" % _int_text(v))


def _float(v: float, ctx: Ctx) -> None:
    ctx.w(b"f%d;" % _unpack_q(_pack_d(v))[0])


def _str(v: str, ctx: Ctx) -> None:
    # surrogatepass: lone surrogates (os.fsdecode of odd file names) still encode,
    # injectively and in code-point order.
    b = str.encode(v, "utf-8", "surrogatepass")
    ctx.w(b"s%d:%b" % (len(b), b))


def _bytes(v: bytes, ctx: Ctx) -> None:
    ctx.w(b"b%b;" % bytes.hex(v).encode("ascii"))


def _list(v: list[Any], ctx: Ctx, opener: bytes = b"L") -> None:
    vid = _enter(v, ctx)
    w = ctx.w
    w(opener)
    i = 0
    try:
        for i, x in enumerate(v):  # noqa: B007 (i is read in the handler)
            (_ENC.get(type(x)) or _resolve(x))(x, ctx)
            w(b",")
    except Unhashable as e:
        e.segments.append(f"[{i}]")
        raise
    w(b"]")
    ctx.seen.discard(vid)


def _dict(v: dict[Any, Any], ctx: Ctx) -> None:
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
    except Unhashable as e:
        e.segments.append(_key_segment(k))
        raise
    w(b"}")
    ctx.seen.discard(vid)


def _dict_general(v: dict[Any, Any], ctx: Ctx) -> None:
    vid = _enter(v, ctx)
    entries = []
    for k, x in v.items():
        try:
            entries.append((_sub(k, ctx), k, x))
        except Unhashable as e:
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
        except Unhashable as e:
            e.segments.append(_key_segment(k))
            raise
    else:
        # Distinct keys with one encoding (e.g. two float('nan') objects): order by value too.
        pairs = []
        for kk, k, x in entries:
            try:
                pairs.append((kk, _sub(x, ctx)))
            except Unhashable as e:
                e.segments.append(_key_segment(k))
                raise
        for kk, vk in sorted(pairs):
            w(b"L%b,%b,]," % (kk, vk))
    w(b"]")
    ctx.seen.discard(vid)


def _set(v: set[Any] | frozenset[Any], ctx: Ctx) -> None:
    keys = []
    for x in v:
        try:
            keys.append(_sub(x, ctx))
        except Unhashable as e:
            e.segments.append("{" + _short(x) + "}")
            raise
    keys.sort()  # bytewise, as the seed sorts its Strings
    ctx.w(b"S" + b"".join([k + b"," for k in keys]) + b"}")


# --------------------------------------------------------------------- nbstep's tags


def _tuple(v: tuple[Any, ...], ctx: Ctx) -> None:
    _list(v, ctx, b"X5:tupleL")  # type: ignore[arg-type]


def _bytearray(v: bytearray, ctx: Ctx) -> None:
    ctx.w(b"X9:bytearray")
    _bytes(bytes(v), ctx)


def _complex(v: complex, ctx: Ctx) -> None:
    ctx.w(b"X7:complexf%d;f%d;" % (_unpack_q(_pack_d(v.real))[0], _unpack_q(_pack_d(v.imag))[0]))


def _range(v: range, ctx: Ctx) -> None:
    # Not normalized: range(0, 3, 2) == range(0, 4, 2), but their stop (and repr) differ.
    ctx.w(b"X5:rangei%b;i%b;i%b;" % (_int_text(v.start), _int_text(v.stop), _int_text(v.step)))


# ------------------------------------------------------------------------- dispatch

Encoder = Callable[[Any, Ctx], None]

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


# Standard-library types by module and name, so that hashing never imports them (an
# instance can only exist once its module has been imported): {module: {name: encoder}}.
STDLIB: dict[str, dict[str, Encoder]] = {}


# Exact type -> encoder; resolved types are cached here (bounded: classes made in a loop).
_ENC: dict[type, Encoder] = dict(_BUILTIN)


_CACHE_LIMIT = 4096

# Resolvers of the library types hashing knows (by the type's top-level module name),
# and of kinds of type (Enum, dataclass, path...), registered by the modules that
# encode them (.stdlib, .arrays).
ROOT_RESOLVERS: dict[str, Callable[[type], Encoder | None]] = {}
KIND_RESOLVERS: list[Callable[[type], Encoder | None]] = []


def _stdlib_encoder(t: type) -> Encoder | None:
    names = STDLIB.get(getattr(t, "__module__", None) or "")
    if names is None:
        return None
    encoder = names.get(t.__qualname__)
    module = sys.modules.get(t.__module__)
    if encoder is None or getattr(module, t.__qualname__, None) is not t:
        return None
    return encoder


def _subclass(t: type, base: Encoder) -> Encoder:
    prefix = _tag(b"C", _qualname(t))

    def encode(v: Any, ctx: Ctx) -> None:
        ctx.w(prefix)
        if ctx.classes is not None:
            ctx.classes.add(t)
        base(v, ctx)

    return encode


def _base_encoder(t: type) -> Encoder | None:
    encoder = _BUILTIN.get(t) or _stdlib_encoder(t)
    if encoder is None:
        root = (getattr(t, "__module__", None) or "").partition(".")[0]
        resolver = ROOT_RESOLVERS.get(root)
        if resolver is not None:
            encoder = resolver(t)
    return encoder


def _type_encoder(t: type) -> Encoder | None:
    root = (getattr(t, "__module__", None) or "").partition(".")[0]
    if root in ROOT_RESOLVERS:
        return _base_encoder(t)
    encoder = _stdlib_encoder(t)
    if encoder is not None:
        return encoder
    for resolve in KIND_RESOLVERS:
        encoder = resolve(t)
        if encoder is not None:
            return encoder
    for base in t.__mro__[1:-1]:
        encoder = _base_encoder(base)
        if encoder is not None:
            return _subclass(t, encoder)
    return None


def _resolve(v: Any) -> Encoder:
    t = type(v)
    encoder = _type_encoder(t)
    if encoder is None:
        raise Unhashable(v, *_why_not(v))
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
