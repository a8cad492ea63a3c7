"""The backends the storage contract suite runs on, and how a test opens one.

A *location* is what two processes share to see one store (a directory for the
local backend). ``open_store(name, location)`` gives a fresh store object on it, as
a new process would get; tests open several to stand for several processes.
"""

from __future__ import annotations

from typing import Any

from nbstep import codecs
from nbstep.core.record import NewRecord
from nbstep.hashing import input_hash, step_identity
from nbstep.storage.base import StepStore

BACKENDS = ["local"]


def open_store(name: str, location: str, **options: Any) -> StepStore:
    if name == "local":
        from nbstep.storage.local import LocalStore

        return LocalStore(location, **options)
    raise ValueError(f"no backend {name!r}")


def new_record(namespace: str, key: str, sequence: int, value: Any, input: Any = None,
               reason: str = "first") -> NewRecord:
    """What the engine hands a store for ``step.run(key, input, ...)`` returning ``value``."""
    digest = input_hash(input)
    encoded = codecs.encode(value)
    return NewRecord(namespace, key, sequence, step_identity(namespace, key, sequence, digest),
                     digest, encoded.codec, encoded.data, 0.25, reason)
