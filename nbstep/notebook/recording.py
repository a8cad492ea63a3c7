"""Recording a ``%%step`` cell that ran: which variables, and the record's value.

Which variables a cell's record holds
-------------------------------------
Both static analysis and a run-time comparison, because each misses something:

1. the names the code binds (:mod:`.analysis`): also catches in-place changes
   through ``df["x"] = ...``, ``cfg.lr = ...`` and ``lst += [...]``, which keep the
   object's identity;
2. the names whose binding changed during the run, by identity (new, rebound or
   deleted): catches ``exec``, ``globals()[...]``, ``%store -r`` and magics;
3. names the cell read whose value changed in place (their part hash differs after
   the run, e.g. ``lst.append(1)``, ``np.random.shuffle(arr)``);
4. names the cell read that cannot be hashed but whose methods it called
   (``model.fit(X)``, ``rng.normal()``): they may have changed, so they are
   recorded when they can be persisted, and otherwise left as they are;
5. names the notebook functions the cell reads read in turn (transitively,
   :func:`.inputs.indirect_reads`) whose hash differs after the run: ``@register``
   filling ``REGISTRY``.

IPython's own names (``_``, ``_i3``, ``Out``, ``_exit_code``...) never count.

How they are stored
-------------------
One value per record (:mod:`nbstep.codecs.cell`): modules by name, every other
variable plus the displayed result in one blob (:mod:`nbstep.codecs.cell_pickle`), so
objects shared between variables stay shared. Functions and classes the cell
defines are in that blob *by value*: their defaults, decorators' results, closures
and class attributes are what the cell made, not re-evaluated on replay. An object
in the blob that *is* the value of a notebook variable the cell did not bind is
stored as that name; the record's details list those names as ``references``, and a
replay without one recomputes.
"""

from __future__ import annotations

import pickle
import sys
import types
from typing import TYPE_CHECKING, Any

from nbstep import codecs
from nbstep.codecs import cell as cell_codec
from nbstep.codecs.cell_pickle import Context, encode_values, why_not
from nbstep.core.names import is_ipython_name
from nbstep.errors import NotPersistable
from nbstep.hashing.code import UNHASHABLE_PREFIX, value_part

from . import inputs

if TYPE_CHECKING:
    from nbstep.engine.occurrence import Occurrence

    from .analysis import CellAnalysis
    from .host import Host
    from .options import Options

# Functions are recorded with their compiled code, which is this Python's own.
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"

Problems = list[tuple[str, str]]


class NotRecorded(Exception):
    """A variable the record needs cannot be persisted (the message says which)."""


class Recording:
    """The recording half of a ``%%step`` cell (:class:`.cell.CellStep` inherits it).

    It reads what the cell's run left: the namespace before and after, the analysis
    and input parts, and the occurrence to record into.
    """

    extension: Host
    shell: Any
    options: Options
    occurrence: Occurrence
    analysis: CellAnalysis
    user_ns: dict[str, Any]
    hidden: dict[str, Any]
    user_modules: set[str]
    before: dict[str, Any]
    indirect: dict[str, str]
    parts: dict[str, str]
    unhashable: list[str]
    source: str
    header: str
    filename: str
    cell_id: str | None

    def changed_names(self) -> tuple[list[str], list[str], list[str]]:
        """(bound, deleted, maybe-changed) names, as the module docstring lists them."""
        before, after = self.before, self.user_ns
        missing = object()
        hidden = self.hidden

        def counts(name: str) -> bool:
            if is_ipython_name(name):
                return False
            value = after.get(name, missing)
            return not (name in hidden and hidden[name] is value)

        bound: list[str] = []
        for name in self.analysis.bound:
            if name in after and counts(name):
                bound.append(name)
        for name, value in after.items():
            if name not in bound and before.get(name, missing) is not value and counts(name):
                bound.append(name)
        deleted = [name for name in before if name not in after and not is_ipython_name(name)]
        maybe: list[str] = []
        for name in self.analysis.reads:
            part = self.parts.get("var:" + name)
            if part is None or name in bound or name not in after:
                continue
            value = after[name]
            if isinstance(value, (types.ModuleType, types.FunctionType, type)):
                continue
            if part.startswith(UNHASHABLE_PREFIX):
                if name in self.analysis.touched:
                    maybe.append(name)
            elif value_part(value, after, self.user_modules) != part:
                bound.append(name)  # changed in place
        for name, part in self.indirect.items():
            # Changed in place by a function the cell called (`@register` filling `REGISTRY`).
            if name in bound or name not in after or after[name] is not before.get(name):
                continue
            if inputs.part_or_none(after[name], after, self.user_modules) != part:
                bound.append(name)
        return bound, deleted, maybe

    def record(self, value: Any, outputs: list[Any], duration: float) -> None:
        """Record the cell as its occurrence's value; :class:`NotRecorded` if it cannot be."""
        bound, deleted, maybe = self.changed_names()
        soft = [name for name in bound if name in self.analysis.soft]
        bound = [name for name in bound if name not in soft]
        pickler = Context(self.user_ns, self.before, self.user_modules, self.hidden,
                          recorded={*bound, *soft, *maybe})
        modules, variables, problems = self._variables(bound, pickler)
        # Objects that may have changed, and `with` targets: kept when they persist.
        left_as_is = []
        for name in [*soft, *maybe]:
            if why_not(self.user_ns[name], pickler) is None:
                variables[name] = self.user_ns[name]
            else:
                left_as_is.append(name)
        blob, result = self._encode(value, variables, pickler, problems)
        container = {
            "nbstep_cell": cell_codec.FORMAT,
            "source": self.source,
            "header": self.header,
            "filename": self.filename,
            "modules": modules,
            "values": list(blob) if variables or result == ("value",) else None,
            "deleted": deleted,
            "outputs": outputs,
            "result": result,
        }
        produced = self._produced_parts(variables)
        details = {
            "cell": cell_codec.FORMAT,
            "parts": self.parts,
            "output_parts": produced,
            "variables": sorted([*variables, *modules]),
            "deleted": deleted,
            "hashed_by_type": self.unhashable,
            "left_as_is": left_as_is,
        }
        if self.cell_id:
            details["cell_id"] = self.cell_id
        if pickler.wrote_code:
            details["python"] = PYTHON
        if pickler.referenced and container["values"] is not None:
            details["references"] = sorted(pickler.referenced)
        # Plain data around one blob: pickle it as such. (codecs.encode would take
        # "__main__" inside the blob for a reference and pickle it all again.)
        try:
            outer = codecs.Encoded("pickle", pickle.dumps(container, protocol=5))
        except Exception as e:  # pragma: no cover - outputs are plain data
            raise NotRecorded(f"%%step `{self.options.key}` was not recorded: {e}") from e
        self.occurrence.finish(container, duration, details=details, encoded=outer)
        self.extension.remember_outputs(self.occurrence, produced)
        if self.unhashable and not self.options.quiet:
            names = ", ".join(f"`{n}`" for n in self.unhashable)
            print(f"note: nbstep cannot hash {names}, so a change to "
                  f"{'it' if len(self.unhashable) == 1 else 'them'} will not make "
                  f"`{self.options.key}` recompute (--rerun does)")

    def _variables(self, bound: list[str], pickler: Context
                   ) -> tuple[dict[str, str], dict[str, Any], Problems]:
        """The bound names as modules (by name) and variables, and what cannot be kept."""
        modules: dict[str, str] = {}
        variables: dict[str, Any] = {}
        problems: Problems = []
        for name in bound:
            obj = self.user_ns[name]
            if isinstance(obj, types.ModuleType):
                module_name = obj.__name__
                if sys.modules.get(module_name) is obj:
                    modules[name] = module_name
                else:
                    problems.append((name, f"`{name}` (a module) cannot be persisted: it "
                                           f"cannot be imported by its name `{module_name}`"))
            else:
                variables[name] = obj
        for name, obj in variables.items():
            why = pickler.named_here(obj)
            if why:
                problems.append((name, f"`{name}` ({_type_label(obj)}) cannot be persisted: {why}"))
        return modules, variables, problems

    def _encode(self, value: Any, variables: dict[str, Any], pickler: Context,
                problems: Problems) -> tuple[tuple[str, bytes], Any]:
        """The blob of the variables (and the result), and how the result is kept."""
        payload: dict[str, Any] = {"variables": variables}
        if value is not None:
            payload["result"] = value
        result: Any = ("value",) if value is not None else None
        try:
            blob = encode_values(payload, pickler)
        except NotPersistable:
            for name, obj in variables.items():
                why = why_not(obj, pickler)
                if why is not None:
                    problems.append((name, f"`{name}` ({_type_label(obj)}) cannot be "
                                           f"persisted: {why}"))
            if problems:
                raise NotRecorded(self._not_recorded_message(problems)) from None
            # Only the displayed result does not persist: keep what it showed.
            payload.pop("result", None)
            data, metadata = self.shell.display_formatter.format(value)
            result = ("display", data, metadata)
            blob = encode_values(payload, pickler)
        if problems:
            raise NotRecorded(self._not_recorded_message(problems))
        return blob, result

    def _produced_parts(self, variables: dict[str, Any]) -> dict[str, str]:
        """The parts of the variables the cell both read and bound, as it left them."""
        produced: dict[str, str] = {}
        for name in variables:
            if "var:" + name in self.parts:
                digest = value_part(self.user_ns[name], self.user_ns, self.user_modules)
                if digest is not None:
                    produced[name] = digest
        return produced

    def _not_recorded_message(self, problems: Problems) -> str:
        names = ", ".join(f"`{name}`" for name, _ in problems)
        one = len(problems) == 1
        return (
            f"%%step `{self.options.key}` was not recorded: "
            f"{'variable' if one else 'variables'} {'; '.join(text for _, text in problems)}. "
            "The cell ran and its variables stay in this kernel, but it will run again "
            f"next time: a replay without {names} would break the cells that use "
            f"{'it' if one else 'them'}. Create {'it' if one else 'them'} in a cell of "
            "its own, or `del` it at the end of this one."
        )


def _type_label(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"
