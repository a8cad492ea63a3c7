"""Structural keys of standard-library values (see :mod:`nbstep.hashing.recipe`).

datetime, zoneinfo, decimal, fractions, uuid and pathlib values, Enum members and
dataclass instances. Registered into :mod:`.values` when imported.
"""

from __future__ import annotations

import sys
from typing import Any

from .sink import Ctx, Unhashable, _enter, _qualname, _tag
from .values import KIND_RESOLVERS, STDLIB, Encoder, _enc, _int_text, _list, _str


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


def _datetime(v: Any, ctx: Ctx) -> None:
    local = (v.toordinal() - 1) * 86_400_000_000 + _us_of_day(v)
    offset = v.utcoffset()
    ctx.w(b"X8:datetime")
    if offset is None:
        _list([local, v.fold], ctx)
    else:
        off = _us_of_delta(offset)
        _list([local - off, off, _tz_name(v.tzinfo)], ctx)


def _date(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X4:datei%d;" % v.toordinal())


def _time(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X4:time")
    if v.tzinfo is None:
        _list([_us_of_day(v), v.fold], ctx)
    else:
        offset = v.utcoffset()
        off = None if offset is None else _us_of_delta(offset)
        _list([_us_of_day(v), v.fold, off, _tz_name(v.tzinfo)], ctx)


def _timedelta(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X9:timedeltai%d;" % _us_of_delta(v))


def _tzinfo(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X2:tz")
    _str(_tz_name(v) or "", ctx)


def _decimal(v: Any, ctx: Ctx) -> None:
    # str() is canonical for (sign, digits, exponent): 1.0 and 1.00 differ on purpose.
    ctx.w(b"X7:decimal")
    _str(str(v), ctx)


def _fraction(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X8:fractioni%b;i%b;" % (_int_text(v.numerator), _int_text(v.denominator)))


def _uuid(v: Any, ctx: Ctx) -> None:
    ctx.w(b"X4:uuid")
    _str(str(v), ctx)


def _path(v: Any, ctx: Ctx) -> None:
    pathlib = sys.modules["pathlib"]
    ctx.w(b"X11:windowspath" if isinstance(v, pathlib.PureWindowsPath) else b"X9:posixpath")
    _str(str(v), ctx)


def _enum(v: Any, ctx: Ctx) -> None:
    ctx.w(_tag(b"E", _qualname(type(v))))
    if ctx.classes is not None:
        ctx.classes.add(type(v))
    _enc(v.name, ctx)  # None for a composite Flag on old Pythons
    try:
        _enc(v.value, ctx)
    except Unhashable as e:
        e.segments.append(".value")
        raise


def _dataclass(v: Any, ctx: Ctx) -> None:
    vid = _enter(v, ctx)
    w = ctx.w
    w(_tag(b"R", _qualname(type(v))))
    if ctx.classes is not None:
        ctx.classes.add(type(v))
    # Only the fields that take part in ==: compare=False marks caches and handles.
    for f in sys.modules["dataclasses"].fields(v):
        if not f.compare:
            continue
        nb = f.name.encode("utf-8", "surrogatepass")
        w(b"%d:%b=" % (len(nb), nb))
        try:
            _enc(getattr(v, f.name), ctx)
        except Unhashable as e:
            e.segments.append("." + f.name)
            raise
        w(b",")
    w(b"}")
    ctx.seen.discard(vid)



STDLIB.update({
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
})


def _kind_encoder(t: type) -> Encoder | None:
    """An Enum, a dataclass, a path or a ZoneInfo subclass: encoded as such."""
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
    return None


KIND_RESOLVERS.append(_kind_encoder)
