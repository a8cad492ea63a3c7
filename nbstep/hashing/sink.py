"""Where a structural key is written: the writers, the digest sink, and error paths.

Encoders (:mod:`nbstep.hashing.values`, :mod:`nbstep.hashing.arrays`) write small
pieces through ``ctx.w`` and large buffers through ``ctx.big``; hashing streams both
into sha256 without building the key in memory. A value without an encoding raises
:class:`Unhashable` where it is found, and each container on the way up adds its path
segment, so the error names ``input["rows"][3]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from nbstep.errors import NotHashable

FIX = "Pass a hashable summary, e.g. a version string or a file's content hash, as the step input."

Write = Callable[[Any], Any]


class Ctx:
    """Where the encoders write: ``w`` small pieces, ``big`` large buffers."""

    __slots__ = ("w", "big", "spill", "seen", "classes")

    def __init__(self, w: Write, big: Write, spill: Callable[[], None], seen: set[int],
                 classes: set[type] | None = None) -> None:
        self.w = w
        self.big = big
        self.spill = spill  # a chance to move buffered bytes into the digest
        self.seen = seen  # ids of the containers being encoded: cycle detection
        # When a set: the classes whose name a key wrote (Enum, dataclass, subclass
        # tags), so a caller can add their code (nbstep.hashing.code.PartHasher).
        self.classes = classes


def _noop() -> None:
    pass


class HashSink:
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


class Unhashable(Exception):
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


def _enter(value: Any, ctx: Ctx) -> int:
    vid = id(value)
    if vid in ctx.seen:
        raise Unhashable(
            value,
            "contains itself (a reference cycle), so it has no finite encoding",
            "the data the cycle was built from",
        )
    ctx.seen.add(vid)
    return vid
