"""One ``%%step`` cell as one durable step: decide, then replay, or run and record.

The magic (:mod:`.magics`) parses its arguments and makes a :class:`CellStep`;
deciding uses the engine's occurrences (:func:`nbstep.engine.occurrence.begin`) with
the cell's input (:mod:`.inputs`); running is watched by :mod:`.tracking` (what the
cell really read and changed); recording is :mod:`.recording`; the record's value is
the ``%%step`` codec's (:mod:`nbstep.codecs.cell`).

A replay restores, in this order: the working directory, import path and
environment; the modules the run imported; the recorded objects (one pickle); the
states written back into objects the notebook holds (also those the run changed and
then unbound), and the changed attributes of functions, classes and modules; the
rest of the process state; deletions; the variables.
Then the outputs show again, those a plain run shows after ``Out[n]`` after it.

Which objects an input may stand for: a name the cell both reads and binds
(``x = x + 1``) counts as unchanged only when the namespace holds the very object
this step produced or replayed in this kernel (``NotebookExtension.produced``):
executing the cell again replays it, while a new kernel whose upstream cells made an
equal value recomputes.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import sys
import time
import types
import warnings
from typing import Any

from nbstep.codecs import cell as cell_codec
from nbstep.codecs.cell import RecordedDisplay
from nbstep.codecs.cell_state import apply_state
from nbstep.codecs.cell_unpickle import decode_values
from nbstep.core.durations import duration
from nbstep.engine import occurrence as occurrences
from nbstep.errors import NbstepError, StepNotPersistedWarning, StepReplayError
from nbstep.hashing import input_hash

from . import analysis, capture, globalstate, inputs, notices, recording, tracking
from .execution import (
    PyCF_ALLOW_TOP_LEVEL_AWAIT,
    await_code,
    flush_inline_figures,
    run_code,
)
from .host import Host
from .options import Options
from .recording import NotRecorded, Recording

BUILTIN = "%%step"


def replayed_message(key: str, record: Any) -> str:
    """``replayed `key` - recorded 2026-12-01 09:41 UTC, saved 1.2 s``: when the
    record was made (to the minute) and the compute time the replay saved."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record.occurred_at_us / 1e6))
    saved = f", saved {duration(record.duration_s)}" if record.duration_s is not None else ""
    return f"replayed `{key}` - recorded {when}{saved}"


def _magic_fix(message: str, key: str) -> str:
    """The engine's replay error, with the way to recompute a %%step cell."""
    fix = f"`%%step {key} --rerun`"
    if "rerun=True" in message:
        return message.replace("rerun=True", fix)
    return f"{message.rstrip()} Run the cell as {fix} to recompute it."


class CellStep(Recording):
    """A ``%%step`` cell from its lookup to its outcome."""

    def __init__(self, extension: Host, options: Options, body: str,
                 header: str = "%%step") -> None:
        self.extension = extension
        self.runtime = extension.runtime
        self.shell = shell = extension.shell
        self.cell_id = extension.cell_id  # the notebook cell's id, when the frontend sends one
        self.options = options
        self.body = body
        self.header = header  # the cell's first line, shown by tracebacks and warnings
        self.user_ns: dict[str, Any] = shell.user_ns
        self.hidden: dict[str, Any] = getattr(shell, "user_ns_hidden", {})
        self.user_modules = {getattr(getattr(shell, "user_module", None), "__name__", "__main__")}
        self.occurrence: Any = None
        self.replaying = False
        self.capture: capture.OutputCapture | None = None
        self.body_done = False  # errors after this are nbstep's, not the cell's
        self._started = 0.0
        self.before: dict[str, Any] = {}
        self.tracker = tracking.Tracker(self.user_ns, self.hidden, self.user_modules,
                                        inputs.PartHasher(self.user_ns, self.user_modules))
        self.untrackable: str | None = None  # why the tracker could not take the closure

    # -- deciding ------------------------------------------------------------------

    def prepare(self) -> None:
        """Transform and analyse the body, hash its input, look the step up."""
        __tracebackhide__ = True
        shell = self.shell
        # Line 1 of the cell is the %%step line: keep line numbers those of the cell.
        self.source = "\n" + shell.transform_cell(self.body)
        self.filename = self._cache_source(self.source)
        try:
            tree = analysis.parse(self.source, self.filename)
        except SyntaxError as e:
            # Normally caught earlier: the magic's input transformer hands a body that
            # does not compile back to IPython, which reports it as for any cell.
            raise e.with_traceback(None) from None
        self.analysis = analysis.analyze(tree)
        transformed = shell.transform_ast(tree)
        self.tree = transformed if transformed is not None else tree
        self.inputs = inputs.Inputs(self.user_ns, self.hidden, self.user_modules,
                                    provenance=self.extension.product_part)
        self.tracker.hasher = self.inputs.hasher
        self.parts, _ = self.inputs.parts(self.analysis)
        self.input_hash = input_hash(self.parts)
        if self.runtime.user_ns is None:
            self.runtime.user_ns = self.user_ns
        options = self.options
        # An input that the namespace holds because this very step produced it
        # (`x = x + 1` executed again) is not a change, and inputs a record did not
        # have cannot have shaped it: `_matches` compares the parts the record knew.
        occurrence = occurrences.begin(
            self.runtime, BUILTIN, options.key, self.input_hash, options.namespace,
            options.on_mismatch, options.rerun, what_changed=self._what_changed,
            matches=self._matches, earlier_matches=self._matches_earlier,
            fix=f"run the cell as `%%step {options.key} --rerun`",
        )
        self.occurrence = occurrence
        self.replaying = occurrence.replayable
        record = occurrence.record
        if record is None:
            return
        if not self._comparable(record):
            # Recorded by an older nbstep, with another recipe: recompute, whatever
            # on_mismatch says (its parts cannot be compared with these).
            self.replaying = False
            occurrence.input_hash = self.input_hash
            notices.show(self.shell, "recomputing",
                         f"recomputing `{options.key}`: its record of {record.occurred_at} "
                         "was made by an older nbstep")
            return
        why_not = self._unreplayable(record) if self.replaying else None
        if why_not is not None:
            self.replaying = False
            notices.show(self.shell, "recomputing",
                         f"recomputing `{options.key}`: its record of {record.occurred_at} "
                         f"{why_not}")
        elif not self.replaying and not occurrence.rerun:
            other = self._other_cell(record)
            if other:
                sys.stderr.write(f"warning: {other}\n")
            notices.show(self.shell, "recomputing",
                         f"recomputing `{options.key}`: {self._what_changed(record, hint=False)} "
                         f"changed since the record of {record.occurred_at}")

    @staticmethod
    def _comparable(record: Any) -> bool:
        """A record of this format (and so of this input recipe); a record ``step.run``
        made is comparable too (and then not replayed as a cell)."""
        return (record.details or {}).get("cell") in (None, cell_codec.FORMAT)

    def _unreplayable(self, record: Any) -> str | None:
        """Why a record whose inputs match still cannot be replayed here, else None."""
        details = record.details or {}
        python = details.get("python", recording.PYTHON)
        if python != recording.PYTHON:
            # Functions are recorded with their compiled code, which is Python's own.
            return (f"holds functions compiled by Python {python}, this kernel runs "
                    f"Python {recording.PYTHON}")
        missing = [name for name in details.get("references") or [] if name not in self.user_ns]
        if missing:
            # Objects of earlier cells the record holds by name (a default `c=conn`).
            names = ", ".join(f"`{name}`" for name in missing)
            return (f"refers to the notebook {'variable' if len(missing) == 1 else 'variables'} "
                    f"{names}, which {'is' if len(missing) == 1 else 'are'} not defined")
        return None

    def _other_cell(self, record: Any) -> str | None:
        """A warning when the record was made by another cell with the same key."""
        recorded = (record.details or {}).get("cell_id")
        if not recorded or not self.cell_id or recorded == self.cell_id:
            return None
        return (f"key `{self.options.key}` is also used by another cell of this notebook; "
                "give each cell its own key (each of them overwrites the other's record)")

    def _adjusted(self, record: Any) -> dict[str, str]:
        """This cell's parts on the record's terms (:func:`.inputs.adjusted_parts`):
        every part the record has, computed now (the tracker's too)."""
        current = dict(self.parts)
        for key in inputs.recorded_parts(record) or {}:
            if key not in current:
                part = self.inputs.part(key)
                if part is not None:
                    current[key] = part
        return inputs.adjusted_parts(current, record, self.user_ns,
                                     self.extension.produced(record))

    def _matches(self, record: Any) -> bool:
        if not self._comparable(record):
            return True  # not compared: prepare() recomputes it
        recorded = inputs.recorded_parts(record)
        return recorded is not None and self._adjusted(record) == recorded

    def _matches_earlier(self, record: Any) -> bool:
        """An earlier version of the step whose parts are this cell's (a record this
        nbstep cannot compare is not one)."""
        return self._comparable(record) and self._matches(record)

    def _what_changed(self, record: Any, hint: bool = True) -> str:
        recorded = inputs.recorded_parts(record)
        if recorded is None:
            return "the input (the record was not made by %%step)"
        adjusted = self._adjusted(record)
        text = inputs.describe_changes(recorded, adjusted or self.parts) or "the input"
        other = self._other_cell(record) if hint else None
        return f"{text} ({other})" if other else text

    # -- replaying -------------------------------------------------------------------

    def replay(self) -> Any:
        """Restore the variables, show the outputs again, return the result.

        A replay that fails counts as a failed step (``Runtime.stats["failed"]``).
        """
        __tracebackhide__ = True
        stats = self.runtime.stats
        key = self.options.key
        try:
            outcome = self.occurrence.replay()
        except StepReplayError as e:
            stats["failed"] += 1
            raise StepReplayError(_magic_fix(str(e), key)) from e.__cause__
        record = outcome.record
        container = outcome.value
        try:
            if not (isinstance(container, dict)
                    and container.get("nbstep_cell") == cell_codec.FORMAT):
                raise StepReplayError(
                    f"cannot replay `{key}`: its record (made {record.occurred_at}) was "
                    "not made by %%step, or by another version of nbstep. Run the cell as "
                    f"`%%step {key} --rerun` to record it again."
                )
            result = self._restore(container, record)
        except StepReplayError:
            # The engine counted a replay; it was not one.
            self.runtime.count_replay(self.occurrence.store, record, -1)
            stats["failed"] += 1
            raise
        details = record.details or {}
        self.extension.remember_outputs(record, details.get("output_parts") or {})
        self.extension.note_products(record.identity, details.get("variables") or [])
        events = container.get("outputs") or []
        at = container.get("result_at", len(events))
        capture.show_again(self.shell, events[:at])
        capture.show_after_result(self.shell, events[at:])  # as a plain run: after Out[n]
        if not self.options.quiet:
            # After the outputs: a replayed clear_output() must not wipe this line.
            notices.show(self.shell, "replayed", replayed_message(key, record))
        return result

    def _restore(self, container: dict[str, Any], record: Any) -> Any:
        ns = self.user_ns
        values: dict[str, Any] = {}
        try:
            # Where imports are found first, then modules: the values may need them.
            globalstate.apply_changes(container.get("process") or {})
            self._import_again(container.get("imports") or [])
            for name, module_name in (container.get("modules") or {}).items():
                ns[name] = importlib.import_module(module_name)
            self._register_source(container)
            blob = container.get("values")
            if blob is not None:
                values = decode_values(blob[0], blob[1], ns)
            self._apply(values)
            for name in container.get("deleted") or []:
                ns.pop(name, None)
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
        return RecordedDisplay(result[1], result[2])

    def _import_again(self, names: list[str]) -> None:
        """Import what the recorded run imported (``xml.dom.minidom``, a plotting
        backend), quietly: a module that prints when imported printed in the run."""
        failed = []
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            for name in names:
                if name in sys.modules:
                    continue
                try:
                    importlib.import_module(name)
                except Exception as e:  # reported below: the replay goes on without it
                    failed.append(f"`{name}` ({type(e).__name__}: {e})")
        if failed:
            notices.show(self.shell, "note",
                         f"note: replaying `{self.options.key}` could not import "
                         f"{', '.join(failed)} again, as its recorded run had")

    def _apply(self, values: dict[str, Any]) -> None:
        """Write back what the run changed in objects the notebook holds."""
        ns = self.user_ns
        for name, state in (values.get("in_place") or {}).items():
            if name in ns:
                ns[name] = apply_state(ns[name], state)
            else:
                ns[name] = apply_state(None, state)
        for fn, (defaults, kwdefaults, cells, attributes) in values.get("functions") or []:
            fn.__defaults__, fn.__kwdefaults__ = defaults, kwdefaults
            for cell, content in zip(fn.__closure__ or (), cells, strict=False):
                if not tracking.is_unset(content):
                    cell.cell_contents = content
            fn.__dict__.update(attributes)
        for owner, attributes in values.get("classes") or []:
            _set_attributes(owner, attributes)
        for module_name, attributes in (values.get("modules") or {}).items():
            _set_attributes(importlib.import_module(module_name), attributes)
        globalstate.apply_changes(values.get("process") or {})

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
        """Take the closure of what the cell reads (:mod:`.tracking`), then capture."""
        found = self.analysis
        named = list(found.strings)
        if found.dynamic:
            named += list(self.user_ns)
        try:
            self.tracker.start(found.reads, found.used, named, found.chains, self.parts)
        except Exception as e:  # a value's own __getattr__ or __reduce__ raising
            self.tracker.stop_watching()
            self.untrackable = f"taking what it reads failed ({type(e).__name__}: {e})"
        self.before = self.tracker.before or dict(self.user_ns)
        self.capture = capture.OutputCapture(self.shell).start()
        self.extension.body_depth += 1
        self._started = time.perf_counter()

    def abort(self) -> None:
        """The body raised: stop capturing, record nothing."""
        self.extension.body_depth -= 1
        self.runtime.stats["failed"] += 1
        self.tracker.stop_watching()
        if self.capture is not None:
            self.capture.stop()

    def run_sync(self) -> Any:
        __tracebackhide__ = True
        block, expr, _ = self.compile_body()
        self.start()
        try:
            if block is not None:
                run_code(self.shell, block, self.user_ns)
            value = run_code(self.shell, expr, self.user_ns) if expr is not None else None
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
                await await_code(self.shell, block, self.user_ns)
            value = await await_code(self.shell, expr, self.user_ns) if expr is not None else None
        except BaseException:
            self.abort()
            raise
        return self.end(value)

    def end(self, value: Any) -> Any:
        """The body finished: record the step (unless it cannot be, or must not be)."""
        duration = time.perf_counter() - self._started
        self.extension.body_depth -= 1
        self.body_done = True
        assert self.capture is not None
        try:
            # The figures the inline backend would show after Out[n]: recorded now,
            # shown after Out[n].
            self.capture.hold(flush_inline_figures)
        finally:
            outputs, result_at = self.capture.stop_at_held()
        try:
            changes = self.tracker.finish()
        except Exception as e:  # a value's own __reduce__ or __eq__ raising: say so
            changes = tracking.Changes()
            self.untrackable = f"comparing what it reads failed ({type(e).__name__}: {e})"
        if analysis.ends_with_semicolon(self.source):
            value = None
        untracked = self._untracked()
        if untracked is not None and not self.options.allow_untracked:
            stats = self.runtime.stats
            stats["computed"] += 1
            stats["compute_s"] += duration
            key = self.options.key
            notices.show(self.shell, "note",
                         f"note: `{key}` is not recorded: it {untracked}, so a replay could "
                         f"differ from running it; it runs every time (`%%step {key} "
                         "--allow-untracked` records it anyway)")
            return value
        try:
            self.record(value, outputs, result_at, duration, changes)
        except NotRecorded as e:
            stats = self.runtime.stats
            stats["not_persisted"] += 1
            stats["computed"] += 1
            stats["compute_s"] += duration
            warnings.warn_explicit(
                StepNotPersistedWarning(str(e)), StepNotPersistedWarning,
                self.filename, 1, registry=None,
            )
        return value

    def _untracked(self) -> str | None:
        """What the cell uses that nbstep cannot track, as ``reads ... and calls ...``."""
        if self.untrackable is not None:
            return self.untrackable
        said = []
        opaque = self.tracker.opaque()
        if opaque:
            names = ", ".join(f"`{name}` ({kind})" if kind else f"`{name}`"
                              for name, kind in opaque)
            said.append(f"reads {names}, whose state nbstep cannot see (pickle cannot "
                        "write it)")
        calls = tracking.untracked_calls(self.analysis.calls, self.user_ns)
        if calls:
            names = ", ".join(f"`{call}`" for call in calls)
            said.append(f"calls {names}, whose effect nbstep cannot record")
        return " and ".join(said) if said else None


def _set_attributes(owner: Any, attributes: dict[str, Any]) -> None:
    for name, value in attributes.items():
        if tracking.is_unset(value):
            if hasattr(owner, name):
                delattr(owner, name)
        else:
            setattr(owner, name, value)
