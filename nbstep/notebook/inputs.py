"""The deterministic input of a ``%%step`` cell, as named parts with one hash each.

Recipe (what is hashed, and what is not):

``code``
    sha256 of the cell's canonical AST (:func:`nbstep.hashing.code.canonical`):
    whitespace and comments do not count, everything else does.
``var:NAME``, one per name the cell reads from the namespace before binding it
    - a module: its name and version (``__version__``, else its distribution's
      version, else the Python version for the standard library); a module of the
      project itself (a file outside ``sys.prefix``/``sys.base_prefix``) by the
      sha256 of its file, so editing ``helpers.py`` counts as a change;
    - a function defined in the notebook or in a project module: its source
      (canonical AST, so comments do not count), its defaults, and, recursively, the
      parts of the module-level names its code refers to (helpers it calls, constants
      it reads); an installed library's function: module, qualified name and version;
      Code a library generated (attrs' methods: its text is in linecache under a
      ``<...>`` name, or it is a closure of the library's module) counts by its code
      object's content, not its text: a by-value replay gives it another file name;
    - a class defined in the notebook: its name, bases and members, the same way;
    - anything else: ``nbstep.hashing.input_hash(value)``, the canonical structural
      hash. A value that cannot be hashed counts by its type only (its changes are
      not detected); the caller notes such names.

Names IPython itself puts in the namespace (``In``, ``Out``, ``get_ipython``, the
injected ``step``...) are not inputs unless the user rebound them. Names the cell
reads but that do not exist (builtins, typos) are not inputs either.
"""

from __future__ import annotations

import types
from typing import Any

from nbstep.core.names import is_shell_value
from nbstep.hashing.code import PartHasher, code_globals, is_user_object, value_part
from nbstep.hashing.modules import sha

_MISSING = object()


def code_part(canonical_code: str) -> str:
    return sha(canonical_code)


def input_parts(
    code: str,
    reads: list[str],
    user_ns: dict[str, Any],
    hidden: dict[str, Any],
    user_module_names: set[str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The parts of a cell's deterministic input, and the names hashed by type only."""
    modules = user_module_names or {"__main__"}
    hasher = PartHasher(user_ns, modules)
    parts = {"code": code_part(code)}
    unhashable = []
    missing = object()
    for name in reads:
        value = user_ns.get(name, missing)
        if value is missing:
            continue
        if name in hidden and hidden[name] is value:
            continue
        before = len(hasher.unhashable)
        parts["var:" + name] = hasher.part(value)
        if len(hasher.unhashable) > before:
            unhashable.append(name)
    return parts, unhashable


def indirect_reads(reads: list[str], user_ns: dict[str, Any], hidden: dict[str, Any],
                   user_module_names: set[str] | None = None) -> list[str]:
    """Module-level names the notebook functions a cell reads (and calls) read in turn.

    Transitively: a helper's helpers, a decorator's wrapper, the methods of a class the
    cell reads. Only names of ``user_ns`` that are not themselves functions, classes
    or modules, and that the cell does not read directly (``register`` appending to
    ``REGISTRY``): their value may change in place while the cell runs.
    """
    modules = user_module_names or {"__main__"}
    missing = object()
    seen: set[int] = set()
    found: list[str] = []
    direct = set(reads)
    queue: list[Any] = [user_ns.get(name, missing) for name in reads]

    def visit(fn: types.FunctionType) -> None:
        if fn.__globals__ is not user_ns:
            return
        for cell in fn.__closure__ or ():
            try:
                queue.append(cell.cell_contents)
            except ValueError:
                pass
        for name in sorted(code_globals(fn.__code__)):
            value = user_ns.get(name, missing)
            if value is missing or (name in hidden and hidden[name] is value):
                continue
            if isinstance(value, (types.FunctionType, type)):
                queue.append(value)
            elif (not isinstance(value, types.ModuleType) and name not in direct
                  and name not in found and not is_shell_value(name, value)):
                found.append(name)

    while queue:
        value = queue.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, types.FunctionType):
            visit(value)
        elif isinstance(value, types.MethodType):
            queue.append(value.__func__)
        elif isinstance(value, type) and is_user_object(value, modules):
            for member in vars(value).values():
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property):
                    queue.extend(f for f in (member.fget, member.fset, member.fdel) if f)
                elif isinstance(member, types.FunctionType):
                    queue.append(member)
        else:
            if is_user_object(type(value), modules):
                queue.append(type(value))  # an instance: its methods may be called
            try:
                wrapped = getattr(value, "__wrapped__", None)  # lru_cache and the like
            except Exception:
                continue
            if isinstance(wrapped, types.FunctionType):
                queue.append(wrapped)
    return found


def part_or_none(value: Any, ns: dict[str, Any], user_modules: set[str]) -> str | None:
    """A value's part, or None when it has none (hashed by type, or its hash raised)."""
    try:
        return value_part(value, ns, user_modules)
    except Exception:  # a value's own __eq__, __len__ or __getattr__ raising
        return None


def describe_changes(old: dict[str, str], new: dict[str, str]) -> str | None:
    """``the code and variable `threshold``` style text; None when nothing differs."""
    changed: list[str] = []
    if old.get("code") != new.get("code"):
        changed.append("the code")
    for name in sorted({*old, *new} - {"code"}):
        if not name.startswith("var:"):
            continue
        label = name[4:]
        if name not in new:
            changed.append(f"variable `{label}` (no longer defined)")
        elif name not in old:
            changed.append(f"variable `{label}` (new input)")
        elif old[name] != new[name]:
            changed.append(f"variable `{label}`")
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
