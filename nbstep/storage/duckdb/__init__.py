"""The local backend: one DuckDB file of events, a journal, and object files on disk."""

from __future__ import annotations

from .schema import DB_NAME, FORMAT_VERSION
from .store import DuckDBStore

__all__ = ["DB_NAME", "FORMAT_VERSION", "DuckDBStore"]
