"""Turning a step's value into bytes and back, faithfully: one module per family.

:mod:`.registry` picks the codec (``encode``) and reads it back (``decode``);
:mod:`.plain` (JSON), :mod:`.arrow` (pandas), :mod:`.npy` (numpy) and
:mod:`.pickled` (everything else) hold the families; :mod:`.cell` and its helpers
the value of a ``%%step`` record. docs/codecs.md has the layouts and measurements.
"""

from __future__ import annotations

from .registry import CODECS, Encoded, decode, encode

__all__ = ["CODECS", "Encoded", "decode", "encode"]
