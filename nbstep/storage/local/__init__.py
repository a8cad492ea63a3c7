"""The local backend: namespace logs and value files on one disk, a DuckDB mirror."""

from __future__ import annotations

from .layout import DB_NAME, FORMAT_NAME, FORMAT_VERSION
from .store import LocalStore

__all__ = ["DB_NAME", "FORMAT_NAME", "FORMAT_VERSION", "LocalStore"]
