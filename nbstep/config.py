"""Where the store lives, what the default namespace is, and the settings.

Resolution order, first match wins (documented in the README):

store directory
    1. ``NBSTEP_STORE`` (a directory; created if missing)
    2. ``nbstep.configure(store=...)``
    3. ``store = "..."`` under ``[tool.nbstep]`` in the nearest ``pyproject.toml``
       (relative paths are relative to that file's folder)
    4. ``.nbstep/`` in the nearest ancestor of the working directory that has one
    5. ``.nbstep/`` in the nearest ancestor with ``pyproject.toml`` or ``.git``
    6. ``.nbstep/`` in the working directory

The store's *root* is the folder that holds the store directory; notebook and
script paths are made relative to it to form namespaces, so ``./a.ipynb`` and
``a.ipynb`` are one namespace and a moved project keeps its records.

default namespace
    1. ``NBSTEP_NAMESPACE``
    2. ``nbstep.configure(namespace=...)``
    3. the running notebook's path (see :func:`notebook_path`) or script's path,
       relative to the store root with ``/`` separators (absolute when outside it)
    4. ``"default"``
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

STORE_DIR_NAME = ".nbstep"
ON_MISMATCH_MODES = ("error", "rerun")

# Settings that may appear under [tool.nbstep] and in configure(); the value is the
# expected type. The magic adds its own (quiet, ...) through the same table.
SETTING_TYPES: dict[str, type | tuple[type, ...]] = {
    "store": str,
    "namespace": str,
    "on_mismatch": str,
    "rerun": bool,
    "magic_on_mismatch": str,
    "quiet": bool,
    "busy_timeout": (int, float),
    "linger": (int, float),
    "inline_limit": int,
}


@dataclass
class Settings:
    """Values given to :func:`nbstep.configure`; None means "not set here"."""

    values: dict[str, Any] = field(default_factory=dict)


_configured = Settings()


def validate_setting(name: str, value: Any, source: str) -> Any:
    """Check one setting's name, type and value; return it normalized."""
    if name not in SETTING_TYPES:
        import difflib

        close = difflib.get_close_matches(name, SETTING_TYPES, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        known = ", ".join(sorted(SETTING_TYPES))
        raise ConfigError(f"{source}: unknown setting `{name}`.{hint} Known settings: {known}.")
    expected = SETTING_TYPES[name]
    if value is None:
        return None
    if name in ("store",) and isinstance(value, os.PathLike):
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
    return value


def _type_words(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def configure(**settings: Any) -> None:
    """Set process-wide defaults; ``None`` removes a setting again.

    ``nbstep.configure(store="/data/cache", namespace="exp-1", on_mismatch="rerun")``
    """
    checked = {
        name: validate_setting(name, value, "nbstep.configure") for name, value in settings.items()
    }
    for name, value in checked.items():
        if value is None:
            _configured.values.pop(name, None)
        else:
            _configured.values[name] = value


def configured(name: str) -> Any:
    return _configured.values.get(name)


def find_pyproject(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def project_settings(start: Path | None = None) -> tuple[dict[str, Any], Path | None]:
    """The ``[tool.nbstep]`` table of the nearest pyproject.toml, validated."""
    pyproject = find_pyproject(start or Path.cwd())
    if pyproject is None:
        return {}, None
    # The magic asks for settings on every %%step cell: parse a file once per version.
    info = pyproject.stat()
    stamp = (pyproject, info.st_mtime_ns, info.st_size, info.st_ino)
    cached = _project_cache.get(stamp)
    if cached is None:
        cached = _read_project_settings(pyproject)
        _project_cache.clear()
        _project_cache[stamp] = cached
    return dict(cached), pyproject


_project_cache: dict[tuple[Path, int, int, int], dict[str, Any]] = {}


def _read_project_settings(pyproject: Path) -> dict[str, Any]:
    try:
        with open(pyproject, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{pyproject}: not valid TOML ({e}); fix the file or remove it") from e
    table = data.get("tool", {}).get("nbstep", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.nbstep] must be a table")
    source = f"{pyproject} [tool.nbstep]"
    return {k: validate_setting(k, v, source) for k, v in table.items()}


def setting(name: str, default: Any = None, start: Path | None = None) -> Any:
    """A setting from configure(), else pyproject.toml, else ``default``."""
    value = configured(name)
    if value is not None:
        return value
    table, _ = project_settings(start)
    value = table.get(name)
    return default if value is None else value


def resolve_store_dir(start: Path | None = None) -> Path:
    """The store directory, following the order in this module's docstring."""
    cwd = (start or Path.cwd()).resolve()
    env = os.environ.get("NBSTEP_STORE")
    if env is not None:
        if not env.strip():
            raise ConfigError(
                "NBSTEP_STORE is set but empty; set it to a directory or unset it"
            )
        return Path(env).expanduser().resolve()
    explicit = configured("store")
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    table, pyproject = project_settings(cwd)
    if table.get("store") is not None and pyproject is not None:
        return (pyproject.parent / Path(table["store"]).expanduser()).resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / STORE_DIR_NAME).is_dir():
            return folder / STORE_DIR_NAME
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file() or (folder / ".git").exists():
            return folder / STORE_DIR_NAME
    return cwd / STORE_DIR_NAME


def namespace_for_path(path: str | os.PathLike[str], root: Path) -> str:
    """A file's namespace: its path relative to ``root`` with ``/``, else absolute."""
    resolved = Path(path).expanduser().resolve()
    try:
        return resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def session_name(user_ns: dict[str, Any] | None = None) -> str | None:
    """The raw session name jupyter_server gave the kernel, if any."""
    for value in (
        (user_ns or {}).get("__vsc_ipynb_file__"),
        (user_ns or {}).get("__session__"),
        os.environ.get("JPY_SESSION_NAME"),
    ):
        if isinstance(value, str) and value.strip():
            return value
    return None


def notebook_path(user_ns: dict[str, Any] | None = None) -> str | None:
    """The running notebook's path, when the kernel can tell.

    Checked in order: ``__vsc_ipynb_file__`` (VS Code), ``__session__`` (ipykernel
    copies ``JPY_SESSION_NAME`` there), then ``JPY_SESSION_NAME`` itself. A value that
    is not absolute is server-root-relative; it is used only when it names an
    existing file relative to the kernel's working directory, since the kernel's
    working directory is the notebook's folder, not the server root.
    """
    candidates: list[Any] = []
    if user_ns is not None:
        candidates += [user_ns.get("__vsc_ipynb_file__"), user_ns.get("__session__")]
    candidates.append(os.environ.get("JPY_SESSION_NAME"))
    for value in candidates:
        if not isinstance(value, str) or not value.strip():
            continue
        candidate = Path(value).expanduser()
        if candidate.is_absolute():
            return str(candidate)
        local = Path.cwd() / candidate
        if local.is_file():
            return str(local)
        by_name = Path.cwd() / candidate.name
        if by_name.is_file():
            return str(by_name)
    return None


def script_path() -> str | None:
    """The running script's path (``python script.py``), if there is one."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if isinstance(path, str) and path and not path.startswith("<") and os.path.isfile(path):
        return path
    return None
