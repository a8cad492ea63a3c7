"""The ``nbstep`` command line (also ``python -m nbstep``): see :mod:`.main`."""

from __future__ import annotations

from .main import cli, main

__all__ = ["cli", "main"]
