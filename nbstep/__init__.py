"""nbstep: durable notebook steps.

``from nbstep import step``; ``step.run(key, [input], handler, [options])`` runs a
handler once, records its result, and replays it afterwards, in this process or
any later one. ``%load_ext nbstep`` adds the ``%%step KEY`` cell magic.

Importing this package is cheap: DuckDB, pandas and pyarrow load on first use.
"""

from __future__ import annotations

from .api import StepAPI, configure, reset, step
from .errors import (
    ConfigError,
    NbstepError,
    NotHashable,
    NotPersistable,
    StepInputMismatch,
    StepNotPersistedWarning,
    StepReplayError,
    StoreBusy,
    StoreFormatError,
)

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext nbstep``: the ``%%step`` magic (imported only now, to stay cheap)."""
    from .magic import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext nbstep``: remove the magics, hooks and ``step`` name again."""
    from .magic import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "ConfigError",
    "NbstepError",
    "NotHashable",
    "NotPersistable",
    "StepAPI",
    "StepInputMismatch",
    "StepNotPersistedWarning",
    "StepReplayError",
    "StoreBusy",
    "StoreFormatError",
    "__version__",
    "configure",
    "load_ipython_extension",
    "reset",
    "step",
    "unload_ipython_extension",
]
