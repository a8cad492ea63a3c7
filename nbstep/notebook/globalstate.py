"""State of the process that a cell changes without binding a variable, and back.

Each :class:`Probe` reads one piece of process-wide state, says whether a run
changed it, and puts it back on replay:

==================  =========================================  ======================
probe               read                                       replayed by
==================  =========================================  ======================
``random``          ``random.getstate()``                      ``random.setstate``
``numpy.random``    numpy's global ``RandomState``             ``np.random.set_state``
``os.environ``      the environment                            setting / unsetting
                                                               the changed variables
``sys.path``        the import path                            the same insertions and
                                                               removals
``cwd``             ``os.getcwd()`` (``%cd``, ``os.chdir``)    ``os.chdir``, relative
``numpy.options``   ``np.get_printoptions()``, ``np.geterr()``  ``np.set_printoptions``,
                                                               ``np.seterr``
``pandas.options``  every registered option                    ``pd.set_option``
``matplotlib.rc``   ``matplotlib.rcParams``                    ``rcParams.update``
``warnings``        ``warnings.filters``                       the same list
==================  =========================================  ======================

A probe whose module is not imported reads nothing (``None``): nothing can have
changed it. A module the run imported is recorded with its whole state, and a
replay (which imports it again) sets what differs from it then. The random
generators are also *inputs*: a cell that draws from them without seeding them
first depends on the state it found (:mod:`.tracking`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from nbstep.hashing import input_hash
from nbstep.hashing.state import state_digest

_UNSET = ("nbstep-unset",)


class Probe:
    """One piece of process state (see the module docstring)."""

    name = ""
    module = ""  # the module that must be imported for the state to exist
    seeds: tuple[str, ...] = ()  # functions of `module` that set the state outright
    is_input = False  # a run that changed it (without seeding it first) depended on it

    def available(self) -> bool:
        return not self.module or self.module in sys.modules

    def read(self) -> Any:
        return self._read() if self.available() else None

    def _read(self) -> Any:
        raise NotImplementedError

    def same(self, before: Any, after: Any) -> bool:
        return bool(before == after)

    def change(self, before: Any, after: Any) -> Any:
        """What to record of a change (by default the state after the run)."""
        return after

    def apply(self, change: Any) -> None:
        raise NotImplementedError

    def part(self, state: Any) -> str:
        """The state as an input part, the same in every process."""
        return "absent" if state is None else input_hash(state)


class PythonRandom(Probe):
    name, module, seeds, is_input = "random", "random", ("seed", "setstate"), True

    def _read(self) -> Any:
        return sys.modules["random"].getstate()

    def apply(self, change: Any) -> None:
        import random

        random.setstate(change)


class NumpyRandom(Probe):
    name, module, seeds, is_input = "numpy.random", "numpy.random", ("seed", "set_state"), True

    def _read(self) -> Any:
        state = sys.modules["numpy.random"].get_state(legacy=True)
        return (state[0], state[1].copy(), *state[2:])

    def same(self, before: Any, after: Any) -> bool:
        return bool(before[0] == after[0] and (before[1] == after[1]).all()
                    and before[2:] == after[2:])

    def apply(self, change: Any) -> None:
        import numpy.random

        numpy.random.set_state(change)

    def part(self, state: Any) -> str:
        if state is None:
            return "absent"
        name, keys, *rest = state
        return input_hash([name, keys, *[int(v) if isinstance(v, int) else float(v)
                                         for v in rest]])


class Environ(Probe):
    name = "os.environ"

    def _read(self) -> Any:
        return dict(os.environ)

    def same(self, before: Any, after: Any) -> bool:
        return bool(before == after)

    def change(self, before: Any, after: Any) -> Any:
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        changed.update({k: _UNSET for k in before if k not in after})
        return changed

    def apply(self, change: Any) -> None:
        for key, value in change.items():
            if type(value) is tuple and value == _UNSET:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class SysPath(Probe):
    name = "sys.path"

    def _read(self) -> Any:
        return list(sys.path)

    def same(self, before: Any, after: Any) -> bool:
        return bool(before == after)

    def change(self, before: Any, after: Any) -> Any:
        kept = set(before)
        # Each added entry with the entry before it, and which copy of that entry it
        # follows (sys.path may hold one folder twice: "" and the notebook's folder).
        added = [(i, entry, after[i - 1] if i else None,
                  after[:i - 1].count(after[i - 1]) if i else 0)
                 for i, entry in enumerate(after) if entry not in kept]
        removed = [entry for entry in before if entry not in set(after)]
        return {"added": added, "removed": removed}

    def apply(self, change: Any) -> None:
        for entry in change["removed"]:
            while entry in sys.path:
                sys.path.remove(entry)
        for _, entry, previous, *copy in change["added"]:  # records before 0.2: no copy
            if entry in sys.path:
                continue
            if previous is None:
                sys.path.insert(0, entry)
            elif previous in sys.path:
                places = [i for i, e in enumerate(sys.path) if e == previous]
                sys.path.insert(places[min(copy[0] if copy else 0, len(places) - 1)] + 1, entry)
            else:
                sys.path.append(entry)


class WorkingDirectory(Probe):
    name = "cwd"

    def _read(self) -> Any:
        return os.getcwd()

    def same(self, before: Any, after: Any) -> bool:
        return bool(before == after)

    def change(self, before: Any, after: Any) -> Any:
        # Relative: the notebook's folder may be elsewhere on the replaying machine.
        return os.path.relpath(after, before)

    def apply(self, change: Any) -> None:
        os.chdir(change)


class NumpyOptions(Probe):
    name, module = "numpy.options", "numpy"

    def _read(self) -> Any:
        numpy = sys.modules["numpy"]
        return {"print": numpy.get_printoptions(), "err": numpy.geterr()}

    def same(self, before: Any, after: Any) -> bool:
        return state_digest(before).digest == state_digest(after).digest  # may hold arrays

    def apply(self, change: Any) -> None:
        import numpy

        numpy.set_printoptions(**change["print"])
        numpy.seterr(**change["err"])


class PandasOptions(Probe):
    name, module = "pandas.options", "pandas"

    def _read(self) -> Any:
        config = sys.modules.get("pandas._config.config")
        tree = getattr(config, "_global_config", None)
        return _flatten(tree) if isinstance(tree, dict) else None

    def same(self, before: Any, after: Any) -> bool:
        return bool(before == after)

    def change(self, before: Any, after: Any) -> Any:
        return {k: v for k, v in after.items() if k not in before or before[k] != v}

    def apply(self, change: Any) -> None:
        import pandas

        now = self._read() or {}
        for key, value in change.items():
            if key not in now or now[key] != value:  # not every option: some are deprecated
                pandas.set_option(key, value)


class MatplotlibRc(Probe):
    name, module = "matplotlib.rc", "matplotlib"

    def _read(self) -> Any:
        params = sys.modules["matplotlib"].rcParams
        # dict.items: RcParams' own item access warns about deprecated keys.
        return {k: v for k, v in dict.items(params) if k != "backend"}

    def same(self, before: Any, after: Any) -> bool:
        return bool(before == after)

    def change(self, before: Any, after: Any) -> Any:
        return {k: v for k, v in after.items() if k not in before or before[k] != v}

    def apply(self, change: Any) -> None:
        import matplotlib

        now = self._read()
        # Values were validated when they were set; dict.update skips that again.
        dict.update(matplotlib.rcParams, {k: v for k, v in change.items()
                                          if k not in now or now[k] != v})


class WarningFilters(Probe):
    name = "warnings"

    def _read(self) -> Any:
        import warnings

        return list(warnings.filters)

    def same(self, before: Any, after: Any) -> bool:
        return bool(before == after)

    def apply(self, change: Any) -> None:
        import warnings

        warnings.filters[:] = change
        warnings._filters_mutated()  # type: ignore[attr-defined]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


PROBES: tuple[Probe, ...] = (PythonRandom(), NumpyRandom(), Environ(), SysPath(),
                             WorkingDirectory(), NumpyOptions(), PandasOptions(),
                             MatplotlibRc(), WarningFilters())
BY_NAME = {probe.name: probe for probe in PROBES}
# Restored before a replay loads anything (where modules are found, the environment
# they may read); plain data, kept outside the record's pickle.
EARLY = ("cwd", "sys.path", "os.environ")


def read_all() -> dict[str, Any]:
    return {probe.name: probe.read() for probe in PROBES}


def apply_changes(changes: dict[str, Any]) -> None:
    """Replay recorded changes (``{probe name: change}``), cwd and import path first."""
    order = {name: i for i, name in enumerate(EARLY)}
    for name in sorted(changes, key=lambda n: order.get(n, len(order))):
        BY_NAME[name].apply(changes[name])
