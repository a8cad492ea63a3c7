"""Recording a ``%%step`` cell that ran: what its record holds, and how.

What a record holds (docs/tracking.md has the table)
-----------------------------------------------------
The tracker (:mod:`.tracking`) compares the closure of what the cell read before and
after its run. The record holds:

1. every name the cell binds on all paths (``x = ...``, ``def``, ``import``...),
   whatever it is bound to, so a replay binds it as the run did;
2. every name whose binding the run changed, however (``exec``, ``globals()[...]``,
   a magic, a function's ``global X``), and the names it deleted;
3. every variable of the closure the run changed in place (``train(clf)`` fitting
   ``clf``, ``fill(items, 3)``, a view's memory, ``model["cfg"]["lr"] = 0.5``
   changing ``cfg``): as its state, written back into the object the notebook holds
   on replay (:mod:`nbstep.codecs.cell_state`), so every holder sees it; an object
   that cannot take a state in place (a pandas object, a figure) is recorded whole
   and rebound, and then so is every variable of the closure that holds it (so
   ``fig.axes[0] is ax`` stays true);
4. the state the run changed in notebook functions (defaults, closure cells), in
   classes (``Settings.lr = 5``) and modules (``mod.SCALE = 3``), and in the process
   (:mod:`.globalstate`: the random generators, the environment, ``sys.path``...);
5. the modules it imported (imported again on replay), and its outputs in order,
   with those shown after ``Out[n]`` (the inline backend's figures) marked as such.

How: modules by name; everything else in **one pickle**
(:mod:`nbstep.codecs.cell_pickle`), so objects shared between variables stay
shared. An object in it that *is* an earlier cell's variable the record does not
restore is stored as that name; the record's details list those names as
``references``, and a replay without one recomputes.
"""

from __future__ import annotations

import pickle
import sys
import types
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbstep import codecs
from nbstep.codecs import cell as cell_codec
from nbstep.codecs.cell_pickle import Context, encode_values, why_not
from nbstep.codecs.cell_state import capture_state, inplace_kind
from nbstep.errors import NotPersistable
from nbstep.hashing import input_hash
from nbstep.hashing.code import RECIPE, UNHASHABLE_PREFIX, PartHasher, is_user_object

from . import globalstate, tracking
from .inputs import produced_part

if TYPE_CHECKING:
    from nbstep.engine.occurrence import Occurrence

    from .analysis import CellAnalysis
    from .host import Host
    from .inputs import Inputs
    from .options import Options

# Functions are recorded with their compiled code, which is this Python's own.
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"

Problems = list[tuple[str, str]]
_MISSING = object()


class NotRecorded(Exception):
    """A variable the record needs cannot be persisted (the message says which)."""


@dataclass
class Plan:
    """Which names the record restores, and how."""

    by_value: list[str] = field(default_factory=list)  # rebound to the recorded object
    in_place: dict[str, str] = field(default_factory=dict)  # name -> inplace kind
    soft: list[str] = field(default_factory=list)  # `with` targets: kept if they persist


class Recording:
    """The recording half of a ``%%step`` cell (:class:`.cell.CellStep` inherits it).

    It reads what the cell's run left: the namespace before and after, the analysis,
    the tracker's changes and input parts, and the occurrence to record into.
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
    tracker: tracking.Tracker
    inputs: Inputs
    parts: dict[str, str]
    source: str
    header: str
    filename: str
    cell_id: str | None

    def plan(self, changes: tracking.Changes) -> Plan:
        """Which names to record, and which of them in place (module docstring)."""
        ns, before, analysis = self.user_ns, self.before, self.analysis
        tracker = self.tracker
        plan = Plan()
        maybe = set(analysis.maybe_bound)
        soft = set(analysis.soft)
        names: list[str] = []
        for name in analysis.bound:
            if name in ns and name not in maybe and tracker.counts(name, ns[name]):
                (plan.soft if name in soft else names).append(name)
        for name in [*changes.rebound, *changes.changed]:
            if name not in names and name not in plan.soft:
                names.append(name)

        def user_class(kind: type) -> bool:
            return is_user_object(kind, self.user_modules)

        def add(name: str) -> None:
            value = ns[name]
            kind = inplace_kind(value, user_class) if before.get(name, _MISSING) is value else None
            if kind is not None:
                plan.in_place[name] = kind
            else:
                plan.by_value.append(name)

        for name in names:
            add(name)
        for name in changes.left_changed:
            # The run changed the object, then rebound or deleted the name: its state
            # goes into the object the name holds on replay, before it is rebound.
            kind = inplace_kind(before[name], user_class)
            if kind is not None:
                plan.in_place[name] = kind
        # An object recorded whole comes back as a new one: every variable of the
        # closure that holds the old one is recorded too, so it holds the new one.
        grew = True
        while grew:
            grew = False
            for holder, refs in changes.refs_after.items():
                if holder in plan.by_value or holder in plan.in_place or holder not in ns:
                    continue
                if any(r in plan.by_value and before.get(r, _MISSING) is ns.get(r)
                       for r in refs):
                    add(holder)
                    grew = True
        return plan

    def record(self, value: Any, outputs: list[Any], result_at: int, duration: float,
               changes: tracking.Changes) -> None:
        """Record the cell as its occurrence's value; :class:`NotRecorded` if it cannot be."""
        plan = self.plan(changes)
        ns = self.user_ns
        pickler = Context(ns, self.before, self.user_modules, self.hidden,
                          recorded={*plan.by_value, *plan.soft})
        modules, variables, problems = self._variables(plan.by_value, pickler)
        for name in plan.soft:  # `with` targets: kept when they persist
            if why_not(ns[name], pickler) is None:
                variables[name] = ns[name]
        def in_place_value(name: str) -> Any:
            # The object changed in place: the one bound now, or the one the run left
            # behind when it rebound or deleted the name.
            return ns[name] if name not in changes.left_changed else self.before[name]

        in_place: dict[str, Any] = {}
        for name, kind in plan.in_place.items():
            try:
                in_place[name] = capture_state(in_place_value(name), kind)
            except Exception as e:  # its own __getstate__ raising
                problems.append((name, f"`{name}` ({_type_label(in_place_value(name))}), "
                                       "changed in place, "
                                       f"cannot be persisted: its state raised "
                                       f"{type(e).__name__}: {e}"))
        payload: dict[str, Any] = {
            "variables": variables,
            "in_place": in_place,
            "functions": changes.functions,
            "classes": changes.classes,
            "modules": changes.modules,
            # The rest of the process state (the working directory, import path and
            # environment are plain data, restored before anything loads: below).
            "process": {k: v for k, v in changes.process.items() if k not in globalstate.EARLY},
        }
        blob, result = self._encode(value, payload, pickler, problems)
        imports = [name for name in [*self.analysis.imports, *changes.imports]
                   if name in sys.modules]
        container = {
            "nbstep_cell": cell_codec.FORMAT,
            "source": self.source,
            "header": self.header,
            "filename": self.filename,
            "modules": modules,
            "imports": list(dict.fromkeys(imports)),
            "values": list(blob),
            "deleted": changes.deleted,
            "process": {k: v for k, v in changes.process.items() if k in globalstate.EARLY},
            "outputs": outputs,
            "result_at": result_at,
            "result": result,
        }
        parts = {**self.parts, **self.tracker.parts, **changes.process_inputs}
        restored = sorted({*variables, *modules, *(n for n in plan.in_place if n in ns)})
        # The record's input is every part it depends on, the tracker's included.
        self.occurrence.input_hash = input_hash(parts)
        identity = self.occurrence.identity()
        details = {
            "cell": cell_codec.FORMAT,
            "recipe": RECIPE,
            "parts": parts,
            "output_parts": self._produced_parts(restored, parts, identity),
            "variables": restored,
            "in_place": sorted(plan.in_place),
            "deleted": changes.deleted,
            "process": sorted(changes.process),
            "attributes": sorted({*(f"{name}.{a}" for name, d in changes.modules.items()
                                    for a in d),
                                  *(f"{c.__qualname__}.{a}" for c, d in changes.classes
                                    for a in d)}),
        }
        if self.cell_id:
            details["cell_id"] = self.cell_id
        if pickler.wrote_code:
            details["python"] = PYTHON
        if pickler.referenced:
            details["references"] = sorted(pickler.referenced)
        # Plain data around one blob: pickle it as such. (codecs.encode would take
        # "__main__" inside the blob for a reference and pickle it all again.)
        try:
            outer = codecs.Encoded("pickle", pickle.dumps(container, protocol=5))
        except Exception as e:  # pragma: no cover - outputs are plain data
            raise NotRecorded(f"%%step `{self.options.key}` was not recorded: {e}") from e
        self.occurrence.finish(container, duration, details=details, encoded=outer)
        self.extension.remember_outputs(self.occurrence, details["output_parts"])
        self.extension.note_products(identity, restored)

    def _variables(self, names: list[str], pickler: Context
                   ) -> tuple[dict[str, str], dict[str, Any], Problems]:
        """The names as modules (by name) and variables, and what cannot be kept."""
        modules: dict[str, str] = {}
        variables: dict[str, Any] = {}
        problems: Problems = []
        for name in names:
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

    def _encode(self, value: Any, payload: dict[str, Any], pickler: Context,
                problems: Problems) -> tuple[tuple[str, bytes], Any]:
        """The blob of the variables (and the result), and how the result is kept."""
        if value is not None:
            payload["result"] = value
        result: Any = ("value",) if value is not None else None
        try:
            blob = encode_values(payload, pickler)
        except NotPersistable:
            self._problems(payload, pickler, problems)
            if problems:
                raise NotRecorded(self._not_recorded_message(problems)) from None
            # Only the displayed result does not persist: keep what it showed.
            payload.pop("result", None)
            data, metadata = self.shell.display_formatter.format(value)
            result = ("display", data, metadata)
            try:
                blob = encode_values(payload, pickler)
            except NotPersistable as e:
                raise NotRecorded(self._not_recorded_message(
                    [("state", f"what the cell changed cannot be persisted: {e}")])) from None
        if problems:
            raise NotRecorded(self._not_recorded_message(problems))
        return blob, result

    def _problems(self, payload: dict[str, Any], pickler: Context, problems: Problems) -> None:
        """Name each part of ``payload`` (but the result) that does not persist."""
        for name, obj in payload["variables"].items():
            why = why_not(obj, pickler)
            if why is not None:
                problems.append((name, f"`{name}` ({_type_label(obj)}) cannot be "
                                       f"persisted: {why}"))
        for name, state in payload["in_place"].items():
            why = why_not(state, pickler)
            if why is not None:
                problems.append((name, f"`{name}` ({_qualified(state[1])}), changed in "
                                       f"place, cannot be persisted: {why}"))
        for part in ("functions", "classes", "modules", "process"):
            why = why_not(payload[part], pickler)
            if why is not None:
                problems.append((part, f"what the cell changed in {_WHERE[part]} cannot "
                                       f"be persisted: {why}"))

    def _produced_parts(self, names: list[str], parts: dict[str, str], identity: str
                        ) -> dict[str, str]:
        """The parts of the recorded variables that are inputs too, as the run left them
        (an object without a stable digest: as this record's product)."""
        ns = self.user_ns
        made: dict[int, str] = {}
        for name in names:  # an object under two names counts by the first (as noted)
            if name in ns:
                made.setdefault(id(ns[name]), name)
        names = [name for name in names if "var:" + name in parts and name in ns]
        hasher = PartHasher(ns, self.user_modules)
        hasher.provenance = lambda obj: (produced_part(identity, made[id(obj)])
                                         if id(obj) in made else self.extension.product_part(obj))
        produced: dict[str, str] = {}
        for name in names:
            try:
                digest = hasher.part(ns[name])
            except Exception:  # a value's own __eq__ or __getattr__ raising: no part
                continue
            if not digest.startswith(UNHASHABLE_PREFIX):
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


_WHERE = {"functions": "notebook functions", "classes": "classes", "modules": "modules",
          "process": "the process state"}


def _type_label(value: Any) -> str:
    return _qualified(type(value))


def _qualified(kind: type) -> str:
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"
