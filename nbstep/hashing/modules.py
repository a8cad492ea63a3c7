"""Hashing an imported module by its name and version, and telling project code apart.

An installed module counts by its name and version (``__version__``, else its
distribution's version, else the Python version for the standard library). A module
of the user's project (:func:`is_project_file`: a file outside ``sys.prefix`` /
``sys.base_prefix`` and site-packages) counts by the code the kernel runs, not by
its file: :meth:`nbstep.hashing.code.PartHasher.module`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import types


def sha(text: str | bytes) -> str:
    """``sha256:`` + the hex digest of ``text`` (UTF-8 when a str)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return "sha256:" + hashlib.sha256(data).hexdigest()


@functools.cache
def _roots() -> tuple[str, ...]:
    """Where installed code lives: every prefix, site-packages and sysconfig path."""
    import site
    import sysconfig

    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                           sys.base_exec_prefix)}
    for path in sysconfig.get_paths().values():
        roots.add(os.path.realpath(path))
    try:
        roots.update(os.path.realpath(p) for p in site.getsitepackages())
        roots.add(os.path.realpath(site.getusersitepackages()))
    except AttributeError:  # virtualenv's old site.py
        pass
    return tuple(sorted(r.rstrip(os.sep) + os.sep for r in roots))


_OWN = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep


def is_project_file(path: str | None) -> bool:
    """A source file of the user's project (not the standard library or site-packages,
    and not nbstep's own, wherever it is installed)."""
    if not path or path.startswith("<"):
        return False
    if os.path.realpath(path).startswith(_OWN):
        return False
    real = os.path.realpath(path)
    return not any(real.startswith(root) for root in _roots())


@functools.cache
def _distribution_version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, packages_distributions, version
    except ImportError:  # pragma: no cover
        return None
    top = name.split(".")[0]
    try:
        return version(top)
    except (PackageNotFoundError, ValueError):
        pass
    for dist in packages_distributions().get(top, []):
        try:
            return version(dist)
        except (PackageNotFoundError, ValueError):
            continue
    return None



# name -> part: an installed module's version does not change while it is imported.
_parts: dict[str, str] = {}


def module_part(module: types.ModuleType) -> str:
    """``sha256("module:<name>@<version>")`` of an installed (or built-in) module."""
    name = getattr(module, "__name__", "?")
    cached = _parts.get(name)
    if cached is not None:
        return cached
    version = getattr(module, "__version__", None)
    if not isinstance(version, str):
        top = sys.modules.get(name.split(".")[0])
        version = getattr(top, "__version__", None)
    if not isinstance(version, str):
        version = _distribution_version(name)
    if not isinstance(version, str):
        version = "python-" + ".".join(map(str, sys.version_info[:2]))
    part = sha(f"module:{name}@{version}")
    _parts[name] = part
    return part
