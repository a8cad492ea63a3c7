"""The engine's state: settings, the open store, occurrence counters, step counts.

One :class:`Runtime` serves the process (``Runtime.instance()``, IPython's pattern);
tests make a fresh one with ``Runtime.clear_instance()``. Nothing else in nbstep
keeps state in module globals.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from nbstep import settings as settings_module
from nbstep.core import location, notebook_id
from nbstep.core.names import plain_text
from nbstep.errors import ConfigError, NbstepError
from nbstep.settings import Settings

if TYPE_CHECKING:
    from nbstep.storage import StepStore

STAT_KEYS = ("replayed", "computed", "failed", "not_persisted", "compute_s", "saved_s")


class Runtime:
    """Process-wide state of the engine (see the module docstring)."""

    _instance: ClassVar[Runtime | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def instance(cls) -> Runtime:
        """The runtime that ``nbstep.step`` and the ``%%step`` magic use."""
        runtime = cls._instance
        if runtime is None:
            with cls._instance_lock:
                if cls._instance is None:
                    cls._instance = cls()
                runtime = cls._instance
        return runtime

    @classmethod
    def clear_instance(cls) -> None:
        """Close the process's runtime; the next ``instance()`` is a fresh one."""
        with cls._instance_lock:
            runtime, cls._instance = cls._instance, None
        if runtime is not None:
            runtime.drop_store()

    def __init__(self) -> None:
        self.overrides: dict[str, Any] = {}  # nbstep.configure(...)
        self._counters: dict[tuple[str, str], int] = {}
        self._counter_lock = threading.Lock()
        self._store: StepStore | None = None
        self._store_key: tuple[Any, ...] | None = None
        self._store_root: Path | None = None
        self._store_url: str | None = None
        self._store_lock = threading.Lock()
        self._settings: tuple[tuple[Any, ...], Settings] | None = None
        self._namespace: str | None = None
        # The folder of the running notebook or script (the store is found from it),
        # found again after reset(); see where().
        self._origin: str | None = None
        self._file: str | None | bool = False  # the notebook's file; False: not looked for
        # Notebook ids this process resolved, by path: a kernel keeps its notebook's
        # id when the file is renamed away, or another notebook takes its old name.
        self._ids: dict[str, str] = {}
        # (namespace, path) pairs whose mapping and adoption were settled already.
        self._claimed: dict[tuple[str, str], str] = {}  # -> the namespace it settled on
        self._told: set[str] = set()  # notices printed once per process
        # Shows a notice as nbstep's own line in the notebook (set by %load_ext nbstep,
        # nbstep/notebook/notices.py); None: print it on stderr.
        self.notify: Callable[[str], None] | None = None
        self._unnamed: str | None = None  # this kernel's own namespace, when unnamed
        self.user_ns: dict[str, Any] | None = None  # the notebook's, when in a kernel
        # Counts since the process started, for `nbstep run`'s summary and %steps.
        self.stats: dict[str, float] = dict.fromkeys(STAT_KEYS, 0)
        # How often this process replayed each record, by (store location, namespace,
        # event id): step.inspect()'s `saved` column.
        self.replays: dict[tuple[str, str, int], int] = {}

    # -- settings ----------------------------------------------------------------------

    def configure(self, **values: Any) -> None:
        """Set process-wide defaults; ``None`` removes a setting again."""
        checked = {name: settings_module.validate(name, value, "nbstep.configure")
                   for name, value in values.items()}
        for name, value in checked.items():
            if value is None:
                self.overrides.pop(name, None)
            else:
                self.overrides[name] = value
        self._settings = None
        if set(settings_module.STORE_SHAPING) & checked.keys():
            self.drop_store()
        if "namespace" in checked:
            self.reset()

    def settings(self, *, fresh: bool = False, where: tuple[Any, ...] | None = None
                 ) -> Settings:
        """The settings for the working directory; ``fresh`` re-reads pyproject.toml.

        Cached per working directory and environment (``where()``; pass it when you
        have it): a step asks on every call, and re-reading pyproject.toml there would
        cost more than a replay.
        """
        key = where or self.where()
        cached = self._settings
        if fresh or cached is None or cached[0] != key:
            cached = (key, settings_module.load(self.overrides, Path(key[0])))
            self._settings = cached
        return cached[1]

    def where(self) -> tuple[Any, ...]:
        """What the settings and the store depend on besides ``configure``: the folder
        of the running notebook or script (else the working directory), the working
        directory, and the environment variables."""
        origin = self._origin
        if origin is None:
            origin = self._origin = self._find_origin()
        return (origin, os.getcwd(), os.environ.get("NBSTEP_STORE"),
                os.environ.get("NBSTEP_NAMESPACE"))

    def _find_origin(self) -> str:
        """The folder the store and pyproject.toml are looked for from."""
        path = self._notebook_file() or location.script_path(self.user_ns)
        if path is None or location.is_installed(path):
            return os.getcwd()  # no file of the user's (a REPL, `python -m pytest`)
        return os.path.dirname(path)

    def _notebook_file(self) -> str | None:
        """The running notebook's file: from the front end, else from the runner
        (found once per cell: reset() forgets it)."""
        if self._file is not False:
            return self._file  # type: ignore[return-value]
        self._file = self._find_notebook_file()
        return self._file

    def _find_notebook_file(self) -> str | None:
        path = location.notebook_path(self.user_ns)
        if path is None and self._in_kernel() and location.session_name(self.user_ns) is None:
            path = location.runner_notebook()
        return path

    # -- the store ---------------------------------------------------------------------

    def store(self, where: tuple[Any, ...] | None = None) -> StepStore:
        """The open store (opened now if the settings point elsewhere than before)."""
        key = where or self.where()
        store = self._store
        if store is not None and key == self._store_key:
            return store
        with self._store_lock:
            if self._store is not None and key == self._store_key:
                return self._store
            current = self.settings(where=key)
            # A directory, or the local directory of a team store plus its server.
            root = settings_module.store_dir(current, Path(key[0]))
            url = current.store if settings_module.is_server_url(current.store) else None
            if self._store is not None and self._store_root == root and self._store_url == url:
                self._store_key = key
                return self._store
            if self._store is not None:
                self._store.close()
            from nbstep.storage import open_store

            self._store = open_store(root, current)
            self._store_root = root
            self._store_url = url
            self._store_key = key
            self._namespace = None
            return self._store

    def store_root(self) -> Path:
        """The folder holding the store directory: namespaces are paths relative to it."""
        self.store()
        assert self._store_root is not None
        return self._store_root.parent

    def drop_store(self) -> None:
        with self._store_lock:
            if self._store is not None:
                self._store.close()
            self._store = None
            self._store_key = None
            self._store_root = None
            self._store_url = None
            self._namespace = None

    # -- namespaces and occurrences ----------------------------------------------------

    def default_namespace(self, settings: Settings | None = None) -> str:
        explicit = (settings or self.settings()).namespace
        if explicit is not None:
            return explicit
        if self._namespace is None:
            try:
                self._namespace = plain_text(self._detect_namespace(), "the notebook's path")
            except ValueError as e:
                raise ConfigError(f"{e}. Give this notebook a namespace: NBSTEP_NAMESPACE, "
                                  "or nbstep.configure(namespace=...)") from None
        return self._namespace

    def _detect_namespace(self) -> str:
        """docs/design.md, "Which notebook is this": ``nb:<id>`` for a notebook with an
        id, else its path; a script's path; a kernel whose notebook nobody names gets
        a namespace of its own (never shared); plain Python ``default``."""
        path = self._notebook_file()
        if path is not None:
            return self._notebook_namespace(path)
        session = location.session_name(self.user_ns)
        if session is not None:
            # A session name that is not a file's path: a namespace of its own.
            return f"session:{session}"
        path = location.script_path(self.user_ns)
        if path is not None:
            return location.namespace_for_path(path, self.store_root())
        if self._in_kernel():
            return self._unnamed_kernel()
        return "default"

    @staticmethod
    def _in_kernel() -> bool:
        """Whether this process is a Jupyter kernel (there is a notebook, named or not)."""
        app = sys.modules.get("ipykernel.kernelapp")
        return app is not None and app.IPKernelApp.initialized()

    def _notebook_namespace(self, path: str) -> str:
        root = self.store_root()
        by_path = location.namespace_for_path(path, root)
        found = notebook_id.read_id(path)
        the_id = self._ids.setdefault(path, found) if found is not None else self._ids.get(path)
        if the_id is None:
            return by_path
        namespace = notebook_id.namespace_of(the_id)
        settled = self._claimed.get((namespace, by_path))
        if settled is None:
            settled = self._claimed[(namespace, by_path)] = self._claim(
                namespace, by_path, path, the_id, root)
        return settled

    def _claim(self, namespace: str, by_path: str, path: str, the_id: str, root: Path) -> str:
        """Record the notebook's path beside its namespace; adopt the records of its
        path namespace (made before it had an id) once; refuse a copy's id."""
        from nbstep.engine import notebooks

        store = self.store()
        recorded = notebooks.recorded_path(store, namespace)
        other = notebooks.is_copy(root, recorded, path, the_id) if recorded != by_path else None
        if other is not None:
            self._tell(f"copy:{path}", (
                f"nbstep: {by_path} carries the notebook id of {recorded} (a copy): its steps "
                f"go to the namespace `{by_path}`, not to {recorded}'s records. Run it "
                "once with `nbstep run` (or delete its metadata.nbstep.id and save it) to "
                "give it an id of its own."))
            return by_path
        if store.current(by_path) and not store.current(namespace):  # the cheap one first
            try:
                moved = store.admin().move(by_path, namespace)
            except NbstepError as e:
                # A team store's server is down, say: keep to the records that replay.
                self._tell(f"adopt-failed:{by_path}", (
                    f"nbstep: could not move the records of `{by_path}` to this notebook's "
                    f"id `{namespace}` ({e}); this kernel keeps using `{by_path}`. They "
                    "move when a kernel of this notebook next starts."))
                return by_path
            self._tell(f"adopt:{by_path}", (
                f"nbstep: {moved} records of `{by_path}` now belong to this notebook's id "
                f"(`{namespace}`): they follow it when it is renamed or moved."))
        notebooks.record_path(store, namespace, by_path)
        return namespace

    def _unnamed_kernel(self) -> str:
        if self._unnamed is None:
            self._unnamed = f"kernel:{notebook_id.new_id()}"
        namespace = self._unnamed
        self._tell("unnamed", (
            "nbstep: this kernel cannot tell which notebook it runs (its runner names none), "
            f"so its steps go to `{namespace}`, a namespace of its own that nothing replays. "
            "Run the notebook with `nbstep run`, or name its namespace: "
            "`%step_config --namespace NAME`."))
        return namespace

    def _tell(self, what: str, line: str) -> None:
        """Say something once per process: as a notice in a notebook that loaded nbstep
        (never mistaken for the cell's output), else on stderr."""
        if what not in self._told:
            self._told.add(what)
            notify = self.notify
            if notify is not None:
                notify(line.removeprefix("nbstep: "))
            else:
                print(line, file=sys.stderr, flush=True)

    def resolve_namespace(self, namespace: str | None) -> str:
        return namespace if namespace is not None else self.default_namespace()

    def count_replay(self, store: StepStore, record: Any, n: int = 1) -> None:
        """Count a replay of ``record`` (``n=-1``: one that turned out not to be one)."""
        slot = (str(store.location), record.namespace, record.event_id)
        self.replays[slot] = self.replays.get(slot, 0) + n
        self.stats["replayed"] += n
        self.stats["saved_s"] += n * (record.duration_s or 0.0)

    def replays_of(self, store: StepStore, namespace: str) -> dict[int, int]:
        """``{event id: replays}`` of a namespace's records replayed in this process."""
        location = str(store.location)
        return {event_id: n for (where, ns, event_id), n in self.replays.items()
                if where == location and ns == namespace and n > 0}

    def reset(self) -> None:
        """Restart occurrence counters (a new run or cell); settings and the namespace
        are read again on next use."""
        with self._counter_lock:
            self._counters.clear()
        self._namespace = None
        self._origin = None
        self._file: str | None | bool = False  # False: not looked for since reset()
        self._settings = None

    def next_sequence(self, namespace: str, key: str) -> int:
        slot = (namespace, key)
        with self._counter_lock:
            sequence = self._counters.get(slot, 0) + 1
            self._counters[slot] = sequence
        return sequence
