"""The ``step`` object: ``step.run``, ``step.arun``, ``step.inspect``, ``step.forget``.

The semantics are the seed's (docs/seed-semantics.md in the shared docs, summed up
in docs/design.md): occurrence counters per (namespace, key); a type-tagged
structural input hash; lookup by (namespace, key, sequence); replay skips the
handler; a different input hash is a mismatch; a handler that raises records
nothing but has used up its occurrence; a recorded step is committed before
``step.run`` returns.
"""

from __future__ import annotations

import inspect as _inspect
import os
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config
from .errors import NotPersistable, StepInputMismatch, StepNotPersistedWarning
from .store import Record, Store

RUN_OPTIONS = ("namespace", "on_mismatch", "rerun")
INSPECT_OPTIONS = ("namespace", "results")


def _type_name(value: Any) -> str:
    return type(value).__name__


@dataclass(slots=True)
class Call:
    """A validated ``step.run`` call."""

    builtin: str
    key: str
    input: Any
    input_supplied: bool
    handler: Callable[..., Any]
    namespace: str | None
    on_mismatch: str | None
    rerun: bool


@dataclass(slots=True)
class Outcome:
    """What happened to one step: replayed, or computed (and recorded or not)."""

    value: Any
    replayed: bool
    record: Record | None
    previous: Record | None = None
    persisted: bool = True


def _check_options(builtin: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for name in options:
        if name not in allowed:
            raise ValueError(f"{builtin}: unknown option `{name}`")


def _option_namespace(builtin: str, options: dict[str, Any]) -> str | None:
    namespace = options.get("namespace")
    if namespace is None:
        return None
    if not isinstance(namespace, str):
        raise TypeError(
            f"{builtin}: options.namespace must be a string, got {_type_name(namespace)}"
        )
    if not namespace.strip():
        raise ValueError(f"{builtin}: options.namespace cannot be empty")
    return namespace


def _merge_options(builtin: str, options: Any, keywords: dict[str, Any]) -> dict[str, Any]:
    if options is None:
        merged: dict[str, Any] = {}
    elif isinstance(options, dict):
        merged = dict(options)
    else:
        raise TypeError(f"{builtin}: options must be a dict, got {_type_name(options)}")
    for name, value in keywords.items():
        if name in merged:
            raise ValueError(
                f"{builtin}: option `{name}` given twice (in the options dict and as a keyword); "
                "give it once"
            )
        merged[name] = value
    return merged


def parse_run(builtin: str, args: tuple[Any, ...], keywords: dict[str, Any]) -> Call:
    """Validate a ``step.run`` call in the seed's order; raises before consuming anything."""
    if len(args) < 2:
        raise ValueError(f"{builtin}: expected key, optional input, handler, and optional options")
    key = args[0]
    if not isinstance(key, str):
        raise TypeError(f"{builtin}: key must be a string, got {_type_name(key)}")
    if not key.strip():
        raise ValueError(f"{builtin}: key cannot be empty")
    second = args[1]
    if callable(second):
        handler, value, supplied, options_index = second, None, False, 2
    else:
        if len(args) < 3:
            raise ValueError(f"{builtin}: handler is required after input")
        handler, value, supplied, options_index = args[2], second, True, 3
    if not callable(handler):
        raise TypeError(f"{builtin}: handler must be callable, got {_type_name(handler)}")
    raw = args[options_index] if len(args) > options_index else None
    options = _merge_options(builtin, raw, keywords)
    _check_options(builtin, options, RUN_OPTIONS)
    namespace = _option_namespace(builtin, options)
    on_mismatch = options.get("on_mismatch")
    if on_mismatch is not None:
        if not isinstance(on_mismatch, str):
            raise TypeError(
                f"{builtin}: options.on_mismatch must be a string, got {_type_name(on_mismatch)}"
            )
        if on_mismatch not in config.ON_MISMATCH_MODES:
            raise ValueError(
                f"{builtin}: options.on_mismatch must be `error` or `rerun`, got `{on_mismatch}`"
            )
    rerun = options.get("rerun", False)
    if rerun is None:
        rerun = False
    if not isinstance(rerun, bool):
        raise TypeError(f"{builtin}: options.rerun must be a bool, got {_type_name(rerun)}")
    if len(args) > options_index + 1:
        raise ValueError(
            f"{builtin}: expected at most {options_index + 1} arguments, got {len(args)}"
        )
    return Call(builtin, key, value, supplied, handler, namespace, on_mismatch, rerun)


def handler_args(call: Call) -> tuple[Any, ...]:
    """The arguments to call a handler with (checked only when it is about to run)."""
    try:
        signature = _inspect.signature(call.handler)
    except (TypeError, ValueError):
        return (call.input,) if call.input_supplied else ()
    required = 0
    positional = False
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional = True
            required += parameter.default is parameter.empty
        elif parameter.kind is parameter.VAR_POSITIONAL:
            positional = True
        elif parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
            raise ValueError(
                f"{call.builtin}: handler has a required keyword-only parameter "
                f"`{parameter.name}`; a step handler receives its input as its one positional "
                "argument (give the parameter a default, or make it positional)"
            )
    if required > 1:
        raise ValueError(
            f"{call.builtin}: handler expects {required} required arguments; "
            "step handlers receive at most one input value"
        )
    return (call.input,) if positional else ()


RUN_FIX = 'pass rerun=True or on_mismatch="rerun"'


def mismatch_error(
    builtin: str,
    record: Record,
    input_hash: str,
    what_changed: str | None = None,
    fix: str = RUN_FIX,
) -> StepInputMismatch:
    """The seed's mismatch error, plus when the record was made and how to recompute.

    ``fix`` says how to recompute in the caller's terms (the magic: ``--rerun``).
    """
    took = f"; the original run took {record.duration_s:.3g} s" if record.duration_s else ""
    changed = f" What changed: {what_changed}." if what_changed else ""
    error = StepInputMismatch(
        f"{builtin}: deterministic input mismatch for key `{record.key}` occurrence "
        f"{record.sequence} in namespace `{record.namespace}` (cached {record.input_hash}, "
        f"current {input_hash}).{changed} The record was made {record.occurred_at}{took}. "
        f"To recompute and record a new version, {fix}; "
        f"to drop the record, step.forget({record.key!r}, namespace={record.namespace!r})."
    )
    error.record = record  # type: ignore[attr-defined]
    error.current_hash = input_hash  # type: ignore[attr-defined]
    return error


class Runtime:
    """Process-wide state: the store, the occurrence counters, the default namespace."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str], int] = {}
        self._counter_lock = threading.Lock()
        self._store: Store | None = None
        self._store_key: tuple[Any, ...] | None = None
        self._namespace: str | None = None
        self._store_lock = threading.Lock()
        self.user_ns: dict[str, Any] | None = None
        # Counts since the process started, for `nbstep run`'s summary and %steps.
        self.stats = {"replayed": 0, "computed": 0, "failed": 0, "not_persisted": 0,
                      "compute_s": 0.0, "saved_s": 0.0}

    # -- store and namespace ---------------------------------------------------

    def store(self) -> Store:
        key = (os.environ.get("NBSTEP_STORE"), config.configured("store"), os.getcwd())
        store = self._store
        if store is not None and key == self._store_key:
            return store
        with self._store_lock:
            if self._store is not None and key == self._store_key:
                return self._store
            root = config.resolve_store_dir()
            if self._store is not None and self._store.root == root:
                self._store_key = key
                return self._store
            if self._store is not None:
                self._store.close()
            start = Path.cwd()
            self._store = Store(
                root,
                linger=config.setting("linger", 0.05, start),
                busy_timeout=config.setting("busy_timeout", 60.0, start),
                inline_limit=config.setting("inline_limit", 64 * 1024, start),
            )
            self._store_key = key
            self._namespace = None
            return self._store

    def drop_store(self) -> None:
        with self._store_lock:
            if self._store is not None:
                self._store.close()
            self._store = None
            self._store_key = None
            self._namespace = None

    def default_namespace(self) -> str:
        env = os.environ.get("NBSTEP_NAMESPACE")
        if env is not None and env.strip():
            return env
        explicit = config.configured("namespace")
        if explicit is not None:
            return explicit
        if self._namespace is None:
            self._namespace = self._detect_namespace()
        return self._namespace

    def _detect_namespace(self) -> str:
        table, _ = config.project_settings()
        if table.get("namespace"):
            return str(table["namespace"])
        path = config.notebook_path(self.user_ns)
        if path is None:
            session = config.session_name(self.user_ns)
            if session is not None:
                # A session name that is not a file's path (a new JupyterLab notebook's
                # UUID-like name): a namespace of its own, never shared with others.
                return f"session:{session}"
            path = config.script_path()
        if path is None:
            return "default"
        return config.namespace_for_path(path, self.store().root.parent)

    def resolve_namespace(self, namespace: str | None) -> str:
        return namespace if namespace is not None else self.default_namespace()

    def reset(self) -> None:
        """Restart occurrence counters (a new run) and re-detect the namespace."""
        with self._counter_lock:
            self._counters.clear()
        self._namespace = None

    def next_sequence(self, namespace: str, key: str) -> int:
        slot = (namespace, key)
        with self._counter_lock:
            sequence = self._counters.get(slot, 0) + 1
            self._counters[slot] = sequence
        return sequence

    # -- the step itself -------------------------------------------------------

    def begin(
        self,
        builtin: str,
        key: str,
        input_hash: str,
        namespace: str | None,
        on_mismatch: str | None,
        rerun: bool,
        what_changed: Callable[[Record], str | None] | None = None,
        matches: Callable[[Record], bool] | None = None,
        fix: str = RUN_FIX,
    ) -> Step:
        """Take an occurrence and look it up; the caller then replays or computes.

        When the record's input hash differs, ``matches(record)`` may still accept it
        (the magic: an input the record's own step produced is no change), and the
        step replays; otherwise mode "error" raises the mismatch, naming
        ``what_changed(record)`` and saying ``fix``.
        """
        ns = self.resolve_namespace(namespace)
        mode = on_mismatch or config.configured("on_mismatch") or "error"
        # configure(rerun=True) recomputes every step of this process (`nbstep run --rerun`).
        rerun = rerun or bool(config.configured("rerun"))
        sequence = self.next_sequence(ns, key)
        store = self.store()
        record = store.lookup(ns, key, sequence)
        step = Step(self, store, builtin, ns, key, sequence, input_hash, mode, rerun, record)
        if record is not None and not rerun and record.input_hash != input_hash:
            if matches is not None and matches(record):
                step.input_hash = record.input_hash
            elif mode == "error":
                self.stats["failed"] += 1
                changed = what_changed(record) if what_changed else None
                raise mismatch_error(builtin, record, input_hash, changed, fix)
        return step


class Step:
    """One occurrence of a step between its lookup and its outcome."""

    __slots__ = ("runtime", "store", "builtin", "namespace", "key", "sequence", "input_hash",
                 "mode", "rerun", "record")

    def __init__(self, runtime: Runtime, store: Store, builtin: str, namespace: str, key: str,
                 sequence: int, input_hash: str, mode: str, rerun: bool,
                 record: Record | None) -> None:
        self.runtime, self.store, self.builtin = runtime, store, builtin
        self.namespace, self.key, self.sequence = namespace, key, sequence
        self.input_hash, self.mode, self.rerun, self.record = input_hash, mode, rerun, record

    @property
    def replayable(self) -> bool:
        return (
            self.record is not None
            and not self.rerun
            and self.record.input_hash == self.input_hash
        )

    def replay(self) -> Outcome:
        assert self.record is not None
        value = self.store.load_value(self.record)
        stats = self.runtime.stats
        stats["replayed"] += 1
        stats["saved_s"] += self.record.duration_s or 0.0
        return Outcome(value, True, self.record)

    def identity(self) -> str:
        from .hashing import step_identity

        return step_identity(self.namespace, self.key, self.sequence, self.input_hash)

    def finish(
        self,
        value: Any,
        duration_s: float,
        details: dict[str, Any] | None = None,
        encoded: Any = None,
        stacklevel: int = 3,
    ) -> Outcome:
        """Record a computed value (or warn that it cannot be) and return the outcome."""
        from . import codecs

        previous = self.record
        stats = self.runtime.stats
        stats["computed"] += 1
        stats["compute_s"] += duration_s
        if encoded is None:
            try:
                encoded = codecs.encode(value)
            except NotPersistable as e:
                warnings.warn(
                    StepNotPersistedWarning(
                        f"step `{self.key}` occurrence {self.sequence} in namespace "
                        f"`{self.namespace}` was not recorded: {e} The result is returned and "
                        "the step will run again next time; return a value that pickles "
                        "(plain data, a DataFrame, an array) to make it durable."
                    ),
                    stacklevel=stacklevel,
                )
                stats["not_persisted"] += 1
                return Outcome(value, False, None, previous, persisted=False)
        if previous is None:
            reason = "first"
        elif self.rerun:
            reason = "rerun"
        elif previous.input_hash != self.input_hash:
            reason = "input changed"
        else:
            reason = "recompute"
        expected = previous.event_id if previous is not None else None
        identity = self.identity()
        for _attempt in range(8):
            record, inserted = self.store.append(
                self.namespace, self.key, self.sequence,
                identity=identity, input_hash=self.input_hash, codec=encoded.codec,
                data=encoded.data, duration_s=duration_s, reason=reason, details=details,
                expected_event_id=expected,
            )
            if inserted:
                return Outcome(value, False, record, previous)
            # Another process recorded this occurrence while the handler ran.
            if record.input_hash == self.input_hash:
                # The seed's idempotent append: the first writer's value stands.
                return Outcome(self.store.load_value(record), True, record, previous)
            if self.mode == "error" and not self.rerun:
                raise mismatch_error(self.builtin, record, self.input_hash)
            expected = record.event_id
        raise RuntimeError(f"{self.builtin}: the record for `{self.key}` kept changing")


_runtime = Runtime()


def runtime() -> Runtime:
    return _runtime


class StepAPI:
    """Durable steps: ``step.run(key, [input], handler, [options])`` and friends.

    Examples::

        rows = step.run("download", url, fetch)           # runs once, replays after
        step.run("train", params, train, rerun=True)       # recompute, new version
        step.inspect()                                     # this notebook's records
        step.forget("download")                            # recompute next time
    """

    def run(self, *args: Any, **options: Any) -> Any:
        """Run ``handler(input)`` once and record its result; replay it after."""
        return self._run_sync("step.run", args, options)

    def _run_sync(self, builtin: str, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        call, occurrence = _begin(builtin, args, options)
        if occurrence.replayable:
            return _replay(occurrence)
        started = time.perf_counter()
        try:
            value = call.handler(*handler_args(call))
        except BaseException:
            _runtime.stats["failed"] += 1
            raise
        duration = time.perf_counter() - started
        return occurrence.finish(value, duration, stacklevel=4).value

    async def arun(self, *args: Any, **options: Any) -> Any:
        """``step.run`` for async code: the handler may be a coroutine function."""
        call, occurrence = _begin("step.arun", args, options)
        if occurrence.replayable:
            return _replay(occurrence)
        started = time.perf_counter()
        try:
            value = call.handler(*handler_args(call))
            if _inspect.isawaitable(value):
                value = await value
        except BaseException:
            _runtime.stats["failed"] += 1
            raise
        duration = time.perf_counter() - started
        return occurrence.finish(value, duration, stacklevel=3).value

    def inspect(self, *args: Any, results: bool = True, namespace: str | None = None) -> Any:
        """A DataFrame of a namespace's records, in append order.

        ``step.inspect()`` (default namespace), ``step.inspect("nb-a")``,
        ``step.inspect({"namespace": "nb-a"})``, ``step.inspect(results=False)``.
        """
        builtin = "step.inspect"
        if len(args) > 1:
            raise ValueError(f"{builtin}: expected at most 1 argument, got {len(args)}")
        if namespace is not None:
            if args:
                raise ValueError(
                    f"{builtin}: namespace given twice (as an argument and as namespace=); "
                    "give it once"
                )
            args = (namespace,)
        arg = args[0] if args else None
        namespace: str | None
        if arg is None:
            namespace = None
        elif isinstance(arg, str):
            if not arg.strip():
                raise ValueError(f"{builtin}: namespace cannot be empty")
            namespace = arg
        elif isinstance(arg, dict):
            _check_options(builtin, arg, INSPECT_OPTIONS)
            namespace = _option_namespace(builtin, arg)
            if "results" in arg:
                results = arg["results"]
        else:
            raise TypeError(
                f"{builtin}: expected namespace string or options dict, got {_type_name(arg)}"
            )
        if not isinstance(results, bool):
            raise TypeError(f"{builtin}: results must be a bool, got {_type_name(results)}")
        from .inspect_frame import records_frame

        ns = _runtime.resolve_namespace(namespace)
        return records_frame(_runtime.store(), ns, results=results)

    def forget(self, key: str | None = None, namespace: str | None = None) -> int:
        """Make a namespace's steps (or one key's) recompute next time; returns how many."""
        builtin = "step.forget"
        if key is not None:
            if not isinstance(key, str):
                raise TypeError(f"{builtin}: key must be a string or None, got {_type_name(key)}")
            if not key.strip():
                raise ValueError(f"{builtin}: key cannot be empty")
        if namespace is not None:
            if not isinstance(namespace, str):
                raise TypeError(
                    f"{builtin}: namespace must be a string or None, got {_type_name(namespace)}"
                )
            if not namespace.strip():
                raise ValueError(f"{builtin}: namespace cannot be empty")
        ns = _runtime.resolve_namespace(namespace)
        return _runtime.store().forget(ns, key)

    def __repr__(self) -> str:
        return "<nbstep step API: step.run, step.arun, step.inspect, step.forget>"


def _begin(builtin: str, args: tuple[Any, ...], options: dict[str, Any]) -> tuple[Call, Step]:
    """Validate a call, hash its input, take its occurrence and look it up."""
    from .hashing import input_hash

    call = parse_run(builtin, args, options)
    digest = input_hash(call.input)
    occurrence = _runtime.begin(
        builtin, call.key, digest, call.namespace, call.on_mismatch, call.rerun
    )
    return call, occurrence


def _replay(occurrence: Step) -> Any:
    try:
        return occurrence.replay().value
    except BaseException:
        _runtime.stats["failed"] += 1  # nbstep run reports a replay that cannot be read
        raise


step = StepAPI()


def reset() -> None:
    """Restart the occurrence counters, as a new run (or a new notebook cell) does."""
    _runtime.reset()


def configure(**settings: Any) -> None:
    """Set process-wide defaults: ``store``, ``namespace``, ``on_mismatch``, and more.

    ``nbstep.configure(store="/data/steps", namespace="exp-1", on_mismatch="rerun")``;
    ``None`` unsets a setting. See the README for every setting.
    """
    config.configure(**settings)
    if {"store", "linger", "busy_timeout", "inline_limit"} & settings.keys():
        _runtime.drop_store()
    if "namespace" in settings:
        _runtime.reset()


# Typing aid for arun users.
AsyncHandler = Callable[..., Awaitable[Any]]
