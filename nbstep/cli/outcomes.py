"""What ``nbstep run`` learns about a notebook: its cells' outcomes and step counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nbstep.engine.runtime import STAT_KEYS
from nbstep.errors import NbstepError


@dataclass
class Counts:
    """Step counts, from the engine's counters (None: the kernel could not tell)."""

    replayed: int = 0
    computed: int = 0
    failed: int = 0
    not_persisted: int = 0
    compute_s: float = 0.0
    saved_s: float = 0.0

    def add(self, other: Counts) -> None:
        for name in STAT_KEYS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def steps(self) -> int:
        return self.replayed + self.computed + self.failed


@dataclass
class CellOutcome:
    number: int  # 1-based among the code cells that run
    total: int
    source: str
    elapsed: float
    counts: Counts | None
    error: str | None = None  # "ZeroDivisionError: division by zero", "timed out ..."
    traceback: str = ""


@dataclass
class NotebookResult:
    path: Path
    namespace: str
    store: Path
    kernel: str = "?"
    cells: list[CellOutcome] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    counts_known: bool = True
    wall_s: float = 0.0
    error: str | None = None  # the run failed (a cell, the kernel, an interrupt)
    failed_cell: CellOutcome | None = None
    written: Path | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class RunError(NbstepError):
    """``nbstep run`` was asked for something that cannot be (an unknown kernel)."""


class NotebookFailed(NbstepError):
    """A notebook could not be run at all: unreadable, or its kernel is not installed."""
