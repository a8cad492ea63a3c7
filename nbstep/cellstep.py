"""One ``%%step`` cell as one durable step: decide, then replay or run and record.

The magic (:mod:`nbstep.magic`) parses its arguments and calls :class:`CellStep`;
everything else happens here, through the engine's ``runtime().begin(...)``.

Which variables a cell's record holds
-------------------------------------
Both static analysis and a run-time comparison, because each misses something:

1. the names the code binds (:mod:`nbstep.cellanalysis`): also catches in-place
   changes through ``df["x"] = ...``, ``cfg.lr = ...`` and ``lst += [...]``, which
   keep the object's identity;
2. the names whose binding changed during the run, by identity (new, rebound or
   deleted): catches ``exec``, ``globals()[...]``, ``%store -r`` and magics;
3. names the cell read whose value changed in place (their input hash differs after
   the run, e.g. ``lst.append(1)``, ``np.random.shuffle(arr)``);
4. names the cell read that cannot be hashed but whose methods it called
   (``model.fit(X)``, ``rng.normal()``): they may have changed, so they are
   recorded when they can be persisted, and otherwise left as they are;
5. names the notebook functions the cell reads read in turn (transitively,
   :func:`nbstep.cellinputs.indirect_reads`) whose hash differs after the run:
   ``@register`` filling ``REGISTRY``.

IPython's own names (``_``, ``_i3``, ``Out``, ``_exit_code``...) never count.

How they are stored
-------------------
One value per record (format ``nbstep_cell: 2``): the transformed source and the name
it was compiled under (so ``inspect.getsource`` and tracebacks work after a replay in
a new kernel), modules by name, the deleted names, the ordered outputs, and one blob
holding every other variable plus the displayed result, pickled together
(:func:`encode_values`) so objects shared between variables stay shared
(``fig, ax = plt.subplots()``, ``handlers = {"f": f}``). Functions and classes the
cell defines are in that blob *by value*: their defaults, decorators' results,
closures and class attributes are what the cell made, not re-evaluated on replay.
Their globals are the notebook's namespace, taken when the record is read.
An object in the blob that *is* the value of a notebook variable the cell did not
bind (a default ``c=conn``, a large array in a closure) is stored as that name
(:meth:`_Context.references`) and looked up in the namespace on replay; the record's
details list those names as ``references``, and a replay without one recomputes.

Which objects an input may stand for
------------------------------------
A name the cell both reads and binds (``x = x + 1``) counts as unchanged only when
the namespace holds the very object this step produced or replayed in this kernel
(:data:`_session_outputs`): executing the cell again replays it, while a new kernel
whose upstream cells made an equal value recomputes.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import functools
import importlib
import inspect
import re
import sys
import threading
import time
import types
import warnings
from dataclasses import dataclass
from typing import Any

from . import cellanalysis, cellcapture, cellinputs
from .api import runtime
from .errors import NbstepError, NotPersistable, StepNotPersistedWarning, StepReplayError

FORMAT = 2
_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
BUILTIN = "%%step"
PyCF_ALLOW_TOP_LEVEL_AWAIT = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0x2000)
_IPYTHON_NAME = re.compile(
    r"^(_+|_i+|_i\d+|_\d+|_oh|_ih|_dh|_exit_code|In|Out|get_ipython|exit|quit|__\w+__)$"
)

# > 0 while a %%step body runs: nested run_cell calls must not restart the counters.
_depth = 0


def body_running() -> bool:
    return _depth > 0


@dataclass
class Options:
    key: str
    namespace: str | None = None
    on_mismatch: str = "rerun"
    rerun: bool = False
    quiet: bool = False


class NotRecorded(Exception):
    """Internal: a variable the record needs cannot be persisted."""


def _is_ipython_name(name: str) -> bool:
    return bool(_IPYTHON_NAME.match(name))


def _hash_or_none(value: Any, ns: dict[str, Any], user_modules: set[str]) -> str | None:
    try:
        return cellinputs.value_hash(value, ns, user_modules)
    except Exception:
        return None


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _type_label(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"


def _flush_inline_figures() -> None:
    """Show matplotlib's pending inline figures now, while outputs are recorded.

    The inline backend shows them in a ``post_execute`` hook, after the cell (and so
    after the capture); showing them here instead makes them part of the record, and
    the hook then finds nothing left to show.
    """
    backend_inline = sys.modules.get("matplotlib_inline.backend_inline")
    mpl = sys.modules.get("matplotlib")
    if backend_inline is None or mpl is None or "matplotlib.pyplot" not in sys.modules:
        return
    get = getattr(mpl.rcParams, "_get_backend_or_none", None)
    backend = get() if get is not None else None
    if backend and "inline" in str(backend).lower():
        backend_inline.flush_figures()


class CellStep:
    """A ``%%step`` cell from its lookup to its outcome."""

    def __init__(self, shell: Any, options: Options, body: str, header: str = "%%step",
                 cell_id: str | None = None) -> None:
        self.shell = shell
        self.cell_id = cell_id  # the notebook cell's id, when the frontend sends one
        self.options = options
        self.body = body
        self.header = header  # the cell's first line, shown by tracebacks and warnings
        self.user_ns: dict[str, Any] = shell.user_ns
        self.hidden: dict[str, Any] = getattr(shell, "user_ns_hidden", {})
        self.user_modules = {getattr(getattr(shell, "user_module", None), "__name__", "__main__")}
        self.occurrence: Any = None
        self.replaying = False
        self.capture: cellcapture.OutputCapture | None = None
        self.body_done = False  # errors after this are nbstep's, not the cell's
        self._started = 0.0
        self._before: dict[str, Any] = {}
        self._indirect: dict[str, str] = {}

    # -- deciding ------------------------------------------------------------------

    def prepare(self) -> None:
        """Transform and analyse the body, hash its input, look the step up."""
        __tracebackhide__ = True
        shell = self.shell
        # Line 1 of the cell is the %%step line: keep line numbers those of the cell.
        self.source = "\n" + shell.transform_cell(self.body)
        self.filename = self._cache_source(self.source)
        try:
            tree = cellanalysis.parse(self.source, self.filename)
        except SyntaxError as e:
            # Normally caught earlier: the magic's input transformer hands a body that
            # does not compile back to IPython, which reports it as for any cell.
            raise e.with_traceback(None) from None
        self.analysis = cellanalysis.analyze(tree)
        transformed = shell.transform_ast(tree)
        self.tree = transformed if transformed is not None else tree
        self.parts, self.unhashable = cellinputs.input_parts(
            self.analysis.canonical, self.analysis.reads, self.user_ns, self.hidden,
            self.user_modules,
        )
        from .hashing import input_hash

        self.input_hash = input_hash(self.parts)
        rt = runtime()
        if rt.user_ns is None:
            rt.user_ns = self.user_ns
        options = self.options
        # An input that the namespace holds because this very step produced it
        # (`x = x + 1` executed again) is not a change, and inputs a record did not
        # have cannot have shaped it: `_matches` compares the parts the record knew.
        occurrence = rt.begin(
            BUILTIN, options.key, self.input_hash, options.namespace, options.on_mismatch,
            options.rerun, what_changed=self._what_changed, matches=self._matches,
            fix=f"run the cell as `%%step {options.key} --rerun`",
        )
        self.occurrence = occurrence
        self.replaying = occurrence.replayable
        record = occurrence.record
        details = (record.details or {}) if record is not None else {}
        if self.replaying and details.get("cell") not in (None, FORMAT):
            # Made by an older nbstep, whose records this one does not replay.
            self.replaying = False
            print(f"recomputing `{options.key}`: its record of {record.occurred_at} was made "
                  "by an older nbstep")
            return
        if self.replaying and details.get("python", _PYTHON) != _PYTHON:
            # Functions are recorded with their compiled code, which is Python's own.
            self.replaying = False
            print(f"recomputing `{options.key}`: its record of {record.occurred_at} holds "
                  f"functions compiled by Python {details['python']}, this kernel runs "
                  f"Python {_PYTHON}")
            return
        missing = [name for name in details.get("references") or [] if name not in self.user_ns]
        if self.replaying and missing:
            # Objects of earlier cells the record holds by name (a default `c=conn`).
            self.replaying = False
            names = ", ".join(f"`{name}`" for name in missing)
            print(f"recomputing `{options.key}`: its record of {record.occurred_at} refers "
                  f"to the notebook {'variable' if len(missing) == 1 else 'variables'} "
                  f"{names}, which {'is' if len(missing) == 1 else 'are'} not defined")
            return
        if record is not None and not self.replaying and not occurrence.rerun:
            other = self._other_cell(record)
            if other:
                sys.stderr.write(f"warning: {other}\n")
            print(f"recomputing `{options.key}`: {self._what_changed(record, hint=False)} "
                  f"changed since the record of {record.occurred_at}")

    def _other_cell(self, record: Any) -> str | None:
        """A warning when the record was made by another cell with the same key."""
        recorded = (record.details or {}).get("cell_id")
        if not recorded or not self.cell_id or recorded == self.cell_id:
            return None
        return (f"key `{self.options.key}` is also used by another cell of this notebook; "
                "give each cell its own key (each of them overwrites the other's record)")

    def _matches(self, record: Any) -> bool:
        recorded = _recorded_parts(record)
        return (recorded is not None
                and _adjusted_parts(self.parts, record, self.user_ns) == recorded)

    def _what_changed(self, record: Any, hint: bool = True) -> str:
        recorded = _recorded_parts(record)
        if recorded is None:
            return "the input (the record was not made by %%step)"
        adjusted = _adjusted_parts(self.parts, record, self.user_ns)
        text = cellinputs.describe_changes(recorded, adjusted or self.parts) or "the input"
        other = self._other_cell(record) if hint else None
        return f"{text} ({other})" if other else text

    # -- replaying -------------------------------------------------------------------

    def replay(self) -> Any:
        """Restore the variables, show the outputs again, return the result.

        A replay that fails counts as a failed step (``runtime().stats["failed"]``).
        """
        __tracebackhide__ = True
        stats = runtime().stats
        key = self.options.key
        try:
            outcome = self.occurrence.replay()
        except StepReplayError as e:
            stats["failed"] += 1
            raise StepReplayError(_magic_fix(str(e), key)) from e.__cause__
        record = outcome.record
        container = outcome.value
        try:
            if not (isinstance(container, dict) and container.get("nbstep_cell") == FORMAT):
                raise StepReplayError(
                    f"cannot replay `{key}`: its record (made {record.occurred_at}) was "
                    "not made by %%step, or by another version of nbstep. Run the cell as "
                    f"`%%step {key} --rerun` to record it again."
                )
            result = self._restore(container, record)
        except StepReplayError:
            # The engine counted a replay; it was not one.
            stats["replayed"] -= 1
            stats["saved_s"] -= record.duration_s or 0.0
            stats["failed"] += 1
            raise
        _remember_outputs(record.namespace, record.key, record.sequence,
                          (record.details or {}).get("output_parts") or {}, self.user_ns)
        cellcapture.replay(self.shell, container.get("outputs") or [])
        if not self.options.quiet:
            # After the outputs: a replayed clear_output() must not wipe this line.
            print(f"replayed `{key}` (recorded {record.occurred_at}, "
                  f"original run {_format_seconds(record.duration_s)})")
        return result

    def _restore(self, container: dict[str, Any], record: Any) -> Any:
        ns = self.user_ns
        values: dict[str, Any] = {}
        try:
            for name in container.get("deleted") or []:
                ns.pop(name, None)
            # Modules first: the values may need them when they load.
            for name, module_name in (container.get("modules") or {}).items():
                ns[name] = importlib.import_module(module_name)
            self._register_source(container)
            blob = container.get("values")
            if blob is not None:
                values = decode_values(blob[0], blob[1], ns)
            ns.update(values.get("variables", {}))
        except NbstepError:
            raise
        except Exception as e:
            raise StepReplayError(
                f"cannot replay `{self.options.key}` (recorded {record.occurred_at}): "
                f"restoring its variables failed with {type(e).__name__}: {e}. Run the "
                f"cell as `%%step {self.options.key} --rerun` to compute and record it again."
            ) from e
        result = container.get("result")
        if result is None:
            return None
        if result[0] == "value":
            return values.get("result")
        return _RecordedDisplay(result[1], result[2])

    def _register_source(self, container: dict[str, Any]) -> None:
        """Make the recorded cell's code readable under the name it was compiled with.

        The replayed functions' code objects point there: ``inspect.getsource`` and
        tracebacks then show the cell's lines, in a new kernel too.
        """
        import linecache

        filename = container.get("filename")
        if not filename or filename in linecache.cache:
            return
        shown = (container.get("header") or BUILTIN) + container["source"]
        linecache.cache[filename] = (len(shown), None, shown.splitlines(keepends=True),
                                     filename)
        filename_map = getattr(self.shell.compile, "_filename_map", None)
        if isinstance(filename_map, dict):  # IPython's "Cell In[n]" in tracebacks
            filename_map.setdefault(filename, max(self.shell.execution_count - 1, 0))

    # -- computing -------------------------------------------------------------------

    def _cache_source(self, source: str) -> str:
        """Register the code with IPython, so tracebacks show ``Cell In[n], line k``.

        The compiled code comes from ``source`` (line 1 empty); the text shown has
        the cell's ``%%step`` line there instead.
        """
        shell = self.shell
        shown = self.header + source
        return shell.compile.cache(shown, max(shell.execution_count - 1, 0))

    def compile_body(self) -> tuple[types.CodeType | None, types.CodeType | None, str]:
        shell = self.shell
        nodes = list(self.tree.body)
        last = nodes[-1] if nodes and isinstance(nodes[-1], ast.Expr) else None
        block_nodes = nodes[:-1] if last is not None else nodes
        flags = PyCF_ALLOW_TOP_LEVEL_AWAIT if getattr(shell, "autoawait", True) else 0
        with shell.compile.extra_flags(flags):
            block = (shell.compile(ast.Module(body=block_nodes, type_ignores=[]),
                                   self.filename, "exec") if block_nodes else None)
            expr = None
            if last is not None:
                expression = ast.Expression(body=last.value)
                ast.copy_location(expression, last)
                expr = shell.compile(expression, self.filename, "eval")
        return block, expr, self.filename

    def start(self) -> None:
        global _depth
        self._before = dict(self.user_ns)
        # Names the functions the cell calls read: hashed now, compared after the body.
        self._indirect = {}
        try:
            names = cellinputs.indirect_reads(self.analysis.reads, self.user_ns, self.hidden,
                                              self.user_modules)
        except Exception:  # a value's own __getattr__ raising: check none of them
            names = []
        for name in names:
            if _is_ipython_name(name):
                continue
            digest = _hash_or_none(self.user_ns[name], self.user_ns, self.user_modules)
            if digest is not None:
                self._indirect[name] = digest
        self.capture = cellcapture.OutputCapture(self.shell).start()
        _depth += 1
        self._started = time.perf_counter()

    def abort(self) -> None:
        """The body raised: stop capturing, record nothing."""
        global _depth
        _depth -= 1
        runtime().stats["failed"] += 1
        if self.capture is not None:
            self.capture.stop()

    def run_sync(self) -> Any:
        __tracebackhide__ = True
        block, expr, _ = self.compile_body()
        self.start()
        try:
            if block is not None:
                _run_code(self.shell, block, self.user_ns)
            value = _run_code(self.shell, expr, self.user_ns) if expr is not None else None
            _flush_inline_figures()
        except BaseException:
            self.abort()
            raise
        return self.end(value)

    async def run_async(self) -> Any:
        __tracebackhide__ = True
        block, expr, _ = self.compile_body()
        self.start()
        try:
            if block is not None:
                await _await_code(self.shell, block, self.user_ns)
            value = await _await_code(self.shell, expr, self.user_ns) if expr is not None else None
            _flush_inline_figures()
        except BaseException:
            self.abort()
            raise
        return self.end(value)

    def end(self, value: Any) -> Any:
        """The body finished: record the step (unless it cannot be persisted)."""
        global _depth
        duration = time.perf_counter() - self._started
        _depth -= 1
        self.body_done = True
        assert self.capture is not None
        outputs = self.capture.stop()
        if cellanalysis.ends_with_semicolon(self.source):
            value = None
        try:
            self._record(value, outputs, duration)
        except NotRecorded as e:
            runtime().stats["not_persisted"] += 1
            runtime().stats["computed"] += 1
            runtime().stats["compute_s"] += duration
            warnings.warn_explicit(
                StepNotPersistedWarning(str(e)), StepNotPersistedWarning,
                self.filename, 1, registry=None,
            )
        return value

    def _changed_names(self) -> tuple[list[str], list[str], list[str]]:
        """(bound, deleted, maybe-changed) names, as the module docstring lists."""
        before, after = self._before, self.user_ns
        missing = object()
        hidden = self.hidden
        def counts(name: str) -> bool:
            if _is_ipython_name(name):
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
        deleted = [name for name in before if name not in after and not _is_ipython_name(name)]
        maybe: list[str] = []
        for name in self.analysis.reads:
            part = self.parts.get("var:" + name)
            if part is None or name in bound or name not in after:
                continue
            value = after[name]
            if isinstance(value, (types.ModuleType, types.FunctionType, type)):
                continue
            if part.startswith(cellinputs.UNHASHABLE_PREFIX):
                if name in self.analysis.touched:
                    maybe.append(name)
            elif cellinputs.value_hash(value, after, self.user_modules) != part:
                bound.append(name)  # changed in place
        for name, part in self._indirect.items():
            # Changed in place by a function the cell called (`@register` filling
            # `REGISTRY`).
            if name in bound or name not in after or after[name] is not before.get(name):
                continue
            if _hash_or_none(after[name], after, self.user_modules) != part:
                bound.append(name)
        return bound, deleted, maybe

    def _record(self, value: Any, outputs: list[Any], duration: float) -> None:
        bound, deleted, maybe = self._changed_names()
        ns = self.user_ns
        soft = [name for name in bound if name in self.analysis.soft]
        bound = [name for name in bound if name not in soft]
        modules: dict[str, str] = {}
        variables: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        for name in bound:
            obj = ns[name]
            if isinstance(obj, types.ModuleType):
                module_name = obj.__name__
                if sys.modules.get(module_name) is obj:
                    modules[name] = module_name
                else:
                    problems.append((name, f"`{name}` (a module) cannot be persisted: it "
                                           f"cannot be imported by its name `{module_name}`"))
            else:
                variables[name] = obj
        pickler = _Context(ns, self._before, self.user_modules, self.hidden,
                           recorded={*bound, *soft, *maybe})
        for name, obj in variables.items():
            why = pickler.named_here(obj)
            if why:
                problems.append((name, f"`{name}` ({_type_label(obj)}) cannot be persisted: "
                                       f"{why}"))
        # Objects that may have changed, and `with` targets: kept when they persist.
        left_as_is = []
        for name in [*soft, *maybe]:
            if _why_not(ns[name], pickler) is None:
                variables[name] = ns[name]
            else:
                left_as_is.append(name)
        payload: dict[str, Any] = {"variables": variables}
        if value is not None:
            payload["result"] = value
        result: Any = ("value",) if value is not None else None
        try:
            blob = encode_values(payload, pickler)
        except NotPersistable:
            for name, obj in variables.items():
                why = _why_not(obj, pickler)
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
        container = {
            "nbstep_cell": FORMAT,
            "source": self.source,
            "header": self.header,
            "filename": self.filename,
            "modules": modules,
            "values": list(blob) if variables or result == ("value",) else None,
            "deleted": deleted,
            "outputs": outputs,
            "result": result,
        }
        produced: dict[str, str] = {}
        for name in variables:
            if "var:" + name in self.parts:
                digest = cellinputs.value_hash(ns[name], ns, self.user_modules)
                if digest is not None:
                    produced[name] = digest
        details = {
            "cell": FORMAT,
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
            details["python"] = _PYTHON
        if pickler.referenced and container["values"] is not None:
            details["references"] = sorted(pickler.referenced)
        import pickle

        from . import codecs

        # Plain data around one blob: pickle it as such. (codecs.encode would take
        # "__main__" inside the blob for a reference and pickle it all again.)
        try:
            outer = codecs.Encoded("pickle", pickle.dumps(container, protocol=5))
        except Exception as e:  # pragma: no cover - outputs are plain data
            raise NotRecorded(f"%%step `{self.options.key}` was not recorded: {e}") from e
        occurrence = self.occurrence
        occurrence.finish(container, duration, details=details, encoded=outer)
        _remember_outputs(occurrence.namespace, occurrence.key, occurrence.sequence, produced,
                          ns)
        if self.unhashable and not self.options.quiet:
            names = ", ".join(f"`{n}`" for n in self.unhashable)
            print(f"note: nbstep cannot hash {names}, so a change to "
                  f"{'it' if len(self.unhashable) == 1 else 'them'} will not make "
                  f"`{self.options.key}` recompute (--rerun does)")

    def _not_recorded_message(self, problems: list[tuple[str, str]]) -> str:
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


# -- pickling a cell's variables -------------------------------------------------------


_NOT_REFERENCED = (int, float, complex, str, bytes, tuple, frozenset, range, type(None),
                   type(Ellipsis), type(NotImplemented), types.ModuleType, types.FunctionType,
                   types.BuiltinFunctionType, type)
_NS_REFERENCE = "nbstep-ns"


class _Context:
    """What pickling a cell's values needs to know about the notebook."""

    def __init__(self, ns: dict[str, Any] | None = None, before: dict[str, Any] | None = None,
                 user_modules: set[str] | None = None, hidden: dict[str, Any] | None = None,
                 recorded: set[str] | None = None) -> None:
        self.ns = ns
        self.before = before or {}
        self.user_modules = user_modules or {"__main__"}
        self.hidden = hidden or {}
        self.recorded = recorded or set()  # the names the record restores
        self.wrote_code = False  # code objects are specific to a Python version
        self.referenced: set[str] = set()  # names the last pickle refers to

    def references(self) -> dict[int, str]:
        """``{id(value): name}`` of the notebook's variables a pickle refers to by name.

        Those the namespace held before the cell ran, still bound to the same object,
        and that the record does not restore itself: a default, closure or decorator
        object holding an earlier cell's connection, lock or large array is stored as
        that variable's name, and is that very object after a replay. Immutable atoms
        (whose identity means nothing: small ints, interned strings, ``()``), modules,
        functions and classes are left out.
        """
        if self.ns is None:
            return {}
        refs: dict[int, str] = {}
        hidden = self.hidden
        for name, value in self.before.items():
            if (name in self.recorded or _is_ipython_name(name)
                    or self.ns.get(name, _MISSING) is not value
                    or (name in hidden and hidden[name] is value)
                    or isinstance(value, _NOT_REFERENCED)
                    or type(value).__name__ in ("ZMQInteractiveShell", "InteractiveShell",
                                                "StepAPI")):
                continue
            refs.setdefault(id(value), name)
        return refs

    def by_name(self, obj: Any) -> bool:
        """A function or class of an earlier cell, found by its name: store the name.

        So an object of a class defined in an earlier cell comes back as an instance
        of that very class (the notebook runs that cell before this one). True when
        ``obj``'s qualified name leads to it from a name the namespace already held,
        with the same object, before this cell ran.
        """
        if getattr(obj, "__module__", None) not in self.user_modules:
            return False
        qualname = getattr(obj, "__qualname__", None)
        if not isinstance(qualname, str) or "<" in qualname:
            return False
        first, *rest = qualname.split(".")
        found = self.before.get(first, _MISSING)
        if found is _MISSING or (self.ns is not None and self.ns.get(first) is not found):
            return False
        for part in rest:
            found = getattr(found, part, _MISSING)
        return found is obj

    def named_here(self, obj: Any) -> str | None:
        """Why ``obj`` would be pickled by a name only this cell defines, else None.

        Objects whose ``__reduce__`` is their name (what a decorator such as
        ``@functools.singledispatchmethod`` or a JIT compiler returns): the next kernel
        would look the name up before anything defined it.
        """
        if isinstance(obj, (types.FunctionType, type)) or type(obj) is _LRU_CACHE_WRAPPER:
            return None  # pickled by value
        if getattr(obj, "__module__", None) not in self.user_modules:
            return None
        if not isinstance(getattr(obj, "__qualname__", None), str) or self.by_name(obj):
            return None
        try:
            reduced = obj.__reduce_ex__(5)
        except Exception:
            return None  # pickling it will say what is wrong
        if not isinstance(reduced, str):
            return None
        return ("pickle stores it by its name, and this very cell defines that name, so a "
                "new kernel could not find it")


def _cell_pickler_class() -> type:
    import cloudpickle

    class CellPickler(cloudpickle.Pickler):
        """cloudpickle, but the notebook's own functions keep the notebook as globals.

        - a function or class of an earlier cell: by name (:meth:`_Context.by_name`);
        - a function whose globals are the notebook's namespace (defined in a cell,
          a lambda, a decorator's wrapper): by value, with its code, defaults,
          closure and attributes, and *no* copy of its globals; it gets the
          namespace it is loaded into (:func:`_make_function`);
        - classes defined in the cell, and everything else: as cloudpickle does
          (classes of ``__main__`` by value, library objects by reference).
        """

        def __init__(self, file: Any, context: _Context) -> None:
            super().__init__(file, protocol=5)
            self.context = context
            self.refs = context.references()
            self.referenced: set[str] = set()

        def persistent_id(self, obj: Any) -> Any:
            # An earlier cell's variable, by its name (see _Context.references).
            name = self.refs.get(id(obj))
            if name is None:
                return None
            self.referenced.add(name)
            return (_NS_REFERENCE, name)

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, (types.FunctionType, type)):
                context = self.context
                if context.by_name(obj):
                    return NotImplemented  # pickle's own save_global
                if (isinstance(obj, types.FunctionType) and context.ns is not None
                        and obj.__globals__ is context.ns):
                    context.wrote_code = True
                    return _reduce_function(obj)
                reduced = super().reducer_override(obj)
                if reduced is not NotImplemented:
                    context.wrote_code = True
                return reduced
            elif type(obj) is functools.cached_property:
                # It holds a lock before Python 3.12; its state is the function.
                return _make_cached_property, (obj.func, obj.attrname)
            elif type(obj) is _LRU_CACHE_WRAPPER and not self.context.by_name(obj):
                # `@lru_cache def f`: pickle would store it by a name this cell defines.
                parameters = obj.cache_parameters()
                return _make_lru_cache, (obj.__wrapped__, parameters["maxsize"],
                                         parameters["typed"])
            return super().reducer_override(obj)

    return CellPickler


_pickler_class: type | None = None


def encode_values(payload: Any, context: _Context | None = None) -> tuple[str, bytes]:
    """Encode a cell's variables together, so objects they share stay shared.

    One pickle (protocol 5) by :func:`_cell_pickler_class`: functions and classes the
    cell defined go by value, those of earlier cells by name.
    """
    import io
    import pickle

    global _pickler_class
    if _pickler_class is None:
        _pickler_class = _cell_pickler_class()
    buffer = io.BytesIO()
    context = context or _Context()
    try:
        pickler = _pickler_class(buffer, context)
        pickler.dump(payload)
        context.referenced = pickler.referenced
    except RecursionError as e:
        raise NotPersistable(f"too deeply nested to pickle ({e})") from e
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        # "cannot pickle 'sqlite3.Connection' object"
        raise NotPersistable(str(e)) from e
    except Exception as e:  # a __reduce__ of the value's own raising
        raise NotPersistable(f"{type(e).__name__}: {e}") from e
    return "pickle", buffer.getvalue()


# The namespace functions get as globals while a blob loads (None: a new one).
_loading_into: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "nbstep_loading_into", default=None)


def decode_values(codec: str, data: Any, ns: dict[str, Any] | None = None,
                  lenient: bool = False) -> Any:
    """Load a blob of :func:`encode_values`; its functions get ``ns`` as globals.

    ``lenient``: a class or function the blob names but this process cannot find
    (a class of an earlier notebook cell, read from the command line) loads as a
    stand-in (:class:`Unavailable`) instead of failing.
    """
    import io

    if codec != "pickle":
        from . import codecs

        return codecs.decode(codec, data)
    token = _loading_into.set(ns if ns is not None else {"__name__": "__main__"})
    try:
        if lenient:
            return _lenient_unpickler_class()(io.BytesIO(bytes(data))).load()
        return _unpickler_class()(io.BytesIO(data)).load()
    finally:
        _loading_into.reset(token)


def _load_reference(pid: Any, lenient: bool = False) -> Any:
    """The notebook variable a pickle refers to by name (``_Context.references``)."""
    import pickle

    if not (isinstance(pid, tuple) and len(pid) == 2 and pid[0] == _NS_REFERENCE):
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    name = pid[1]
    ns = _loading_into.get() or {}
    if name in ns:
        return ns[name]
    if lenient:
        return NotebookVariable(name)
    raise LookupError(f"the record refers to the notebook variable `{name}` (an earlier "
                      "cell's object), which is not defined; run the cell that defines it "
                      "first")


@functools.cache
def _unpickler_class() -> type:
    import pickle

    class CellUnpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return _load_reference(pid)

    return CellUnpickler


class NotebookVariable:
    """Stands for an earlier cell's variable a record refers to, read outside the notebook."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<notebook variable `{self.name}`>"


class _EmptyCell:
    """Stands for an empty closure cell in a pickled function's state."""


def _reduce_function(func: types.FunctionType) -> tuple[Any, ...]:
    """A notebook function as (maker, args, state): the state, set after the function
    exists, may refer back to it (recursion, a decorator's wrapper and its original)."""
    closure = []
    for cell in func.__closure__ or ():
        try:
            closure.append(cell.cell_contents)
        except ValueError:
            closure.append(_EmptyCell)
    state = {
        "qualname": func.__qualname__,
        "module": func.__module__,
        "doc": func.__doc__,
        "defaults": func.__defaults__,
        "kwdefaults": func.__kwdefaults__,
        "annotations": func.__annotations__,
        "dict": dict(func.__dict__),
        "closure": closure,
    }
    type_params = getattr(func, "__type_params__", None)
    if type_params:
        state["type_params"] = type_params
    # cloudpickle stores code under the file name "<dynamic-code>"; keep the cell's
    # name, under which a replay registers the cell's text (inspect.getsource,
    # tracebacks, and so the hash of a replayed function equals the original's).
    code = func.__code__
    return (_make_function, (code, func.__name__, len(closure), code.co_filename), state,
            None, None, _set_function_state)


_LRU_CACHE_WRAPPER = type(functools.lru_cache(lambda: None))


def _make_lru_cache(func: Any, maxsize: int | None, typed: bool) -> Any:
    return functools.lru_cache(maxsize=maxsize, typed=typed)(func)


def _make_cached_property(func: Any, attrname: str | None) -> functools.cached_property:
    made = functools.cached_property(func)
    if attrname is not None:
        made.__set_name__(None, attrname)  # set by the class statement, not by setattr
    return made


def _empty_cell() -> Any:
    if False:  # pragma: no cover - makes `value` a free variable of the lambda
        value = None
    return (lambda: value).__closure__[0]  # type: ignore[union-attr]


def _make_function(code: types.CodeType, name: str, free: int,
                   filename: str | None = None) -> types.FunctionType:
    ns = _loading_into.get()
    if ns is None:
        ns = {"__name__": "__main__"}
    if filename and code.co_filename != filename:
        code = _with_filename(code, filename)
    closure = tuple(_empty_cell() for _ in range(free)) if free else None
    return types.FunctionType(code, ns, name, None, closure)


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    """``code`` and the code objects nested in it, compiled from ``filename``."""
    consts = tuple(_with_filename(c, filename) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _set_function_state(func: types.FunctionType, state: dict[str, Any]) -> None:
    func.__qualname__ = state["qualname"]
    func.__module__ = state["module"]
    func.__doc__ = state["doc"]
    func.__defaults__ = state["defaults"]
    func.__kwdefaults__ = state["kwdefaults"]
    func.__annotations__ = state["annotations"]
    func.__dict__.update(state["dict"])
    if "type_params" in state:
        func.__type_params__ = state["type_params"]  # type: ignore[attr-defined]
    for cell, value in zip(func.__closure__ or (), state["closure"], strict=True):
        if value is not _EmptyCell:
            cell.cell_contents = value


class Unavailable:
    """Stands for an object whose class a record names but this process cannot find.

    Typically a class defined in an earlier notebook cell, read from the command line.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._nbstep_args = (args, kwargs)

    def __setstate__(self, state: Any) -> None:
        self._nbstep_state = state

    def __repr__(self) -> str:
        kind = type(self)
        name = f"{kind.__module__}.{kind.__qualname__}"
        return f"<{name} object: its class is defined in the notebook>"


def _unavailable(module: str, name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (Unavailable,),
                {"__module__": module, "__qualname__": name})


def _lenient_unpickler_class() -> type:
    import pickle

    class LenientUnpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return _load_reference(pid, lenient=True)

        def find_class(self, module: str, name: str) -> Any:
            try:
                found = super().find_class(module, name)
            except (AttributeError, ImportError):
                return _unavailable(module, name)
            if module.startswith("cloudpickle") and name in _TRACKER_ARGUMENT:
                return _untracked(found, _TRACKER_ARGUMENT[name])
            return found

    return LenientUnpickler


# cloudpickle gives a class it pickled by value back as the very class when it is
# still alive in this process, and sets the recorded attributes on it again. Reading
# a record (step.inspect) must not change the notebook's classes: a copy then.
_TRACKER_ARGUMENT = {"_make_skeleton_class": 4, "_make_skeleton_enum": 5}


def _untracked(maker: Any, index: int) -> Any:
    def make(*args: Any) -> Any:
        if len(args) > index:
            args = (*args[:index], None, *args[index + 1:])
        return maker(*args)

    return make


def _why_not(value: Any, context: _Context | None = None) -> str | None:
    """Why a value cannot be persisted, or None when it can."""
    try:
        encode_values(value, context)
    except NotPersistable as e:
        return str(e).rstrip(".")
    return None


def _magic_fix(message: str, key: str) -> str:
    """The engine's replay error, with the way to recompute a %%step cell."""
    fix = f"`%%step {key} --rerun`"
    if "rerun=True" in message:
        return message.replace("rerun=True", fix)
    return f"{message.rstrip()} Run the cell as {fix} to recompute it."


_MISSING = object()


class _RecordedDisplay:
    """Shows a recorded result that could not be persisted as a value."""

    def __init__(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.data, self.metadata = data, metadata

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.data, self.metadata

    def __repr__(self) -> str:
        return str(self.data.get("text/plain", "<recorded output>"))


# -- reading a record outside a replay (step.inspect, nbstep show / export) ----------


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


def read_cell(value: Any, ns: dict[str, Any] | None = None) -> CellRecord:
    """The variables, result and outputs of a ``%%step`` record's value.

    Modules are the imported module when this process has it, else a stand-in
    naming it (reading a record imports nothing). Classes of earlier notebook cells
    that this process cannot find load as :class:`Unavailable` stand-ins.
    """
    if not is_cell_record(value):
        raise ValueError("not a %%step record")
    if value.get("nbstep_cell") != FORMAT:
        raise NbstepError("this %%step record was made by another version of nbstep; "
                          "run the cell again to record it in this version's format")
    variables: dict[str, Any] = {}
    for name, module_name in (value.get("modules") or {}).items():
        variables[name] = sys.modules.get(module_name) or ModuleName(module_name)
    blob = value.get("values")
    loaded: dict[str, Any] = {}
    if blob is not None:
        loaded = decode_values(blob[0], blob[1], ns, lenient=True)
    variables.update(loaded.get("variables", {}))
    result = value.get("result")
    if result is None:
        has_result, shown = False, None
    elif result[0] == "value":
        has_result, shown = True, loaded.get("result")
    else:
        has_result, shown = True, _RecordedDisplay(result[1], result[2])
    return CellRecord(dict(sorted(variables.items())), has_result, shown,
                      list(value.get("outputs") or []), list(value.get("deleted") or []))


def cell_variables(value: Any, ns: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{name: value}`` of the variables a ``%%step`` record restores."""
    return read_cell(value, ns).variables


def readable_value(value: Any, ns: dict[str, Any] | None = None) -> Any:
    """A record's value as ``step.inspect()`` shows it: a cell's variables as a dict."""
    if is_cell_record(value):
        try:
            return cell_variables(value, ns)
        except NbstepError:
            return value
    return value


class ModuleName:
    """A module a record names but this process has not imported."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __repr__(self) -> str:
        return f"<module '{self.__name__}' (not imported)>"


# -- this kernel's step outputs -----------------------------------------------------

# (namespace, key, occurrence) -> {name: the object the step produced or replayed
# in this kernel}, for the names the step both read and bound. Strong references:
# an id could be reused by another object once this one is gone.
_session_outputs: dict[tuple[str, str, int], dict[str, Any]] = {}


def _remember_outputs(namespace: str, key: str, sequence: int, names: Any,
                      ns: dict[str, Any]) -> None:
    _session_outputs[(namespace, key, sequence)] = {
        name: ns[name] for name in names if name in ns}


def forget_session() -> None:
    """Forget which objects this kernel's steps produced (as a new kernel would)."""
    _session_outputs.clear()


def _recorded_parts(record: Any) -> dict[str, str] | None:
    details = record.details or {}
    parts = details.get("parts") if details.get("cell") else None
    return parts if isinstance(parts, dict) else None


def _adjusted_parts(current: dict[str, str], record: Any,
                    ns: dict[str, Any] | None = None) -> dict[str, str]:
    """The current parts, compared on the record's terms.

    A name the record did not read is left out: it was not defined when the step
    ran (or was not read), so it cannot have shaped the record. A name the step
    both read and produced counts as unchanged when the namespace holds the very
    object this step produced or replayed in this kernel, unchanged since: the cell
    is being executed again. In a new kernel, an equal value made by other cells is
    a changed input (``x = x + 1`` after an upstream edit to ``x = 2``).
    """
    details = record.details or {}
    recorded = details.get("parts") or {}
    produced = details.get("output_parts") or {}
    mine = _session_outputs.get((record.namespace, record.key, record.sequence), {})
    adjusted: dict[str, str] = {}
    for name, part in recorded.items():
        if name not in current:
            continue
        now = current[name]
        var = name[4:]
        if (name.startswith("var:") and produced.get(var) == now and ns is not None
                and var in mine and ns.get(var, _MISSING) is mine[var]):
            now = part
        adjusted[name] = now
    return adjusted


# -- executing code --------------------------------------------------------------------


def _run_code(shell: Any, code: types.CodeType, ns: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    if code.co_flags & inspect.CO_COROUTINE:
        return _run_coroutine(shell, eval(code, shell.user_global_ns, ns))
    return eval(code, shell.user_global_ns, ns)


async def _await_code(shell: Any, code: types.CodeType, ns: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    if code.co_flags & inspect.CO_COROUTINE:
        return await eval(code, shell.user_global_ns, ns)
    return eval(code, shell.user_global_ns, ns)


def _run_coroutine(shell: Any, coroutine: Any) -> Any:
    """Run top-level ``await`` code from synchronous code.

    Without a running event loop (a terminal, a test shell) IPython's loop runner
    does it. Inside a kernel the loop is running, and the magic's input transformer
    normally routes such cells through the async path instead; if it was bypassed,
    the coroutine runs on a fresh loop in a helper thread (objects bound to the
    kernel's loop cannot be used there).
    """
    __tracebackhide__ = True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return shell.loop_runner(coroutine)
    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = context.run(asyncio.run, coroutine)
        except BaseException as e:  # handed back to the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=target, name="nbstep-await", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
