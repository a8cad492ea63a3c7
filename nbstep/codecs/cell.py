"""The value of a ``%%step`` record, and reading it outside a replay.

A cell's record is one value (format ``nbstep_cell: 3``), a dict of plain data
pickled as such: the transformed source and the name it was compiled under (so
``inspect.getsource`` and tracebacks work after a replay in a new kernel), modules
by name, the modules the run imported, the deleted names, the working directory,
import path and environment changes, the ordered outputs (and where ``Out[n]`` goes
among them), the result, and one blob holding every other variable, the states
written back in place (:mod:`.cell_state`) and the changed attributes of functions,
classes and modules (:mod:`.cell_pickle`). docs/tracking.md lists what changed from
format 2. ``step.inspect()``, ``nbstep show`` and
``nbstep export`` read it with :func:`read_cell`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbstep.errors import NbstepError

from .cell_state import apply_state
from .cell_unpickle import decode_values

FORMAT = 3
# Formats read_cell reads (2: nbstep 0.1's; 3 adds states written back in place, the
# process state, the modules to import again, outputs shown after the result).
READABLE = (2, 3)


class RecordedDisplay:
    """Shows a recorded result that could not be persisted as a value."""

    def __init__(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.data, self.metadata = data, metadata

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.data, self.metadata

    def __repr__(self) -> str:
        return str(self.data.get("text/plain", "<recorded output>"))


def is_cell_record(value: Any) -> bool:
    """Whether a record's decoded value is a ``%%step`` cell's (any format)."""
    return isinstance(value, dict) and "nbstep_cell" in value


@dataclass
class CellRecord:
    """What a ``%%step`` record holds, readable outside the notebook."""

    variables: dict[str, Any]
    has_result: bool
    result: Any
    outputs: list[Any]
    deleted: list[str]
    # The modules the cell bound, {name: module name} (`import pandas as pd`): imported
    # again on replay, never a variable.
    modules: dict[str, str] = field(default_factory=dict)


def read_cell(value: Any, ns: dict[str, Any] | None = None) -> CellRecord:
    """The variables, result and outputs of a ``%%step`` record's value.

    The modules the cell bound are not variables: they are listed by name apart
    (reading a record imports nothing). Classes of earlier notebook cells that this
    process cannot find load as :class:`Unavailable` stand-ins.
    """
    if not is_cell_record(value):
        raise ValueError("not a %%step record")
    if value.get("nbstep_cell") not in READABLE:
        raise NbstepError("this %%step record was made by another version of nbstep; "
                          "run the cell again to record it in this version's format")
    variables: dict[str, Any] = {}
    modules = dict(value.get("modules") or {})
    blob = value.get("values")
    loaded: dict[str, Any] = {}
    if blob is not None:
        loaded = decode_values(blob[0], blob[1], ns, lenient=True)
    variables.update(loaded.get("variables", {}))
    for name, state in (loaded.get("in_place") or {}).items():
        variables[name] = apply_state(None, state)  # a new object holding the state
    result = value.get("result")
    if result is None:
        has_result, shown = False, None
    elif result[0] == "value":
        has_result, shown = True, loaded.get("result")
    else:
        has_result, shown = True, RecordedDisplay(result[1], result[2])
    return CellRecord(dict(sorted(variables.items())), has_result, shown,
                      list(value.get("outputs") or []), list(value.get("deleted") or []),
                      dict(sorted(modules.items())))


def cell_variables(value: Any, ns: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{name: value}`` of the variables a ``%%step`` record restores."""
    return read_cell(value, ns).variables
