"""Every setting nbstep has, its default, and where a value comes from.

Resolution order, first match wins (documented in the README):

``store`` (the store directory, or a team store's ``postgresql://`` URL)
    1. ``NBSTEP_STORE`` (a directory; created if missing)
    2. ``nbstep.configure(store=...)``
    3. ``store = "..."`` under ``[tool.nbstep]`` in the nearest ``pyproject.toml``
       (relative paths are relative to that file's folder)
    4. ``.nbstep/`` in the nearest ancestor of the working directory that has one
    5. ``.nbstep/`` in the nearest ancestor with ``pyproject.toml`` or ``.git``
    6. ``.nbstep/`` in the working directory
``namespace``
    ``NBSTEP_NAMESPACE``, then ``configure``, then ``[tool.nbstep]``; unset, the
    engine uses the running notebook's path (:mod:`nbstep.core.location`).
``keep_versions`` (how many versions of a step's slot are kept, the current included)
    ``NBSTEP_KEEP_VERSIONS``, then ``configure``, then ``[tool.nbstep]``
``objects``, ``trust`` (the team store: where large values go, whose pickles load)
    ``NBSTEP_OBJECTS`` / ``NBSTEP_TRUST`` (comma-separated), then ``configure``, then
    ``[tool.nbstep]``
every other setting
    ``configure``, then ``[tool.nbstep]``, then the default in :class:`Settings`.

With a ``postgresql://`` store, the local store directory found by steps 4-6 holds
the team store's local mirror and offline journal (``.nbstep/team/``), and its
parent is still the root namespaces are relative to.

The store's *root* is the folder that holds the store directory; notebook and
script paths are made relative to it to form namespaces, so ``./a.ipynb`` and
``a.ipynb`` are one namespace and a moved project keeps its records.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from nbstep.core.names import plain_text

from .errors import ConfigError

STORE_DIR_NAME = ".nbstep"
ON_MISMATCH_MODES = ("error", "rerun")
CONFIGURED = "%step_config / nbstep.configure"
DEFAULT = "default"


class Settings(NamedTuple):
    """One resolved set of settings: every default is here and only here.

    A named tuple (immutable) rather than a dataclass: dataclasses import
    ``inspect``, some 10 ms that a script replaying its steps need not pay.
    """

    store: str | None = None  # an explicit store location; None: found from the cwd
    namespace: str | None = None  # None: the running notebook's path
    on_mismatch: str = "error"  # step.run when a recorded input differs
    rerun: bool = False  # every step recomputes (`nbstep run --rerun`)
    magic_on_mismatch: str = "rerun"  # %%step when a recorded input differs
    quiet: bool = False  # no "replayed ..." line under replayed cells
    busy_timeout: float = 60.0  # seconds to wait for another process holding the store
    linger: float = 0.05  # seconds an idle process keeps the store attached
    inline_limit: int = 64 * 1024  # values up to this many bytes live in the event table
    # Versions kept per slot (the current one included): an input seen before replays
    # its earlier version; gc keeps this many.
    keep_versions: int = 5
    # The team store: where values above inline_limit go (a shared directory, or an
    # s3:// gs:// az:// URL), and the writers whose pickled values this machine loads.
    objects: str | None = None
    trust: tuple[str, ...] = ()
    # Where each value came from ("default", "%step_config / nbstep.configure",
    # "environment NBSTEP_STORE", "<pyproject.toml> [tool.nbstep]").
    sources: Mapping[str, str] = MappingProxyType({})


NAMES = tuple(name for name in Settings._fields if name != "sources")
# The type each setting must have, in configure() and in [tool.nbstep].
TYPES: dict[str, type | tuple[type, ...]] = {
    "store": str,
    "namespace": str,
    "on_mismatch": str,
    "rerun": bool,
    "magic_on_mismatch": str,
    "quiet": bool,
    "busy_timeout": (int, float),
    "linger": (int, float),
    "inline_limit": int,
    "keep_versions": int,
    "objects": str,
    "trust": (list, tuple),
}
# Settings that shape the open store: changing one reopens it.
STORE_SHAPING = ("store", "linger", "busy_timeout", "inline_limit", "keep_versions", "objects",
                 "trust")
ENVIRONMENT = {"store": "NBSTEP_STORE", "namespace": "NBSTEP_NAMESPACE",
               "objects": "NBSTEP_OBJECTS", "trust": "NBSTEP_TRUST",
               "keep_versions": "NBSTEP_KEEP_VERSIONS"}
SERVER_SCHEMES = ("postgresql://", "postgres://")
CLOUD_SCHEMES = ("s3://", "gs://", "az://", "abfs://", "azure://")


def is_server_url(value: object) -> bool:
    """Whether a ``store`` setting names a team store's server (``postgresql://...``)."""
    return isinstance(value, str) and value.strip().lower().startswith(SERVER_SCHEMES)


def is_cloud_url(value: object) -> bool:
    """Whether an ``objects`` setting names an object store rather than a directory."""
    return isinstance(value, str) and value.strip().lower().startswith(CLOUD_SCHEMES)


def validate(name: str, value: Any, source: str) -> Any:
    """Check one setting's name, type and value; return it normalized (None unsets)."""
    if name not in TYPES:
        import difflib

        close = difflib.get_close_matches(name, TYPES, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        known = ", ".join(sorted(TYPES))
        raise ConfigError(f"{source}: unknown setting `{name}`.{hint} Known settings: {known}.")
    expected = TYPES[name]
    if value is None:
        return None
    if name == "store" and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"{source}: `{name}` must be {_type_words(expected)}, got bool")
    if not isinstance(value, expected):
        raise ConfigError(
            f"{source}: `{name}` must be {_type_words(expected)}, got {type(value).__name__}"
        )
    if isinstance(value, str) and not value.strip():
        raise ConfigError(f"{source}: `{name}` cannot be empty")
    if name in ("on_mismatch", "magic_on_mismatch") and value not in ON_MISMATCH_MODES:
        raise ConfigError(
            f"{source}: `{name}` must be one of `error`, `rerun`, got `{value}`"
        )
    if name in ("busy_timeout", "linger") and not (0 <= value < float("inf")):
        raise ConfigError(f"{source}: `{name}` must be a finite number of seconds >= 0, "
                          f"got {value}")
    if name == "inline_limit" and value < 0:
        raise ConfigError(f"{source}: `inline_limit` must be >= 0 bytes, got {value}")
    if name == "keep_versions" and value < 1:
        raise ConfigError(
            f"{source}: `keep_versions` must be an integer >= 1 (the versions kept per step, "
            f"the current one included), got {value}; use 1 to keep only the current one"
        )
    if name == "trust":
        return _trust(value, source)
    if name == "objects" and "://" in value and not is_cloud_url(value):
        raise ConfigError(
            f"{source}: `objects` must be a directory shared by the team or an s3://, "
            f"gs:// or az:// URL, got `{value}`"
        )
    return value


def _trust(value: Any, source: str) -> tuple[str, ...]:
    names = []
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"{source}: `trust` must be a list of the team store's user names (as the "
                f"server knows them, e.g. [\"alice\", \"ci\"]), got {value!r}"
            )
        names.append(name.strip())
    return tuple(names)


def _type_words(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def load(overrides: Mapping[str, Any], start: Path | None = None) -> Settings:
    """The settings for code running in ``start`` (default: the working directory).

    ``overrides`` are the values given to ``nbstep.configure``, already validated.
    """
    table, pyproject = project_table(start or Path.cwd())
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in NAMES:
        env = ENVIRONMENT.get(name)
        if env is not None and _environment(env) is not None:
            value = _environment(env)
            if name == "trust":
                value = validate(name, value.split(","), f"environment {env}")
            elif name == "keep_versions":
                value = validate(name, _integer(value, env), f"environment {env}")
            values[name], sources[name] = value, f"environment {env}"
        elif overrides.get(name) is not None:
            values[name], sources[name] = overrides[name], CONFIGURED
        elif table.get(name) is not None:
            value = table[name]
            if name in ("store", "objects") and not (is_server_url(value)
                                                   or is_cloud_url(value)):
                assert pyproject is not None
                value = str((pyproject.parent / Path(value).expanduser()).resolve())
            values[name], sources[name] = value, f"{pyproject} [tool.nbstep]"
        else:
            sources[name] = DEFAULT
    if values.get("namespace") is not None:
        try:
            values["namespace"] = plain_text(values["namespace"], "the namespace")
        except ValueError as e:
            raise ConfigError(f"{e} ({sources['namespace']})") from None
    return Settings(**values, sources=sources)


def _integer(text: str, env: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"environment {env}: must be an integer >= 1 (the versions kept "
                          f"per step, the current one included), got `{text}`; set it to "
                          "e.g. 5, or unset it") from None


def _environment(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.strip():
        if name in ("NBSTEP_STORE", "NBSTEP_OBJECTS"):
            raise ConfigError(f"{name} is set but empty; set it to a directory or unset it")
        return None  # an empty NBSTEP_NAMESPACE means "not set"
    return value


def store_dir(settings: Settings, start: Path | None = None) -> Path:
    """The store directory: the explicit ``store`` setting, else found from ``start``.

    For a team store (a ``postgresql://`` store) this is the local directory that
    holds its mirror and journal, found as if no store were set.
    """
    if settings.store is not None and not is_server_url(settings.store):
        return Path(settings.store).expanduser().resolve()
    cwd = (start or Path.cwd()).resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / STORE_DIR_NAME).is_dir():
            return folder / STORE_DIR_NAME
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file() or (folder / ".git").exists():
            return folder / STORE_DIR_NAME
    return cwd / STORE_DIR_NAME


def find_pyproject(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def project_table(start: Path) -> tuple[dict[str, Any], Path | None]:
    """The ``[tool.nbstep]`` table of the nearest pyproject.toml, validated."""
    pyproject = find_pyproject(start.resolve())
    if pyproject is None:
        return {}, None
    info = pyproject.stat()
    # The magic asks on every %%step cell: a file is parsed once per version of it.
    return dict(_read_table(pyproject, info.st_mtime_ns, info.st_size, info.st_ino)), pyproject


@functools.lru_cache(maxsize=8)
def _read_table(pyproject: Path, _mtime_ns: int, _size: int, _inode: int) -> dict[str, Any]:
    import tomllib  # only where a project has a pyproject.toml

    # `rerun` is for one run (`nbstep run --rerun`, configure(rerun=True)): set for a
    # project, nothing would ever replay.
    try:
        with open(pyproject, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{pyproject}: not valid TOML ({e}); fix the file or remove it") from e
    table = data.get("tool", {}).get("nbstep", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.nbstep] must be a table")
    source = f"{pyproject} [tool.nbstep]"
    if "rerun" in table:
        raise ConfigError(
            f"{source}: `rerun` cannot be a project setting (every step would recompute on "
            "every run); remove it, and use `nbstep run --rerun` or "
            "nbstep.configure(rerun=True) for one run"
        )
    return {k: validate(k, v, source) for k, v in table.items()}
