"""Where steps are kept: the :class:`StepStore` seam and its backends.

``open_store`` is the one place that picks a backend; everything above this layer
works with the interfaces of :mod:`.base` only. ``local/`` is the local backend,
``team/`` the team store on PostgreSQL.
"""

from __future__ import annotations

import os
from pathlib import Path

from nbstep.errors import StoreNotFound
from nbstep.settings import Settings

from .base import StepStore, StoreAdmin

__all__ = ["StepStore", "StoreAdmin", "open_store"]


def open_store(location: str | os.PathLike[str], settings: Settings, *,
               create: bool = True) -> StepStore:
    """The store at ``location``, tuned by ``settings``.

    A ``postgresql://`` ``store`` setting opens the team store (``team/``), whose
    mirror and journal live under ``location``; otherwise ``location`` is a local
    store directory (``local/``).

    ``create=False`` is for commands that only look: a store that does not exist yet
    is :class:`~nbstep.errors.StoreNotFound` rather than created empty.
    """
    from nbstep.settings import is_server_url

    if is_server_url(settings.store):
        from .team import TeamStore

        assert settings.store is not None
        return TeamStore(settings.store, location, inline_limit=settings.inline_limit,
                         objects=settings.objects, trust=settings.trust,
                         busy_timeout=settings.busy_timeout, linger=settings.linger,
                         keep_versions=settings.keep_versions, create=create)
    from .local import DB_NAME, FORMAT_NAME, LocalStore

    root = Path(location)
    if not create and not ((root / FORMAT_NAME).is_file() or (root / DB_NAME).is_file()):
        where = "(from --store / NBSTEP_STORE)" if os.environ.get("NBSTEP_STORE") else ""
        raise StoreNotFound(
            f"no nbstep store at {root} {where}".rstrip()
            + " (no `format` file there). Pass --store DIR or set NBSTEP_STORE to the store "
            "directory (the `.nbstep` folder); a store is created by the first recorded step."
        )
    return LocalStore(root, linger=settings.linger, busy_timeout=settings.busy_timeout,
                      inline_limit=settings.inline_limit, keep_versions=settings.keep_versions)
