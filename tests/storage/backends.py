"""The backends the storage contract suite runs on, and how a test opens one.

A *location* is what two processes share to see one store (a directory for the
local backend; for the team store, a server URL plus the team's object directory).
``open_store(name, location)`` gives a fresh store object on it, as a new process
would get; tests open several to stand for several processes.

The ``postgresql`` backend runs against a real PostgreSQL server, started once per
test session (tests/pg_server.py); each test gets a database of its own. Each store
object keeps its local mirror and journal in a folder of its own, as a separate
machine would.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from nbstep import codecs
from nbstep.core.record import NewRecord
from nbstep.hashing import input_hash, step_identity
from nbstep.storage.base import StepStore

BACKENDS = ["local", "postgresql"]


def team_location(url: str, objects: str, machines: str | None = None) -> str:
    """A team store's location: its server, the team's object directory, and where
    each store object makes the local folder of its "machine"."""
    return json.dumps({"url": url, "objects": objects, "machines": machines})


def object_root(location: str) -> Path:
    """Where a store's value files are on disk (the one look inside a store)."""
    if location.startswith("{"):
        return Path(json.loads(location)["objects"])
    return Path(location)


def open_store(name: str, location: str, **options: Any) -> StepStore:
    if name == "local":
        from nbstep.storage.local import LocalStore

        return LocalStore(location, **options)
    if name == "postgresql":
        from nbstep.storage.team import TeamStore

        where = json.loads(location)
        machine = options.pop("machine", None) or tempfile.mkdtemp(
            prefix="machine-", dir=where.get("machines"))
        return TeamStore(where["url"], machine, objects=where["objects"], **options)
    raise ValueError(f"no backend {name!r}")


def new_record(namespace: str, key: str, sequence: int, value: Any, input: Any = None,
               reason: str = "first") -> NewRecord:
    """What the engine hands a store for ``step.run(key, input, ...)`` returning ``value``."""
    digest = input_hash(input)
    encoded = codecs.encode(value)
    return NewRecord(namespace, key, sequence, step_identity(namespace, key, sequence, digest),
                     digest, encoded.codec, encoded.data, 0.25, reason)


