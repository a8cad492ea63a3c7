"""A slot's earlier versions from its events, newest first: the rule every backend uses.

A slot keeps ``keep`` versions, its current record included. Walking its events from
the newest: the first must be ``recorded`` (the current record; a slot whose latest
event is ``forgotten`` has none, and no earlier version either); the ``recorded``
events after it are its earlier versions, up to the first ``forgotten`` event
(``forget`` makes every version before it unreplayable) and at most ``keep - 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from nbstep.core.record import RECORDED

E = TypeVar("E")
DEFAULT_KEEP = 5  # Settings.keep_versions's default


def earlier(newest_first: Iterable[E], keep: int, kind: Callable[[E], str]) -> list[E]:
    """The events that are earlier versions (``kind(event)`` says its kind)."""
    found: list[E] = []
    first = True
    for event in newest_first:
        if kind(event) != RECORDED:
            break
        if first:
            first = False
            continue
        if len(found) >= keep - 1:
            break
        found.append(event)
    return found

