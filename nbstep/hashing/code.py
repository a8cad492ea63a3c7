"""Hashing code and the values a ``%%step`` cell reads: one *part* per value.

A ``%%step`` cell's input has one part per name it reads (:mod:`nbstep.notebook.inputs`);
:class:`PartHasher` gives each value its part (recipe 2, docs/tracking.md):

- a module: an installed one by name and version (:func:`.modules.module_part`); a
  module of the project (a file outside the installed prefixes) by *the code the
  kernel runs*: each function's and class's compiled code (not the file, which may
  have been edited since it was imported; comments, docstrings and line numbers do
  not count) and each other attribute's part;
- a function defined in the notebook: its source (canonical AST, so comments and
  whitespace do not count), its defaults, its closure, its attributes, and,
  recursively, the parts of the module-level names its code refers to, by name or
  inside a string constant (``df.query("a > @LIMIT")``); a function of a project
  module the same, with its compiled code instead of its source; an installed
  library's function: module, qualified name and version. Code a library generated
  (attrs' methods: its text is in linecache under a ``<...>`` name, or it is a
  closure of the library's module) counts by its code object's content;
- a wrapper that is not a function (``functools.lru_cache``'s, say): its type and
  the part of the function it wraps; a ``functools.partial``: its function and
  arguments;
- a class of the notebook or the project: its name, bases and members, the same way;
- anything else: :func:`.recipe.input_hash`, the structural hash, plus the parts of
  the notebook classes its key names (a dataclass instance counts by its class's
  methods too, not its fields alone); a value with no structural key: the step
  record that produced it, when a step did and nothing changed it since
  (:attr:`PartHasher.provenance`: a figure's pickle differs between a kernel that
  drew it and one that loaded it), else its canonical pickle digest
  (:func:`.state.canonical_digest`), with the functions and classes inside counted
  by their code. A value that cannot be pickled either counts by its
  type only (``type:`` prefix; its changes are not detected) and is noted in
  ``unhashable``.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
import types
from collections.abc import Callable
from typing import Any

from nbstep.core.names import is_shell_value
from nbstep.errors import NotHashable

from .modules import is_project_file, module_part, sha
from .recipe import input_hash_and_classes
from .state import canonical_digest

_MAX_DEPTH = 40
UNHASHABLE_PREFIX = "type:"
# The recipe of the parts below; a record made with another one is not compared.
RECIPE = 2
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A module's own bookkeeping: not what its code computes.
_MODULE_DUNDERS = frozenset({"__name__", "__doc__", "__file__", "__loader__", "__spec__",
                             "__package__", "__path__", "__cached__", "__builtins__",
                             "__annotations__", "__all__", "__version__"})
_CLASS_SKIP = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__",
                         "__firstlineno__", "__static_attributes__", "__slotnames__"})


def canonical(node: ast.AST, docstrings: bool = True) -> str:
    """A stable text form of an AST: no positions, no comments, no empty fields.

    ``docstrings=False`` leaves out the docstring of every module, class and function.
    """
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
                if (name == "body" and not docstrings and isinstance(value, _DOCUMENTED)
                        and _has_docstring(field_value)):
                    field_value = field_value[1:]
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


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _has_docstring(body: Any) -> bool:
    return (isinstance(body, list) and bool(body) and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str))


def is_user_object(obj: Any, user_module_names: set[str]) -> bool:
    module_name = getattr(obj, "__module__", None)
    if module_name in user_module_names:
        return True
    module = sys.modules.get(module_name or "")
    return module is not None and is_project_file(getattr(module, "__file__", None))


def _source_canonical(code: types.CodeType) -> str | None:
    """The canonical AST of the source a notebook function was compiled from.

    From its code object, not the function: ``inspect.getsource(fn)`` follows
    ``__wrapped__`` and would give a decorator's wrapper the text of what it wraps.
    """
    try:
        source = inspect.getsource(code)
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


def code_strings(code: types.CodeType) -> set[str]:
    """Identifiers inside the string constants of a code object (and nested code).

    Code reads notebook variables through strings too: ``df.query("a > @LIMIT")``,
    ``duckdb.sql("select * from sales")``, ``globals()["X"]``.
    """
    found: set[str] = set()
    for const in code.co_consts:
        if isinstance(const, str):
            found.update(_IDENTIFIER.findall(const))
        elif isinstance(const, types.CodeType):
            found |= code_strings(const)
        elif isinstance(const, tuple | frozenset):
            for item in const:
                if isinstance(item, str):
                    found.update(_IDENTIFIER.findall(item))
    return found


def _is_generated(code: types.CodeType) -> bool:
    """Code compiled from text that is no file and no notebook cell (``exec``'d)."""
    filename = code.co_filename
    return filename.startswith("<") and not filename.startswith("<ipython-input-")


def _const_text(const: Any) -> str:
    """A code constant as text that is the same in every process."""
    if isinstance(const, types.CodeType):
        return code_content(const)
    if isinstance(const, frozenset):  # `x in {"a", "b"}`: its order varies by process
        return "frozenset(" + ",".join(sorted(_const_text(c) for c in const)) + ")"
    if isinstance(const, tuple):
        return "(" + ",".join(_const_text(c) for c in const) + ")"
    return repr(const)


_NO_DOC = object()


def code_content(code: types.CodeType, doc: Any = _NO_DOC) -> str:
    """A code object's content, without its file name, line numbers or docstring.

    ``doc``: the function's ``__doc__``; a function's first constant is its docstring,
    or None when it has none (CPython 3.11), and is then left out either way.
    """
    consts = list(code.co_consts)
    if doc is not _NO_DOC and consts and (consts[0] is None or consts[0] == doc):
        consts = consts[1:]
    return sha("\0".join([
        code.co_name, code.co_code.hex(), repr(code.co_names), repr(code.co_varnames),
        repr(code.co_freevars), repr(code.co_cellvars), str(code.co_argcount),
        str(code.co_kwonlyargcount), str(code.co_posonlyargcount), str(code.co_flags),
        ",".join(_const_text(c) for c in consts)]))


def _project_module(module: types.ModuleType, user_module_names: set[str]) -> bool:
    name = getattr(module, "__name__", None)
    return name not in user_module_names and is_project_file(getattr(module, "__file__", None))


class PartHasher:
    """Part hashes of values in one namespace (see the module docstring)."""

    def __init__(self, user_ns: dict[str, Any], user_module_names: set[str]) -> None:
        self.user_ns = user_ns
        self.user_module_names = user_module_names
        self.unhashable: list[str] = []
        self._active: set[int] = set()
        # id -> (value, part): each value is hashed once per hasher. Inside a cycle (f
        # calls g calls f) a part depends on where the walk entered it; a hasher walks
        # one cell's names in one order, so the same cell gets the same parts.
        self._memo: dict[int, tuple[Any, str]] = {}
        # The part of an object a step produced and nothing changed since, when its
        # own state digest is not stable across processes (the notebook layer's).
        self.provenance: Callable[[Any], str | None] | None = None

    def part(self, value: Any, depth: int = 0) -> str:
        key = id(value)
        memo = self._memo.get(key)
        if memo is not None and memo[0] is value:
            return memo[1]
        if isinstance(value, types.ModuleType) and not _project_module(
                value, self.user_module_names):
            return module_part(value)
        if key in self._active or depth > _MAX_DEPTH:
            # A recursive reference (f calls itself, two helpers call each other).
            return sha(f"recursive:{getattr(value, '__qualname__', type(value).__qualname__)}")
        self._active.add(key)
        try:
            result = self._part(value, depth)
        finally:
            self._active.discard(key)
        self._memo[key] = (value, result)
        return result

    def _part(self, value: Any, depth: int) -> str:
        if isinstance(value, types.ModuleType):
            return self.module(value, depth)
        if isinstance(value, types.FunctionType):
            return self.function(value, depth)
        if isinstance(value, type):
            return self.cls(value, depth)
        if isinstance(value, types.MethodType):
            return sha("method:" + self.part(value.__func__, depth + 1)
                       + self.data(value.__self__, depth + 1))
        functools = sys.modules.get("functools")
        if functools is not None and isinstance(value, functools.partial):
            return sha("partial:" + "\n".join([
                self.part(value.func, depth + 1),
                ",".join(self.part(a, depth + 1) for a in value.args),
                ",".join(f"{k}={self.part(v, depth + 1)}"
                         for k, v in sorted(value.keywords.items()))]))
        wrapped = _wrapped(value)
        if wrapped is not None:
            # functools.lru_cache and other wrappers that are not functions: what
            # they wrap, and how (an lru_cache's size).
            extra = ""
            parameters = getattr(value, "cache_parameters", None)
            if callable(parameters):
                extra = repr(sorted(parameters().items()))
            return sha(f"wrapper:{_qualified_name(type(value))}:{extra}:"
                       + self.part(wrapped, depth + 1))
        return self.data(value, depth)

    def code_token(self, obj: Any, depth: int) -> str:
        """A function, class or module met inside a value: its code's part. A bound
        method counts by its function (its object is the value being digested, or
        inside it; descending into it again from every method would not end)."""
        if isinstance(obj, types.MethodType):
            return sha("method:" + self.part(obj.__func__, depth))
        return self.part(obj, depth)

    def qualified(self, obj: Any, kind: str) -> str:
        module_name = getattr(obj, "__module__", None) or "?"
        module = sys.modules.get(module_name)
        version = module_part(module) if module is not None else "?"
        return sha(f"{kind}:{module_name}.{getattr(obj, '__qualname__', '?')}@{version}")

    def module(self, module: types.ModuleType, depth: int) -> str:
        """A project module by the code it runs now: its attributes' parts."""
        pieces = [f"project-module:{module.__name__}"]
        for name, value in sorted(vars(module).items()):
            if name in _MODULE_DUNDERS:
                continue
            pieces.append(f"{name}={self.part(value, depth + 1)}")
        return sha("\n".join(pieces))

    def function(self, fn: types.FunctionType, depth: int) -> str:
        if not is_user_object(fn, self.user_module_names):
            return self.qualified(fn, "function")
        code = fn.__code__
        notebook = fn.__module__ in self.user_module_names
        if _is_generated(code) or self._library_code(fn):
            # Code a library generated (attrs' methods): its text lives in linecache
            # under a made-up name in the kernel that made it, not after a by-value
            # replay (cloudpickle names it "<dynamic-code>"): its content, both times.
            source: str | None = "generated:" + code_content(code)
        elif notebook:
            source = _source_canonical(code)
        else:
            # A project module's function: the code the kernel runs, not the file's
            # text (edited on disk but not reloaded, the file is not what runs).
            source = "compiled:" + code_content(code, fn.__doc__)
        if source is None:
            # No source (defined by exec, or its cell was dropped): its bytecode.
            source = "code:" + code_content(code)
        pieces = [f"function:{fn.__qualname__}", source]
        wrapped = fn.__dict__.get("__wrapped__")
        if wrapped is not None:
            # functools.wraps: the wrapper's own code is above; what it wraps here.
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
        for name, attribute in sorted(fn.__dict__.items()):
            if not name.startswith("__"):
                pieces.append(f"attribute:{name}={self.part(attribute, depth + 1)}")
        scope = fn.__globals__
        names = code_globals(code)
        named = set() if source.startswith("generated:") else code_strings(code) & scope.keys()
        for name in sorted(names | named):
            if name in scope and not is_shell_value(name, scope[name]):
                kind = "global" if name in names else "named"
                pieces.append(f"{kind}:{name}={self.part(scope[name], depth + 1)}")
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
        notebook = cls.__module__ in self.user_module_names
        pieces = [f"class:{cls.__qualname__}"]
        pieces += [f"base:{self.part(base, depth + 1)}" for base in cls.__bases__
                   if base is not object]
        for name, member in sorted(vars(cls).items()):
            if name in _CLASS_SKIP or (name == "__doc__" and not notebook):
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
            digest, classes = input_hash_and_classes(value)
        except NotHashable:
            pass
        except Exception:  # a value's own __eq__/__len__... raising: try its pickle
            pass
        else:
            user = sorted((c for c in classes if is_user_object(c, self.user_module_names)),
                          key=_qualified_name)
            if not user:
                return digest
            # A dataclass or Enum of the notebook: its key holds the class's name, not
            # its methods; a changed method changes what the value does.
            return sha(digest + "\nclasses:" + ",".join(self.part(c, depth + 1) for c in user))
        if callable(value) and hasattr(value, "__qualname__"):
            return self.qualified(value, "callable")
        if self.provenance is not None:
            produced = self.provenance(value)
            if produced is not None:
                return produced
        state = canonical_digest(value, lambda obj: self.code_token(obj, depth + 1))
        if state.digest is not None:
            return "state:" + state.digest
        self.unhashable.append(type(value).__qualname__)
        return f"{UNHASHABLE_PREFIX}{type(value).__module__}.{type(value).__qualname__}"


def _wrapped(value: Any) -> Any:
    """What a wrapper object wraps (``__wrapped__``), if it is not itself a function."""
    try:
        wrapped = getattr(value, "__wrapped__", None)
    except Exception:  # a value's own __getattr__ raising
        return None
    return wrapped if callable(wrapped) and wrapped is not value else None


def _qualified_name(kind: Any) -> str:
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"


def value_part(value: Any, user_ns: dict[str, Any], user_module_names: set[str] | None = None
               ) -> str | None:
    """One value's part hash, or None when it can be hashed by its type only."""
    part = PartHasher(user_ns, user_module_names or {"__main__"}).part(value)
    return None if part.startswith(UNHASHABLE_PREFIX) else part
