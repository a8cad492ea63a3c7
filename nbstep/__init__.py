"""nbstep: durable notebook steps.

``from nbstep import step``; ``step.run(key, [input], handler, [options])`` runs a
handler once, records its result, and replays it afterwards, in this process or
any later one. ``%load_ext nbstep`` adds the ``%%step KEY`` cell magic.

Importing this package is cheap: DuckDB, pandas and pyarrow load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.version import __version__
from .errors import (
    ConfigError,
    NbstepError,
    NotFound,
    NotHashable,
    NotPersistable,
    StepInputMismatch,
    StepNotPersistedWarning,
    StepReplayError,
    StoreBusy,
    StoreDamagedWarning,
    StoreFormatError,
    StoreNotFound,
    StoreOfflineWarning,
    StoreWriteError,
    TeamServerError,
    UntrustedValue,
)

if TYPE_CHECKING:
    from .engine.api import StepAPI, configure, reset, step

_ENGINE_NAMES = ("StepAPI", "configure", "reset", "step")


def __getattr__(name: str) -> Any:
    """``step``, ``configure``... load the engine on first use (PEP 562)."""
    if name in _ENGINE_NAMES:
        from .engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'nbstep' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext nbstep``: the ``%%step`` magic (imported only now, to stay cheap)."""
    from .notebook.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext nbstep``: remove the magics, hooks and ``step`` name again."""
    from .notebook.extension import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "ConfigError",
    "NbstepError",
    "NotFound",
    "NotHashable",
    "NotPersistable",
    "StepAPI",
    "StepInputMismatch",
    "StepNotPersistedWarning",
    "StepReplayError",
    "StoreBusy",
    "StoreDamagedWarning",
    "StoreFormatError",
    "StoreNotFound",
    "StoreOfflineWarning",
    "StoreWriteError",
    "TeamServerError",
    "UntrustedValue",
    "__version__",
    "configure",
    "load_ipython_extension",
    "reset",
    "step",
    "unload_ipython_extension",
]
