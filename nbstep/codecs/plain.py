"""The ``json`` codec: plain data that JSON gives back exactly, readable in SQL.

Exact ``dict`` with exact ``str`` keys, ``list``, ``str``, ``int``, finite ``float``,
``bool``, ``None``, nested; decided by a recursive exact-type check, so it never
changes a type (no tuples, NaN, subclasses such as ``OrderedDict`` or ``IntEnum``).
"""

from __future__ import annotations

import json
from typing import Any

_json_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False, allow_nan=False
).encode


_json_decode = json.JSONDecoder().decode



def encode_json(value: Any) -> bytes | None:
    """The UTF-8 bytes of ``value`` as JSON, or None when JSON would change it."""
    if not is_json(value):
        return None
    try:
        return _json_encode(value).encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError):
        # Ints past sys.get_int_max_str_digits(); lone surrogates, which UTF-8
        # cannot carry. Pickle keeps both.
        return None


def decode_json(data: Any) -> Any:
    text = data.decode("utf-8") if type(data) is bytes else str(data, "utf-8")
    return _json_decode(text)


def is_json(value: Any) -> bool:
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
