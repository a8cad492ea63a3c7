"""Hashing code: functions and classes by their source, code objects by content.

A ``%%step`` cell's input has one part per name it reads (:mod:`nbstep.notebook.inputs`);
:class:`PartHasher` gives each value its part:

- a module: :func:`nbstep.hashing.modules.module_part`;
- a function defined in the notebook or in a project module: its source (canonical
  AST, so comments and whitespace do not count), its defaults, its closure, and,
  recursively, the parts of the module-level names its code refers to (helpers it
  calls, constants it reads); an installed library's function: module, qualified
  name and version. Code a library generated (attrs' methods: its text is in
  linecache under a ``<...>`` name, or it is a closure of the library's module)
  counts by its code object's content, not its text: a by-value replay gives it
  another file name;
- a class defined in the notebook: its name, bases and members, the same way;
- anything else: :func:`nbstep.hashing.recipe.input_hash`, the structural hash. A
  value that cannot be hashed counts by its type only (``type:`` prefix; its changes
  are not detected) and is noted in ``unhashable``.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import types
from typing import Any

from nbstep.core.names import is_shell_value
from nbstep.errors import NotHashable

from .modules import is_project_file, module_part, sha
from .recipe import input_hash

_MAX_DEPTH = 8
UNHASHABLE_PREFIX = "type:"


def canonical(node: ast.AST) -> str:
    """A stable text form of an AST: no positions, no comments, no empty fields."""
    out: list[str] = []

    def emit(value: object) -> None:
        if isinstance(value, ast.AST):
            out.append(type(value).__name__)
            out.append("(")
            for name in value._fields:
                field_value = getattr(value, name, None)
                if field_value is None or field_value == []:
                    continue
                if name == "kind" and isinstance(value, ast.Constant):
                    continue  # u"..." vs "..." is the same string
                out.append(name)
                out.append("=")
                emit(field_value)
                out.append(",")
            out.append(")")
        elif isinstance(value, list):
            out.append("[")
            for item in value:
                emit(item)
                out.append(",")
            out.append("]")
        else:
            out.append(type(value).__name__)
            out.append(":")
            out.append(repr(value))

    emit(node)
    return "".join(out)


def is_user_object(obj: Any, user_module_names: set[str]) -> bool:
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


def code_globals(code: types.CodeType) -> set[str]:
    """Module-level names a code object (and the code nested in it) loads."""
    import dis

    names = {
        instruction.argval
        for instruction in dis.get_instructions(code)
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME")
    }
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_globals(const)
    return names


def _is_generated(code: types.CodeType) -> bool:
    """Code compiled from text that is no file and no notebook cell (``exec``'d)."""
    filename = code.co_filename
    return filename.startswith("<") and not filename.startswith("<ipython-input-")


def _code_content(code: types.CodeType) -> str:
    """A code object's content, without its file name and line numbers."""
    consts = ",".join(_code_content(c) if isinstance(c, types.CodeType) else repr(c)
                      for c in code.co_consts)
    return sha("\0".join([
        code.co_name, code.co_code.hex(), repr(code.co_names), repr(code.co_varnames),
        repr(code.co_freevars), repr(code.co_cellvars), str(code.co_argcount),
        str(code.co_kwonlyargcount), str(code.co_posonlyargcount), str(code.co_flags),
        consts]))


class PartHasher:
    """Part hashes of values in one namespace (see the module docstring)."""

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
            return sha(f"recursive:{getattr(value, '__qualname__', type(value).__qualname__)}")
        self._active.add(id(value))
        try:
            if isinstance(value, types.FunctionType):
                return self.function(value, depth)
            if isinstance(value, type):
                return self.cls(value, depth)
            if isinstance(value, types.MethodType):
                return sha("method:" + self.part(value.__func__, depth + 1)
                            + self.data(value.__self__, depth + 1))
            return self.data(value, depth)
        finally:
            self._active.discard(id(value))

    def qualified(self, obj: Any, kind: str) -> str:
        module_name = getattr(obj, "__module__", None) or "?"
        module = sys.modules.get(module_name)
        version = module_part(module) if module is not None else "?"
        return sha(f"{kind}:{module_name}.{getattr(obj, '__qualname__', '?')}@{version}")

    def function(self, fn: types.FunctionType, depth: int) -> str:
        if not is_user_object(fn, self.user_module_names):
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
        for name in sorted(code_globals(fn.__code__)):
            if name in scope and not is_shell_value(name, scope[name]):
                pieces.append(f"global:{name}={self.part(scope[name], depth + 1)}")
        return sha("\n".join(pieces))

    def _library_code(self, fn: types.FunctionType) -> bool:
        """A function an installed library made for the notebook (attrs' ``__ge__``,
        a closure of ``attr._make``, whose ``__module__`` says ``__main__``)."""
        name = fn.__globals__.get("__name__")
        if not isinstance(name, str) or name in self.user_module_names:
            return False
        module = sys.modules.get(name)
        return module is not None and not is_project_file(getattr(module, "__file__", None))

    def cls(self, cls: type, depth: int) -> str:
        if not is_user_object(cls, self.user_module_names):
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
        return sha("\n".join(pieces))

    def data(self, value: Any, depth: int) -> str:
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


def value_part(value: Any, user_ns: dict[str, Any], user_module_names: set[str] | None = None
               ) -> str | None:
    """One value's part hash, or None when it can be hashed by its type only."""
    part = PartHasher(user_ns, user_module_names or {"__main__"}).part(value)
    return None if part.startswith(UNHASHABLE_PREFIX) else part
