"""The options of one ``%%step`` cell, as its line and the settings give them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Options:
    key: str
    namespace: str | None = None
    on_mismatch: str = "rerun"
    rerun: bool = False
    quiet: bool = False
    allow_untracked: bool = False
