"""The team store: one set of steps shared by several machines through PostgreSQL.

``store = "postgresql://..."`` chooses it (docs/team-store.md). :mod:`.store` is the
StepStore, :mod:`.admin` its housekeeping, :mod:`.sql` and :mod:`.schema` everything
said to the server, :mod:`.server` the connection and :mod:`.faults` its errors,
:mod:`.objects` the team's object store, :mod:`.mirror` the local DuckDB mirror,
:mod:`.journal` the offline journal, :mod:`.trust` whose pickles load.
"""

from __future__ import annotations

from .store import TeamStore

__all__ = ["TeamStore"]
