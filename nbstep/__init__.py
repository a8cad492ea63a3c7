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
    "reset",
    "step",
]
