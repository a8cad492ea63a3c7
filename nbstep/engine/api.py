"""The ``step`` object: ``step.run``, ``step.arun``, ``step.inspect``, ``step.forget``.

The semantics are the seed's (docs/design.md): occurrence counters per (namespace,
key); a type-tagged structural input hash; lookup by (namespace, key, sequence);
replay skips the handler; a different input hash is a mismatch; a handler that raises
records nothing but has used up its occurrence; a recorded step is durable before
``step.run`` returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import occurrence as occurrences
from .calls import (
    INSPECT_OPTIONS,
    Call,
    handler_args,
    parse_forget,
    parse_inspect,
    parse_run,
    unknown_option,
)
from .runtime import Runtime

if TYPE_CHECKING:
    from .occurrence import Occurrence


class StepAPI:
    """Durable steps: ``step.run(key, [input], handler, [options])`` and friends.

    Examples::

        rows = step.run("download", url, fetch)           # runs once, replays after
        step.run("train", params, train, rerun=True)       # recompute, new version
        step.inspect()                                     # this notebook's records
        step.forget("download")                            # recompute next time
    """

    def __init__(self, runtime: Runtime | None = None) -> None:
        self._own_runtime = runtime

    @property
    def runtime(self) -> Runtime:
        """Its own runtime if it was given one, else the process's."""
        return self._own_runtime or Runtime.instance()

    def run(self, *args: Any, **options: Any) -> Any:
        """Run ``handler(input)`` once and record its result; replay it after."""
        runtime = self.runtime
        call, occurrence = self._begin(runtime, "step.run", args, options)
        if occurrence.replayable:
            return _replay(runtime, occurrence)
        with _computing(runtime) as timer:
            value = call.handler(*handler_args(call))
        return occurrence.finish(value, timer.seconds, stacklevel=3).value

    async def arun(self, *args: Any, **options: Any) -> Any:
        """``step.run`` for async code: the handler may be a coroutine function."""
        runtime = self.runtime
        call, occurrence = self._begin(runtime, "step.arun", args, options)
        if occurrence.replayable:
            return _replay(runtime, occurrence)
        with _computing(runtime) as timer:
            value = call.handler(*handler_args(call))
            if _is_awaitable(value):
                value = await value
        return occurrence.finish(value, timer.seconds, stacklevel=3).value

    def inspect(self, *args: Any, results: bool | None = None, namespace: str | None = None,
                history: bool | None = None, all_columns: bool = False,
                **unknown: Any) -> Any:
        """A DataFrame of a namespace's steps, in the order they were recorded.

        By default one row per current step: ``key``, ``occurrence``, ``status``,
        ``recorded_at``, ``duration`` and ``saved`` (seconds), and ``value``, a
        one-line summary (a ``%%step`` cell's: its variables). ``results=True`` adds
        ``result``, the value itself; ``results=False`` reads no value (fast).
        ``history=True`` adds the superseded and forgotten records. ``all_columns=True``
        is the full frame (the seed's columns and nbstep's: ``event_id``, ``sequence``,
        ``deterministic_inputs_hash``, ``result``, ``codec``...), every record unless
        ``history=False``.

        ``step.inspect()`` (default namespace), ``step.inspect("nb-a")``,
        ``step.inspect({"namespace": "nb-a"})``, ``step.inspect(results=False)``.
        """
        from .inspect import records_frame

        if unknown:  # a misspelt keyword: say which was meant (a TypeError would not)
            raise ValueError(unknown_option("step.inspect", next(iter(unknown)),
                                            INSPECT_OPTIONS))
        keywords = {"namespace": namespace, "results": results, "history": history,
                    "all_columns": None if all_columns is False else all_columns}
        call = parse_inspect(args, keywords)
        runtime = self.runtime
        store = runtime.store()
        chosen = runtime.resolve_namespace(call.namespace)
        return records_frame(store, chosen, results=call.results, history=call.history,
                             all_columns=call.all_columns, user_ns=runtime.user_ns,
                             replays=runtime.replays_of(store, chosen))

    def forget(self, key: str | None = None, namespace: str | None = None) -> int:
        """Make a namespace's steps (or one key's) recompute next time; returns how many."""
        parse_forget(key, namespace)
        runtime = self.runtime
        key = None if key is None else str.__str__(key)
        namespace = None if namespace is None else str.__str__(namespace)
        return runtime.store().forget(runtime.resolve_namespace(namespace), key)

    def __repr__(self) -> str:
        return "<nbstep step API: step.run, step.arun, step.inspect, step.forget>"

    @staticmethod
    def _begin(runtime: Runtime, builtin: str, args: tuple[Any, ...],
               options: dict[str, Any]) -> tuple[Call, Occurrence]:
        """Validate a call, hash its input, take its occurrence and look it up."""
        from nbstep.hashing import input_hash  # loaded on the first step, not by `import nbstep`

        call = parse_run(builtin, args, options)
        digest = input_hash(call.input)
        occurrence = occurrences.begin(
            runtime, builtin, call.key, digest, call.namespace, call.on_mismatch, call.rerun
        )
        return call, occurrence


class _Timer:
    seconds = 0.0


@contextmanager
def _computing(runtime: Runtime) -> Iterator[_Timer]:
    """Time a handler; one that raises is a failed step (and records nothing)."""
    timer = _Timer()
    started = time.perf_counter()
    try:
        yield timer
    except BaseException:
        runtime.stats["failed"] += 1
        raise
    timer.seconds = time.perf_counter() - started


def _replay(runtime: Runtime, occurrence: Occurrence) -> Any:
    try:
        return occurrence.replay().value
    except BaseException:
        runtime.stats["failed"] += 1  # nbstep run reports a replay that cannot be read
        raise


step = StepAPI()


def reset() -> None:
    """Restart the occurrence counters, as a new run (or a new notebook cell) does."""
    Runtime.instance().reset()


def configure(**settings: Any) -> None:
    """Set process-wide defaults: ``store``, ``namespace``, ``on_mismatch``, and more.

    ``nbstep.configure(store="/data/steps", namespace="exp-1", on_mismatch="rerun")``;
    ``None`` unsets a setting. See the README for every setting.
    """
    Runtime.instance().configure(**settings)


def _is_awaitable(value: Any) -> bool:
    """``inspect.isawaitable`` without importing inspect (6 ms) for every process."""
    import collections.abc
    import types

    return isinstance(value, collections.abc.Awaitable) or (
        isinstance(value, types.GeneratorType)
        and bool(value.gi_code.co_flags & 0x100)  # CO_ITERABLE_COROUTINE
    )
