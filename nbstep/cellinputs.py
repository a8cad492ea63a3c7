"""The deterministic input of a ``%%step`` cell, as named parts with one hash each.

Recipe (what is hashed, and what is not):

``code``
    sha256 of the cell's canonical AST (:func:`nbstep.cellanalysis.canonical`):
    whitespace and comments do not count, everything else does.
``var:NAME``, one per name the cell reads from the namespace before binding it
    - a module: its name and version (``__version__``, else its distribution's
      version, else the Python version for the standard library); a module of the
      project itself (a file outside ``sys.prefix``/``sys.base_prefix``) by the
      sha256 of its file, so editing ``helpers.py`` counts as a change;
    - a function defined in the notebook or in a project module: its source
      (canonical AST, so comments do not count), its defaults, and, recursively, the
      parts of the module-level names its code refers to (helpers it calls, constants
      it reads); an installed library's function: module, qualified name and version;
      Code a library generated (attrs' methods: its text is in linecache under a
      ``<...>`` name, or it is a closure of the library's module) counts by its code
      object's content, not its text: a by-value replay gives it another file name;
    - a class defined in the notebook: its name, bases and members, the same way;
    - anything else: ``nbstep.hashing.input_hash(value)``, the canonical structural
      hash. A value that cannot be hashed counts by its type only (its changes are
      not detected); the caller notes such names.

Names IPython itself puts in the namespace (``In``, ``Out``, ``get_ipython``, the
injected ``step``...) are not inputs unless the user rebound them. Names the cell
reads but that do not exist (builtins, typos) are not inputs either.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import sys
import textwrap
import types
from typing import Any

from .cellanalysis import canonical

_MAX_DEPTH = 8
UNHASHABLE_PREFIX = "type:"


def _sha(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return "sha256:" + hashlib.sha256(data).hexdigest()


def code_part(canonical_code: str) -> str:
    return _sha(canonical_code)


# -- modules ---------------------------------------------------------------------

_installed_roots: tuple[str, ...] | None = None
_module_cache: dict[tuple[str, str | None, float | None], str] = {}


def _roots() -> tuple[str, ...]:
    global _installed_roots
    if _installed_roots is None:
        roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                               sys.base_exec_prefix)}
        import site
        import sysconfig

        for path in sysconfig.get_paths().values():
            roots.add(os.path.realpath(path))
        try:
            roots.update(os.path.realpath(p) for p in site.getsitepackages())
            roots.add(os.path.realpath(site.getusersitepackages()))
        except AttributeError:  # virtualenv's old site.py
            pass
        _installed_roots = tuple(sorted(r.rstrip(os.sep) + os.sep for r in roots))
    return _installed_roots


def is_project_file(path: str | None) -> bool:
    """A source file of the user's project (not the standard library or site-packages)."""
    if not path or path.startswith("<"):
        return False
    real = os.path.realpath(path)
    return not any(real.startswith(root) for root in _roots())


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


def module_part(module: types.ModuleType) -> str:
    name = getattr(module, "__name__", "?")
    path = getattr(module, "__file__", None)
    mtime = None
    if is_project_file(path):
        try:
            mtime = os.stat(path).st_mtime  # type: ignore[arg-type]
        except OSError:
            mtime = None
    cache_key = (name, path, mtime)
    cached = _module_cache.get(cache_key)
    if cached is not None:
        return cached
    if mtime is not None:
        with open(path, "rb") as f:  # type: ignore[arg-type]
            part = _sha(b"module-file:" + name.encode() + b"\0" + f.read())
    else:
        version = getattr(module, "__version__", None)
        if not isinstance(version, str):
            top = sys.modules.get(name.split(".")[0])
            version = getattr(top, "__version__", None)
        if not isinstance(version, str):
            version = _distribution_version(name)
        if not isinstance(version, str):
            version = "python-" + ".".join(map(str, sys.version_info[:2]))
        part = _sha(f"module:{name}@{version}")
    _module_cache[cache_key] = part
    return part


# -- functions and classes ---------------------------------------------------------


def _is_user_object(obj: Any, user_module_names: set[str]) -> bool:
    module_name = getattr(obj, "__module__", None)
    if module_name in user_module_names:
        return True
    module = sys.modules.get(module_name or "")
    return module is not None and is_project_file(getattr(module, "__file__", None))


def _source_canonical(obj: Any) -> str | None:
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return None
    try:
        return canonical(ast.parse(textwrap.dedent(source)))
    except SyntaxError:
        # A lambda's line may hold more than the lambda; the text is still stable.
        return source.strip()


def _code_globals(code: types.CodeType) -> set[str]:
    """Module-level names a code object (and the code nested in it) loads."""
    import dis

    names = {
        instruction.argval
        for instruction in dis.get_instructions(code)
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME")
    }
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_globals(const)
    return names


def _is_generated(code: types.CodeType) -> bool:
    """Code compiled from text that is no file and no notebook cell (``exec``'d)."""
    filename = code.co_filename
    return filename.startswith("<") and not filename.startswith("<ipython-input-")


def _code_content(code: types.CodeType) -> str:
    """A code object's content, without its file name and line numbers."""
    consts = ",".join(_code_content(c) if isinstance(c, types.CodeType) else repr(c)
                      for c in code.co_consts)
    return _sha("\0".join([
        code.co_name, code.co_code.hex(), repr(code.co_names), repr(code.co_varnames),
        repr(code.co_freevars), repr(code.co_cellvars), str(code.co_argcount),
        str(code.co_kwonlyargcount), str(code.co_posonlyargcount), str(code.co_flags),
        consts]))


class _Hasher:
    def __init__(self, user_ns: dict[str, Any], user_module_names: set[str]) -> None:
        self.user_ns = user_ns
        self.user_module_names = user_module_names
        self.unhashable: list[str] = []
        self._active: set[int] = set()

    def part(self, value: Any, depth: int = 0) -> str:
        if isinstance(value, types.ModuleType):
            return module_part(value)
        if id(value) in self._active or depth > _MAX_DEPTH:
            # A recursive reference (f calls itself, two helpers call each other).
            return _sha(f"recursive:{getattr(value, '__qualname__', type(value).__qualname__)}")
        self._active.add(id(value))
        try:
            if isinstance(value, types.FunctionType):
                return self.function(value, depth)
            if isinstance(value, type):
                return self.cls(value, depth)
            if isinstance(value, types.MethodType):
                return _sha("method:" + self.part(value.__func__, depth + 1)
                            + self.data(value.__self__, depth + 1))
            return self.data(value, depth)
        finally:
            self._active.discard(id(value))

    def qualified(self, obj: Any, kind: str) -> str:
        module_name = getattr(obj, "__module__", None) or "?"
        module = sys.modules.get(module_name)
        version = module_part(module) if module is not None else "?"
        return _sha(f"{kind}:{module_name}.{getattr(obj, '__qualname__', '?')}@{version}")

    def function(self, fn: types.FunctionType, depth: int) -> str:
        if not _is_user_object(fn, self.user_module_names):
            return self.qualified(fn, "function")
        code = fn.__code__
        if _is_generated(code) or self._library_code(fn):
            # Code a library generated (attrs' methods): its text lives in linecache
            # under a made-up name in the kernel that made it, not after a by-value
            # replay (cloudpickle names it "<dynamic-code>"): its content, both times.
            source = "generated:" + _code_content(code)
        else:
            source = _source_canonical(fn)
        if source is None:
            # No source (defined by exec, or its cell was dropped): its bytecode.
            source = "code:" + fn.__code__.co_code.hex() + repr(fn.__code__.co_names)
        pieces = [f"function:{fn.__qualname__}", source]
        wrapped = fn.__dict__.get("__wrapped__")
        if source.startswith("generated:") and wrapped is not None:
            # A library's wrapper of a notebook function (functools.wraps): its text
            # was the wrapped function's (inspect follows __wrapped__); now its part.
            pieces.append("wrapped:" + self.part(wrapped, depth + 1))
        if fn.__defaults__:
            pieces.append("defaults:" + ",".join(self.part(d, depth + 1) for d in fn.__defaults__))
        if fn.__kwdefaults__:
            pieces.append("kwdefaults:" + ",".join(
                f"{k}={self.part(v, depth + 1)}" for k, v in sorted(fn.__kwdefaults__.items())))
        if fn.__closure__:
            for cell in fn.__closure__:
                try:
                    pieces.append("closure:" + self.part(cell.cell_contents, depth + 1))
                except ValueError:  # an empty cell
                    pieces.append("closure:empty")
        scope = fn.__globals__
        for name in sorted(_code_globals(fn.__code__)):
            if name in scope and not _is_hidden_value(name, scope[name]):
                pieces.append(f"global:{name}={self.part(scope[name], depth + 1)}")
        return _sha("\n".join(pieces))

    def _library_code(self, fn: types.FunctionType) -> bool:
        """A function an installed library made for the notebook (attrs' ``__ge__``,
        a closure of ``attr._make``, whose ``__module__`` says ``__main__``)."""
        name = fn.__globals__.get("__name__")
        if not isinstance(name, str) or name in self.user_module_names:
            return False
        module = sys.modules.get(name)
        return module is not None and not is_project_file(getattr(module, "__file__", None))

    def cls(self, cls: type, depth: int) -> str:
        if not _is_user_object(cls, self.user_module_names):
            return self.qualified(cls, "class")
        pieces = [f"class:{cls.__qualname__}"]
        pieces += [f"base:{self.part(base, depth + 1)}" for base in cls.__bases__
                   if base is not object]
        for name, member in sorted(vars(cls).items()):
            if name in ("__dict__", "__weakref__", "__module__", "__qualname__",
                        "__firstlineno__", "__static_attributes__", "__slotnames__"):
                continue  # __slotnames__: a cache that pickling an instance adds
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                member = (member.fget, member.fset, member.fdel)
                pieces.append(name + "=" + ",".join(
                    self.part(f, depth + 1) for f in member if f is not None))
                continue
            pieces.append(f"{name}={self.part(member, depth + 1)}")
        return _sha("\n".join(pieces))

    def data(self, value: Any, depth: int) -> str:
        from .hashing import NotHashable, input_hash

        try:
            return input_hash(value)
        except NotHashable:
            pass
        except Exception:  # a value's own __eq__/__len__... raising: hash it by type
            pass
        if callable(value) and hasattr(value, "__qualname__"):
            return self.qualified(value, "callable")
        self.unhashable.append(type(value).__qualname__)
        return f"{UNHASHABLE_PREFIX}{type(value).__module__}.{type(value).__qualname__}"


def _is_hidden_value(name: str, value: Any) -> bool:
    # Never descend into the shell itself (get_ipython's closure, the step API).
    return name in ("get_ipython", "In", "Out", "exit", "quit") or type(value).__name__ in (
        "ZMQInteractiveShell", "InteractiveShell", "StepAPI")


def input_parts(
    code: str,
    reads: list[str],
    user_ns: dict[str, Any],
    hidden: dict[str, Any],
    user_module_names: set[str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The parts of a cell's deterministic input, and the names hashed by type only."""
    modules = user_module_names or {"__main__"}
    hasher = _Hasher(user_ns, modules)
    parts = {"code": code_part(code)}
    unhashable = []
    missing = object()
    for name in reads:
        value = user_ns.get(name, missing)
        if value is missing:
            continue
        if name in hidden and hidden[name] is value:
            continue
        before = len(hasher.unhashable)
        parts["var:" + name] = hasher.part(value)
        if len(hasher.unhashable) > before:
            unhashable.append(name)
    return parts, unhashable


def indirect_reads(reads: list[str], user_ns: dict[str, Any], hidden: dict[str, Any],
                   user_module_names: set[str] | None = None) -> list[str]:
    """Module-level names the notebook functions a cell reads (and calls) read in turn.

    Transitively: a helper's helpers, a decorator's wrapper, the methods of a class the
    cell reads. Only names of ``user_ns`` that are not themselves functions, classes
    or modules, and that the cell does not read directly (``register`` appending to
    ``REGISTRY``): their value may change in place while the cell runs.
    """
    modules = user_module_names or {"__main__"}
    missing = object()
    seen: set[int] = set()
    found: list[str] = []
    direct = set(reads)
    queue: list[Any] = [user_ns.get(name, missing) for name in reads]

    def visit(fn: types.FunctionType) -> None:
        if fn.__globals__ is not user_ns:
            return
        for cell in fn.__closure__ or ():
            try:
                queue.append(cell.cell_contents)
            except ValueError:
                pass
        for name in sorted(_code_globals(fn.__code__)):
            value = user_ns.get(name, missing)
            if value is missing or (name in hidden and hidden[name] is value):
                continue
            if isinstance(value, (types.FunctionType, type)):
                queue.append(value)
            elif (not isinstance(value, types.ModuleType) and name not in direct
                  and name not in found and not _is_hidden_value(name, value)):
                found.append(name)

    while queue:
        value = queue.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, types.FunctionType):
            visit(value)
        elif isinstance(value, types.MethodType):
            queue.append(value.__func__)
        elif isinstance(value, type) and _is_user_object(value, modules):
            for member in vars(value).values():
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property):
                    queue.extend(f for f in (member.fget, member.fset, member.fdel) if f)
                elif isinstance(member, types.FunctionType):
                    queue.append(member)
        else:
            if _is_user_object(type(value), modules):
                queue.append(type(value))  # an instance: its methods may be called
            try:
                wrapped = getattr(value, "__wrapped__", None)  # lru_cache and the like
            except Exception:
                continue
            if isinstance(wrapped, types.FunctionType):
                queue.append(wrapped)
    return found


def value_hash(value: Any, user_ns: dict[str, Any], user_module_names: set[str] | None = None
               ) -> str | None:
    """One value's part hash, or None when it can be hashed by type only."""
    hasher = _Hasher(user_ns, user_module_names or {"__main__"})
    part = hasher.part(value)
    return None if part.startswith(UNHASHABLE_PREFIX) else part


def describe_changes(old: dict[str, str], new: dict[str, str]) -> str | None:
    """``the code and variable `threshold``` style text; None when nothing differs."""
    changed: list[str] = []
    if old.get("code") != new.get("code"):
        changed.append("the code")
    for name in sorted({*old, *new} - {"code"}):
        if not name.startswith("var:"):
            continue
        label = name[4:]
        if name not in new:
            changed.append(f"variable `{label}` (no longer defined)")
        elif name not in old:
            changed.append(f"variable `{label}` (new input)")
        elif old[name] != new[name]:
            changed.append(f"variable `{label}`")
    if not changed:
        return None
    if len(changed) == 1:
        return changed[0]
    return ", ".join(changed[:-1]) + " and " + changed[-1]
