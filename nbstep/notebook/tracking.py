"""What a ``%%step`` cell really reads and changes: its state before and after the run.

Static analysis names what a cell binds and reads; it cannot see what a function
the cell calls changes in place (``model = train(clf, 5)`` fitting ``clf``), which
earlier variable an object is part of (a numpy view, ``model["cfg"] is cfg``), or
what changes outside the cell's variables (a module attribute, the random state).
So before the body runs, :class:`Tracker` takes the *closure* of what the cell can
reach, and digests it again afterwards; whatever changed is an output:

1. the variables the cell reads (also through strings, ``globals()`` and the
   notebook functions it calls, transitively), and the variables the cell binds on
   some paths only;
2. every notebook variable met while digesting those (an object inside another:
   ``model["cfg"] is cfg``; an array sharing another's memory: ``x2[:2, :2]``),
   repeatedly: each is digested on its own (:func:`nbstep.hashing.state.state_digest`);
3. the notebook functions among them: their defaults, closure cells and attributes
   (a default ``cache={}`` filled, a ``nonlocal`` counter);
4. the notebook classes among them and the classes of the objects among them: their
   attributes (``Settings.lr = 5``);
5. the modules among them, named by the cell's attribute chains (``np.random``) or
   read by its functions: which attributes are bound to what (``mod.SCALE = 3``),
   and for a module of the project the state of each attribute (``helpers.CACHE``);
6. process state (:mod:`.globalstate`): the random generators, the environment, the
   import path, the working directory, numpy's, pandas' and matplotlib's options,
   the warning filters;
7. ``sys.modules``: what the run imported is imported again by a replay.

What nbstep cannot see into (an object that pickle refuses: a connection, a lock, a
generator, an open file) and calls whose effect it cannot record
(:data:`UNTRACKED_CALLS`) are *untracked*: the cell is announced and not recorded, so
it recomputes, unless the cell is run with ``--allow-untracked``.
"""

from __future__ import annotations

import sys
import types
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nbstep.codecs.cell_pickle import NOT_REFERENCED
from nbstep.core.names import is_ipython_name, is_shell_value
from nbstep.hashing.code import PartHasher, code_globals, code_strings, is_user_object
from nbstep.hashing.state import Digest, root_owner, state_digest

from . import globalstate

# Calls whose effect on the process nbstep cannot record, by the module-qualified
# name the cell calls them by (a magic by its %name). What they change lives outside
# the notebook's variables and the probes of :mod:`.globalstate`.
UNTRACKED_CALLS = frozenset({
    "torch.manual_seed", "torch.cuda.manual_seed", "torch.cuda.manual_seed_all",
    "torch.random.manual_seed", "torch.set_default_dtype", "torch.set_default_device",
    "torch.use_deterministic_algorithms", "torch.set_num_threads",
    "tensorflow.random.set_seed", "tensorflow.keras.utils.set_random_seed",
    "keras.utils.set_random_seed", "jax.config.update",
    "logging.basicConfig", "logging.config.dictConfig", "logging.config.fileConfig",
    "logging.disable", "sklearn.set_config", "matplotlib.use",
    "matplotlib.pyplot.switch_backend", "os.putenv", "os.unsetenv",
    "sys.setrecursionlimit", "sys.settrace", "sys.setprofile", "signal.signal",
    "atexit.register", "faulthandler.enable",
    "%matplotlib", "%config", "%load_ext", "%reload_ext", "%unload_ext", "%autoreload",
    "%aimport", "%precision", "%xmode", "%run", "%alias", "%logstart",
})

_MISSING = object()


@dataclass
class Changes:
    """What a run changed, as :meth:`Tracker.finish` found it."""

    rebound: list[str] = field(default_factory=list)  # bound to another object, or new
    deleted: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # the same object, another state
    # Rebound or deleted after the run changed the object they were bound to
    # (`clf.fit(X); clf = None`): other holders of that object see the change.
    left_changed: list[str] = field(default_factory=list)
    refs_after: dict[str, set[str]] = field(default_factory=dict)  # who holds whom
    functions: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    classes: list[tuple[type, dict[str, Any]]] = field(default_factory=list)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)  # {probe: change}
    process_inputs: dict[str, str] = field(default_factory=dict)  # {"state:<probe>": part}
    imports: list[str] = field(default_factory=list)


UNSET = ("nbstep-unset",)  # an attribute the run deleted (a tuple: it pickles as data)


def is_unset(value: Any) -> bool:
    """Whether a recorded value is :data:`UNSET` (never ``==`` on a user's value)."""
    return type(value) is tuple and value == UNSET


class Tracker:
    """The closure of one cell's run, before and after (see the module docstring)."""

    def __init__(self, ns: dict[str, Any], hidden: dict[str, Any], user_modules: set[str],
                 hasher: PartHasher) -> None:
        self.ns = ns
        self.hidden = hidden
        self.user_modules = user_modules
        self.hasher = hasher
        self.before: dict[str, Any] = {}
        self.refs: dict[int, str] = {}
        self.owners: dict[int, str] = {}
        self.digests: dict[str, Digest] = {}
        self.used: set[str] = set()  # acted on, by the cell or the functions it uses
        self.functions: dict[int, tuple[Any, str | None]] = {}
        self.classes: dict[int, tuple[type, dict[str, Any], dict[str, str | None]]] = {}
        self.modules: dict[str, tuple[types.ModuleType, dict[str, Any],
                                      dict[str, str | None]]] = {}
        self.process: dict[str, Any] = {}
        self.modules_before: set[str] = set()
        self.parts: dict[str, str] = {}  # input parts of the names the closure added
        self.seeded: dict[str, bool] = {}  # probe -> seeded before its first draw
        self._leads: dict[str, list[tuple[str, bool]]] = {}
        self._unwrap: list[Any] = []

    # -- what counts ----------------------------------------------------------------

    def counts(self, name: str, value: Any) -> bool:
        """A notebook variable of the user's: not IPython's, not nbstep's ``step``."""
        if is_ipython_name(name) or is_shell_value(name, value):
            return False
        return not (name in self.hidden and self.hidden[name] is value)

    # -- before the body ------------------------------------------------------------

    def start(self, reads: Iterable[str], used: Iterable[str], named: Iterable[str],
              chains: Iterable[str], static_parts: dict[str, str]) -> None:
        """Digest the closure of ``reads`` (code) and ``named`` (strings) now.

        ``used``: the reads the cell acts on (not only stores); with what the notebook
        functions among them read, these are the names :meth:`opaque` reports.
        """
        ns = self.ns
        self.before = dict(ns)
        self.modules_before = set(sys.modules)
        numpy = sys.modules.get("numpy")
        for name, value in ns.items():
            if not self.counts(name, value):
                continue
            if numpy is not None and isinstance(value, numpy.ndarray):
                self.owners.setdefault(id(root_owner(value)), name)
            if not isinstance(value, NOT_REFERENCED):
                self.refs.setdefault(id(value), name)
        acting = set(used)
        queue = deque((n, n in acting) for n in reads if n in ns)
        queue.extend((n, False) for n in named if n in ns)
        for chain in chains:
            self._module_chain(chain)
        seen: dict[str, bool] = {}
        while queue:
            name, act = queue.popleft()
            if name not in ns or not self.counts(name, ns[name]):
                continue
            if name in seen and (seen[name] or not act):
                continue
            first = name not in seen
            seen[name] = act
            if act:
                self.used.add(name)
            # What the code of a function the cell uses reads, the cell uses too; an
            # object another one holds is not used by that alone.
            queue.extend((more, act and by_code)
                         for more, by_code in self._visit(name, ns[name], first))
        for name in seen:
            if "var:" + name not in static_parts:
                self.parts["var:" + name] = self.hasher.part(ns[name])
        self.process = globalstate.read_all()
        self._watch_seeds()

    def _visit(self, name: str, value: Any, first: bool = True) -> list[tuple[str, bool]]:
        """Snapshot one variable (the first time); the names it leads to, each with
        whether code reads it (else an object holds it)."""
        if not first:
            return self._leads[name]
        self._leads[name] = leads = self._snapshot(name, value)
        return leads

    def _snapshot(self, name: str, value: Any) -> list[tuple[str, bool]]:
        if isinstance(value, types.ModuleType):
            self._module(value)
            return []
        more: list[tuple[str, bool]] = []
        if isinstance(value, types.FunctionType):
            more += self._function(value)
        elif isinstance(value, type):
            if is_user_object(value, self.user_modules):
                more += self._class(value)
            return more
        else:
            if is_user_object(type(value), self.user_modules):
                more += self._class(type(value))
            digest = state_digest(value, self.refs, self.owners)
            self.digests[name] = digest
            more += [(n, False) for n in sorted(digest.refs)]
            for fn in _functions_of(value):
                more += self._function(fn)
        return more

    def _function(self, fn: types.FunctionType) -> list[tuple[str, bool]]:
        """A notebook function: its mutable state now; the names its code reads."""
        if id(fn) in self.functions or fn.__globals__ is not self.ns:
            return []
        digest = state_digest(_function_state(fn), self.refs, self.owners)
        self.functions[id(fn)] = (fn, digest.digest)
        names = (code_globals(fn.__code__) | code_strings(fn.__code__)) & self.ns.keys()
        more = [(n, True) for n in sorted(names)] + [(n, False) for n in sorted(digest.refs)]
        for cell in fn.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:
                continue
            if isinstance(contents, types.FunctionType):
                more += self._function(contents)
        return more

    def _class(self, cls: type) -> list[tuple[str, bool]]:
        """A notebook class: its attributes now; the names its methods read."""
        if id(cls) in self.classes:
            return []
        members = dict(vars(cls))
        digests = {k: _attribute_digest(v, self.refs, self.owners) for k, v in members.items()}
        self.classes[id(cls)] = (cls, members, digests)
        more: list[tuple[str, bool]] = []
        for member in members.values():
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                more += [n for f in (member.fget, member.fset, member.fdel)
                         if isinstance(f, types.FunctionType) for n in self._function(f)]
            elif isinstance(member, types.FunctionType):
                more += self._function(member)
        for base in cls.__bases__:
            if base is not object and is_user_object(base, self.user_modules):
                more += self._class(base)
        return more

    def _module(self, module: types.ModuleType) -> None:
        name = getattr(module, "__name__", None)
        if not isinstance(name, str) or name in self.modules or sys.modules.get(name) is not module:
            return
        members = dict(vars(module))
        project = is_user_object(module, self.user_modules) or _project(module)
        digests = ({k: _attribute_digest(v, self.refs, self.owners) for k, v in members.items()
                    if not k.startswith("__")} if project else {})
        self.modules[name] = (module, members, digests)

    def _module_chain(self, chain: str) -> None:
        """``np.random.seed`` read: snapshot ``np`` and ``np.random`` (modules only)."""
        first, *rest = chain.split(".")
        value = self.ns.get(first, _MISSING)
        for attribute in [None, *rest]:
            if attribute is not None:
                value = getattr(value, attribute, _MISSING)
            if not isinstance(value, types.ModuleType):
                return
            self._module(value)

    def _watch_seeds(self) -> None:
        """Note, for each random generator, whether the run seeds it before drawing."""
        for probe in globalstate.PROBES:
            if not probe.seeds or self.process.get(probe.name) is None:
                continue
            module = sys.modules[probe.module]
            for attribute in probe.seeds:
                original = getattr(module, attribute, None)
                if original is None:
                    continue
                wrapper = _seed_watcher(self, probe, original)
                setattr(module, attribute, wrapper)
                self._unwrap.append((module, attribute, original, wrapper))

    def stop_watching(self) -> None:
        while self._unwrap:
            module, attribute, original, wrapper = self._unwrap.pop()
            if getattr(module, attribute, None) is wrapper:
                setattr(module, attribute, original)

    # -- after the body -------------------------------------------------------------

    def finish(self) -> Changes:
        self.stop_watching()
        ns, before = self.ns, self.before
        changes = Changes()
        for name, value in ns.items():
            if before.get(name, _MISSING) is not value and self.counts(name, value):
                changes.rebound.append(name)
        changes.deleted = [n for n in before if n not in ns and not is_ipython_name(n)]
        for name, digest in self.digests.items():
            if digest.digest is None:
                continue  # nothing to compare: opaque() reports it when the cell used it
            value = ns.get(name, _MISSING)
            if value is not before[name]:
                # Rebound or deleted (recorded as such); did the run change its object?
                if state_digest(before[name], self.refs, self.owners).digest != digest.digest:
                    changes.left_changed.append(name)
                continue
            after = state_digest(value, self.refs, self.owners)
            changes.refs_after[name] = after.refs
            if after.digest != digest.digest:
                changes.changed.append(name)
        for fn, digest in self.functions.values():
            state = _function_state(fn)
            if state_digest(state, self.refs, self.owners).digest != digest:
                changes.functions.append((fn, state))
        for cls, members, digests in self.classes.values():
            diff = _attribute_changes(vars(cls), members, digests, self.refs, self.owners)
            if diff:
                changes.classes.append((cls, diff))
        for name, (module, members, digests) in self.modules.items():
            installed = not (is_user_object(module, self.user_modules) or _project(module))
            diff = _attribute_changes(vars(module), members, digests, self.refs, self.owners,
                                      module=name, installed=installed)
            if diff:
                changes.modules[name] = diff
        self._process_changes(changes)
        changes.imports = [name for name in sys.modules
                           if name not in self.modules_before and _importable(name)]
        return changes

    def _process_changes(self, changes: Changes) -> None:
        for probe in globalstate.PROBES:
            before = self.process.get(probe.name)
            after = probe.read()
            if before is None and after is None:
                continue
            if before is None or after is None or not probe.same(before, after):
                changes.process[probe.name] = (after if before is None
                                               else probe.change(before, after))
                if probe.is_input and before is not None and not self.seeded.get(probe.name):
                    # It drew from the state it found: that state is an input.
                    changes.process_inputs["state:" + probe.name] = probe.part(before)

    # -- untracked ------------------------------------------------------------------

    def opaque(self) -> list[tuple[str, str]]:
        """``(name, type)`` of variables read in code that pickle cannot see into."""
        found = []
        for name, digest in self.digests.items():
            if digest.digest is None and name in self.used:
                value = self.before[name]
                found.append((name, f"{type(value).__module__}.{type(value).__qualname__}"))
        return found


def untracked_calls(calls: Iterable[str], ns: dict[str, Any]) -> list[str]:
    """The calls among ``calls`` (dotted names as written) whose effect nbstep cannot
    record, by the name the cell wrote them with."""
    found = []
    for call in calls:
        if call.startswith("%"):
            if call in UNTRACKED_CALLS:
                found.append(call)
            continue
        first, _, rest = call.partition(".")
        value = ns.get(first, _MISSING)
        if isinstance(value, types.ModuleType) and rest:
            qualified = f"{value.__name__}.{rest}"
        elif value is not _MISSING and getattr(value, "__module__", None):
            qualified = f"{value.__module__}.{getattr(value, '__name__', first)}"
            if rest:
                qualified += "." + rest
        else:
            continue
        if qualified in UNTRACKED_CALLS:
            found.append(call)
    return found


def _seed_watcher(tracker: Tracker, probe: globalstate.Probe, original: Any) -> Any:
    def seed(*args: Any, **kwargs: Any) -> Any:
        if probe.name not in tracker.seeded:
            # Seeded before any draw when the state is still the one the run found.
            before = tracker.process.get(probe.name)
            tracker.seeded[probe.name] = before is not None and probe.same(before, probe.read())
        return original(*args, **kwargs)

    seed.__wrapped__ = original  # type: ignore[attr-defined]
    return seed


def _function_state(fn: types.FunctionType) -> tuple[Any, ...]:
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:
            cells.append(UNSET)
    return (fn.__defaults__, fn.__kwdefaults__, cells,
            {k: v for k, v in fn.__dict__.items() if k != "__wrapped__"})


def _functions_of(value: Any) -> list[types.FunctionType]:
    """Notebook functions an object holds directly (a bound method, a dict of them)."""
    if isinstance(value, types.MethodType) and isinstance(value.__func__, types.FunctionType):
        return [value.__func__]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, types.FunctionType)]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, types.FunctionType)]
    return []


def _attribute_digest(value: Any, refs: dict[int, str], owners: dict[int, str]) -> str | None:
    if isinstance(value, NOT_REFERENCED) or isinstance(value, (staticmethod, classmethod,
                                                              property)):
        return None  # compared by identity
    return state_digest(value, refs, owners).digest


def _attribute_changes(now: Any, members: dict[str, Any], digests: dict[str, str | None],
                       refs: dict[int, str], owners: dict[int, str],
                       module: str | None = None, installed: bool = False) -> dict[str, Any]:
    """Attributes rebound, added, deleted, or (digested ones) changed in place.

    Not: ``__slotnames__`` (pickle's cache on a class), a module's dunders, private
    names of an installed module (its own bookkeeping: pyplot's backend), and a
    submodule that was imported (a replay imports it again).
    """
    diff: dict[str, Any] = {}
    for key, value in list(now.items()):
        if key == "__slotnames__" or (module is not None and key.startswith("__")):
            continue
        if installed and key.startswith("_"):
            continue
        if (module is not None and isinstance(value, types.ModuleType)
                and value.__name__ == f"{module}.{key}"):
            continue
        old = members.get(key, _MISSING)
        if old is not value:
            diff[key] = value
        elif (digests.get(key) is not None
              and _attribute_digest(value, refs, owners) != digests[key]):
            diff[key] = value
    for key in members:
        if key not in now and not (module is not None and key.startswith("__")):
            if not (installed and key.startswith("_")):
                diff[key] = UNSET
    return diff


def _project(module: types.ModuleType) -> bool:
    from nbstep.hashing.modules import is_project_file

    return is_project_file(getattr(module, "__file__", None))


def _importable(name: str) -> bool:
    """A module a replay can import again by its name."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return spec is not None and getattr(spec, "name", None) == name


__all__ = ["UNSET", "UNTRACKED_CALLS", "Changes", "Tracker", "is_unset", "untracked_calls"]
