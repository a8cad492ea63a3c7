"""The deterministic input of a ``%%step`` cell, as named parts with one hash each.

Recipe (what is hashed, and what is not):

``code``
    sha256 of the cell's canonical AST (:func:`nbstep.hashing.code.canonical`):
    whitespace and comments do not count, everything else does.
``var:NAME``, one per name the cell reads from the namespace before binding it, or
    binds on some paths only (its earlier value may stay), or names in a string
    literal (``df.query("a > @LIMIT")``); every variable when the cell reads the
    namespace dynamically (``globals()``). A name the cell reads when it runs that is
    not defined is ``absent`` (``builtin`` for a builtin's name): defining it later
    is a change. The value parts are :class:`nbstep.hashing.code.PartHasher`'s
    (recipe 2): a module by version, or by the code the kernel runs for a project
    module; a notebook function by its source, defaults, closure and the globals it
    uses; data by its structural hash plus the code of the notebook classes it
    names; another object by its canonical pickle digest, or by the step that
    produced it while nothing changed it (``provenance``); an object pickle refuses
    by its type only (the caller notes such names).

``env:NAME``
    When the cell reads the environment (``os.environ``, ``os.getenv``, ``%env``): each
    identifier in its string literals, by the variable's value or ``absent``.
``state:PROBE``
    Added when the record is made: process state the run drew from without setting it
    first (the random generators, :mod:`.globalstate`).

Parts the tracker adds when the record is made (:mod:`.tracking`): ``var:NAME`` of
every variable in the closure of what the cell read (an object inside another, the
array a view shares memory with), hashed before the run. Comparing with a record,
every part *the record* has is computed now; parts the record does not have are
ignored (:func:`adjusted_parts`).

Names IPython itself puts in the namespace (``In``, ``Out``, ``get_ipython``, the
injected ``step``...) are not inputs unless the user rebound them.
"""

from __future__ import annotations

import builtins
import os
from typing import TYPE_CHECKING, Any

from nbstep.core.names import is_ipython_name, is_shell_value
from nbstep.hashing.code import UNHASHABLE_PREFIX, PartHasher
from nbstep.hashing.modules import sha

from . import globalstate

if TYPE_CHECKING:
    from .analysis import CellAnalysis

_MISSING = object()
ABSENT = "absent"  # a name the cell reads that is not defined
BUILTIN = "builtin"  # ... that is not defined in the notebook but is a builtin


def code_part(canonical_code: str) -> str:
    return sha(canonical_code)


def produced_part(identity: str, name: str) -> str:
    """The part of the object a step's record (its ``identity``) left under ``name``."""
    return sha(f"produced:{identity}\0{name}")


def surely_structural(value: Any) -> bool:
    """A value whose part is surely its structural hash (no need to note who made it)."""
    kind = type(value)
    if kind in (int, float, str, bytes, bool, type(None), complex):
        return True
    module = kind.__module__.partition(".")[0]
    if module == "pandas" and kind.__name__ in ("DataFrame", "Series", "Index"):
        return True
    return module == "numpy" and kind.__name__ == "ndarray" and value.dtype.kind != "O"


class Inputs:
    """The parts of one cell's input in one namespace, computed once each.

    ``provenance(obj)``: the part of an object a step produced, when it has one
    (:meth:`.extension.NotebookExtension.product_part`).
    """

    def __init__(self, user_ns: dict[str, Any], hidden: dict[str, Any],
                 user_module_names: set[str] | None = None,
                 provenance: Any = None) -> None:
        self.ns = user_ns
        self.hidden = hidden
        self.modules = user_module_names or {"__main__"}
        self.hasher = PartHasher(user_ns, self.modules)
        self.hasher.provenance = provenance

    def counts(self, name: str) -> bool:
        """A user variable: defined, not IPython's, not nbstep's injected ``step``."""
        value = self.ns.get(name, _MISSING)
        if value is _MISSING or is_ipython_name(name) or is_shell_value(name, value):
            return False
        return not (name in self.hidden and self.hidden[name] is value)

    def variable(self, name: str) -> str:
        if self.counts(name):
            return self.hasher.part(self.ns[name])
        return BUILTIN if hasattr(builtins, name) else ABSENT

    def part(self, key: str) -> str | None:
        """The current value of the part ``key`` (a record's), None for an unknown kind."""
        kind, _, name = key.partition(":")
        if kind == "var":
            return self.variable(name)
        if kind == "env":
            return environment_part(name)
        if kind == "state":
            probe = globalstate.BY_NAME.get(name)
            return probe.part(probe.read()) if probe is not None else None
        return None

    def parts(self, analysis: CellAnalysis) -> tuple[dict[str, str], list[str]]:
        """The parts of a cell's input, and the names read in code that have no hash
        but their type (nbstep cannot see their state)."""
        parts = {"code": code_part(analysis.canonical)}
        opaque: list[str] = []
        immediate = set(analysis.immediate)
        for name in analysis.reads:
            if self.counts(name):
                parts["var:" + name] = part = self.hasher.part(self.ns[name])
                if part.startswith(UNHASHABLE_PREFIX):
                    opaque.append(name)
            elif name in immediate and not is_ipython_name(name) and name not in self.hidden:
                parts["var:" + name] = BUILTIN if hasattr(builtins, name) else ABSENT
        named = list(analysis.strings)
        if analysis.dynamic:
            named += sorted(self.ns)
        for name in named:
            if "var:" + name not in parts and self.counts(name):
                parts["var:" + name] = self.hasher.part(self.ns[name])
        if analysis.environ:
            for name in analysis.strings:
                parts["env:" + name] = environment_part(name)
        return parts, opaque


def environment_part(name: str) -> str:
    value = os.environ.get(name)
    return ABSENT if value is None else sha("env:" + value)


def input_parts(
    code: str,
    reads: list[str],
    user_ns: dict[str, Any],
    hidden: dict[str, Any],
    user_module_names: set[str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The parts of ``reads`` (names read in code, all evaluated when the cell runs)."""
    from .analysis import CellAnalysis

    analysis = CellAnalysis(reads=list(reads), immediate=list(reads), canonical=code)
    return Inputs(user_ns, hidden, user_module_names).parts(analysis)


def describe_changes(old: dict[str, str], new: dict[str, str]) -> str | None:
    """``the code and variable `threshold``` style text; None when nothing differs."""
    changed: list[str] = []
    if old.get("code") != new.get("code"):
        changed.append("the code")
    undefined = (ABSENT, BUILTIN)
    for name in sorted({*old, *new} - {"code"}):
        kind, _, label = name.partition(":")
        what = {"var": f"variable `{label}`", "env": f"environment variable `{label}`",
                "state": f"the state of `{label}` (its random generator, drawn from "
                         "without seeding it first)"}.get(kind)
        if what is None or old.get(name) == new.get(name):
            continue
        if name not in new or new[name] in undefined:
            changed.append(f"{what} (no longer defined)" if kind != "state" else what)
        elif name not in old:
            changed.append(f"{what} (new input)")
        elif old[name] in undefined:
            changed.append(f"{what} (now defined)")
        else:
            changed.append(what)
    if not changed:
        return None
    if len(changed) == 1:
        return changed[0]
    return ", ".join(changed[:-1]) + " and " + changed[-1]


def recorded_parts(record: Any) -> dict[str, str] | None:
    details = record.details or {}
    parts = details.get("parts") if details.get("cell") else None
    return parts if isinstance(parts, dict) else None


def adjusted_parts(current: dict[str, str], record: Any, ns: dict[str, Any] | None,
                   produced_here: dict[str, Any]) -> dict[str, str]:
    """The current parts, compared on the record's terms.

    A name the record did not read is left out: it was not defined when the step
    ran (or was not read), so it cannot have shaped the record. A name the step
    both read and produced counts as unchanged when the namespace holds the very
    object this step produced or replayed in this kernel, unchanged since: the cell
    is being executed again. In a new kernel, an equal value made by other cells is
    a changed input (``x = x + 1`` after an upstream edit to ``x = 2``).
    ``produced_here`` is ``{name: object}`` this kernel's run or replay of the step left.
    """
    details = record.details or {}
    recorded = details.get("parts") or {}
    produced = details.get("output_parts") or {}
    adjusted: dict[str, str] = {}
    for name, part in recorded.items():
        if name not in current:
            continue
        now = current[name]
        var = name[4:]
        if (name.startswith("var:") and produced.get(var) == now and ns is not None
                and var in produced_here and ns.get(var, _MISSING) is produced_here[var]):
            now = part
        adjusted[name] = now
    return adjusted
