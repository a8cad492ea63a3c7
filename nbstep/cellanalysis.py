"""Static analysis of a ``%%step`` cell: what it binds, what it reads, its canonical code.

The cell is analysed *after* IPython's transformation (``%magic`` and ``!cmd`` lines
become ``get_ipython().run_line_magic(...)`` / ``.system(...)`` calls), as Python
source, in execution order.

What counts (the recipe of the deterministic input and of the replayed variables)
-------------------------------------------------------------------------------
bound
    Names the cell binds at the notebook's top level: assignments of every form
    (``=``, ``+=``, annotated with a value, tuple/list/starred targets, walrus, also
    inside comprehensions), ``for`` and ``with`` targets, imports, ``def`` and
    ``class``, ``match`` captures, and the *base name* of a subscript or attribute
    assignment or deletion (``df["x"] = 1`` and ``cfg.lr = 0.1`` bind ``df`` and
    ``cfg``: the object changed in place, so its new state must be replayed).
    ``except ... as e`` is not a binding (Python deletes ``e`` after the handler);
    ``del x`` is recorded as a deletion.
reads
    Names the cell reads from the namespace before binding them, in order of first
    use. Code inside a ``def``/``lambda`` runs later, when called, so a name such a
    body reads counts only if the cell binds it nowhere at top level. Names used in
    ``$name`` / ``{expr}`` of ``!cmd`` lines and identifiers in ``%magic`` arguments
    count as reads too (a heuristic: magics parse their own arguments).
touched
    Names whose method is called (``model.fit(X)``, ``rng.normal()``): their object
    may change in place though the cell never rebinds them.
canonical
    The cell's code as a canonical string: the AST with line numbers, comments and
    whitespace left out and empty fields omitted (so it is stable across Python
    versions that add optional AST fields). Whitespace-only and comment-only edits
    leave it unchanged; any other edit, a docstring or a string literal included,
    changes it.

What static analysis cannot see (``exec``, ``globals()[...] = ...``, ``%store -r``,
a magic that binds a name) is caught at run time by comparing the namespace before
and after, by identity (see :mod:`nbstep.cellstep`).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field

_FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
# get_ipython() methods whose string arguments name notebook variables at run time.
_MAGIC_CALLS = {"run_line_magic", "run_cell_magic", "system", "getoutput"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_NAME = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_BRACED = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")


@dataclass
class CellAnalysis:
    bound: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)
    # Bound only as `with ... as NAME` targets: usually a closed file or a released
    # lock afterwards, worth recording only if it can be persisted.
    soft: list[str] = field(default_factory=list)
    canonical: str = ""


def _add(ordered: list[str], name: str) -> None:
    if name not in ordered:
        ordered.append(name)


def _target_names(target: ast.AST) -> list[str]:
    """Plain names a binding target binds (not subscript/attribute bases)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _target_names(elt)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def _root_name(node: ast.AST) -> str | None:
    """``a`` for ``a``, ``a.b.c``, ``a[1].b``, ``a.b()[0]``..., else None."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return None


# -- nested scopes ---------------------------------------------------------------


def _local_names(body: list[ast.stmt], params: ast.arguments | None) -> tuple[set[str], set[str]]:
    """Names local to a function scope, and the names it declares ``global``."""
    local: set[str] = set()
    declared_global: set[str] = set()
    declared_nonlocal: set[str] = set()
    if params is not None:
        for arg in (*params.posonlyargs, *params.args, *params.kwonlyargs):
            local.add(arg.arg)
        if params.vararg:
            local.add(params.vararg.arg)
        if params.kwarg:
            local.add(params.kwarg.arg)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Global):
            declared_global.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            declared_nonlocal.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            local.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            local.add(node.name)
            for child in (*node.decorator_list, *_def_header(node)):
                visit(child)
            return  # its body is another scope
        elif isinstance(node, ast.Lambda):
            for child in (*node.args.defaults, *node.args.kw_defaults):
                if child is not None:
                    visit(child)
            return
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    local.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            local.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            local.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            local.add(node.rest)
        elif isinstance(node, _COMPREHENSIONS):
            # Only walrus targets escape a comprehension; the rest is its own scope.
            for sub in ast.walk(node):
                if isinstance(sub, ast.NamedExpr):
                    local.add(sub.target.id)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    for statement in body:
        visit(statement)
    return local - declared_global - declared_nonlocal, declared_global


def _def_header(node: ast.AST) -> list[ast.AST]:
    """The parts of a def/class evaluated where it is defined (not its body)."""
    parts: list[ast.AST] = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        parts += [d for d in (*args.defaults, *args.kw_defaults) if d is not None]
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None and arg.annotation is not None:
                parts.append(arg.annotation)
        if node.returns is not None:
            parts.append(node.returns)
    elif isinstance(node, ast.ClassDef):
        parts += [*node.bases, *(k.value for k in node.keywords)]
    return parts


def _scope_globals(node: ast.AST, enclosing: frozenset[str]) -> set[str]:
    """Module-level names a function/lambda/class body (and what it nests) refers to."""
    found: set[str] = set()
    if isinstance(node, ast.Lambda):
        local, _ = _local_names([ast.Expr(node.body)], node.args)
        body: list[ast.AST] = [node.body]
        closure = enclosing | local
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        local, _ = _local_names(node.body, node.args)
        body = list(node.body)
        closure = enclosing | local
    else:  # ClassDef: its names are not visible to the methods it holds
        assert isinstance(node, ast.ClassDef)
        local, _ = _local_names(node.body, None)
        body = list(node.body)
        closure = enclosing

    def visit(sub: ast.AST, visible: frozenset[str]) -> None:
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            if sub.id not in visible:
                found.add(sub.id)
            return
        if isinstance(sub, (*_FUNCTION_NODES, ast.ClassDef)):
            if not isinstance(sub, ast.Lambda):
                for part in sub.decorator_list:
                    visit(part, visible)
            header = _def_header(sub) if not isinstance(sub, ast.Lambda) else [
                d for d in (*sub.args.defaults, *sub.args.kw_defaults) if d is not None]
            for part in header:
                visit(part, visible)
            found.update(_scope_globals(sub, closure))
            return
        if isinstance(sub, _COMPREHENSIONS):
            targets = {n for gen in sub.generators for n in _target_names(gen.target)}
            inner = visible | targets
            for i, gen in enumerate(sub.generators):
                visit(gen.iter, visible if i == 0 else inner)
                for cond in gen.ifs:
                    visit(cond, inner)
            for part in _comprehension_results(sub):
                visit(part, inner)
            return
        for child in ast.iter_child_nodes(sub):
            visit(child, visible)

    scope_visible = frozenset(enclosing | local)
    for statement in body:
        visit(statement, scope_visible)
    return found


def _class_globals(node: ast.ClassDef) -> tuple[list[str], list[str]]:
    """Names a class body reads when it runs, and names its methods read later."""
    local, _ = _local_names(node.body, None)
    immediate: list[str] = []
    deferred: list[str] = []

    def visit(sub: ast.AST) -> None:
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            if sub.id not in local:
                _add(immediate, sub.id)
            return
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            defaults = sub.args.defaults + [d for d in sub.args.kw_defaults if d is not None]
            for part in (*getattr(sub, "decorator_list", []), *defaults):
                visit(part)
            deferred.extend(sorted(_scope_globals(sub, frozenset())))
            return
        if isinstance(sub, ast.ClassDef):
            for part in (*sub.decorator_list, *_def_header(sub)):
                visit(part)
            inner_immediate, inner_deferred = _class_globals(sub)
            for name in inner_immediate:
                _add(immediate, name)
            deferred.extend(inner_deferred)
            return
        for child in ast.iter_child_nodes(sub):
            visit(child)

    for statement in node.body:
        visit(statement)
    return immediate, deferred


def _comprehension_results(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.DictComp):
        return [node.key, node.value]
    return [node.elt]  # type: ignore[attr-defined]


# -- the top level, in execution order ----------------------------------------------


class _TopLevel:
    def __init__(self) -> None:
        self.result = CellAnalysis()
        self.bound_so_far: set[str] = set()
        self.deferred: list[str] = []  # names function bodies read (checked at the end)
        self.soft_binding = False
        self.hard: set[str] = set()
        self.soft: list[str] = []

    # names
    def read(self, name: str) -> None:
        if name not in self.bound_so_far:
            _add(self.result.reads, name)

    def bind(self, name: str) -> None:
        if self.soft_binding:
            _add(self.soft, name)
        else:
            self.hard.add(name)
        self.bound_so_far.add(name)
        _add(self.result.bound, name)
        if name in self.result.deleted:
            self.result.deleted.remove(name)

    def delete(self, name: str) -> None:
        # Deleting needs the name to exist, not any particular value: not a read.
        if name in self.result.bound:
            self.result.bound.remove(name)
        self.bound_so_far.discard(name)
        _add(self.result.deleted, name)

    # targets
    def store(self, target: ast.AST) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self.store(elt)
        elif isinstance(target, ast.Starred):
            self.store(target.value)
        elif isinstance(target, (ast.Subscript, ast.Attribute)):
            # `df["x"] = ...`: evaluates df (a read if not bound yet), then changes it.
            self.expr(target.value)
            if isinstance(target, ast.Subscript):
                self.expr(target.slice)
            root = _root_name(target)
            if root is not None:
                self.bind(root)

    # expressions
    def expr(self, node: ast.AST | None) -> None:
        if node is None:
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self.read(node.id)
            return
        if isinstance(node, ast.NamedExpr):
            self.expr(node.value)
            self.bind(node.target.id)
            return
        if isinstance(node, ast.Lambda):
            for default in (*node.args.defaults, *node.args.kw_defaults):
                self.expr(default)
            self.deferred.extend(_scope_globals(node, frozenset()))
            return
        if isinstance(node, _COMPREHENSIONS):
            self.comprehension(node)
            return
        if isinstance(node, ast.Call):
            self.expr(node.func)
            for arg in node.args:
                self.expr(arg)
            for keyword in node.keywords:
                self.expr(keyword.value)
            if isinstance(node.func, ast.Attribute):
                root = _root_name(node.func.value)
                if root is not None:
                    _add(self.result.touched, root)
            self.magic_arguments(node)
            return
        for child in ast.iter_child_nodes(node):
            self.expr(child)

    def comprehension(self, node: ast.AST) -> None:
        generators = node.generators  # type: ignore[attr-defined]
        targets = {n for gen in generators for n in _target_names(gen.target)}
        # The first iterable is evaluated here; the rest inside the comprehension's scope.
        self.expr(generators[0].iter)
        saved = set(self.bound_so_far)
        self.bound_so_far |= targets
        for i, gen in enumerate(generators):
            if i:
                self.expr(gen.iter)
            for cond in gen.ifs:
                self.expr(cond)
        for part in _comprehension_results(node):
            self.expr(part)
        walrus = {sub.target.id for sub in ast.walk(node) if isinstance(sub, ast.NamedExpr)}
        self.bound_so_far = saved | walrus

    def magic_arguments(self, call: ast.Call) -> None:
        """Names a magic or shell command will expand or evaluate at run time."""
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr in _MAGIC_CALLS):
            return
        owner = func.value
        if not (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name)
                and owner.func.id == "get_ipython"):
            return
        strings = [a.value for a in call.args if isinstance(a, ast.Constant)
                   and isinstance(a.value, str)]
        if func.attr in ("run_line_magic", "run_cell_magic"):
            strings = strings[1:]  # the first is the magic's name
        for text in strings:
            for name in _DOLLAR_NAME.findall(text):
                self.read(name)
            for inner in _BRACED.findall(text):
                try:
                    tree = ast.parse(inner.strip(), mode="eval")
                except SyntaxError:
                    continue
                self.expr(tree.body)
            if func.attr != "system" and func.attr != "getoutput":
                for name in _IDENTIFIER.findall(text):
                    self.read(name)

    # statements
    def statements(self, body: list[ast.stmt]) -> None:
        for statement in body:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:
                self.expr(decorator)
            for part in _def_header(node):
                self.expr(part)
            if isinstance(node, ast.ClassDef):
                # A class body runs now; the bodies of its methods run later.
                immediate, deferred = _class_globals(node)
                for name in immediate:
                    self.read(name)
                self.deferred.extend(deferred)
            else:
                self.deferred.extend(sorted(_scope_globals(node, frozenset())))
            self.bind(node.name)
            return
        if isinstance(node, ast.Assign):
            self.expr(node.value)
            for target in node.targets:
                self.store(target)
            return
        if isinstance(node, ast.AugAssign):
            if isinstance(node.target, ast.Name):
                self.read(node.target.id)
            self.expr(node.value)
            self.store(node.target)
            return
        if isinstance(node, ast.AnnAssign):
            self.expr(node.annotation)
            if node.value is not None:
                self.expr(node.value)
                self.store(node.target)
            return
        if isinstance(node, (ast.For, ast.AsyncFor)):
            self.expr(node.iter)
            self.store(node.target)
            self.statements(node.body)
            self.statements(node.orelse)
            return
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self.soft_binding = True
                    try:
                        self.store(item.optional_vars)
                    finally:
                        self.soft_binding = False
            self.statements(node.body)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    self.bind((alias.asname or alias.name).split(".")[0])
            return
        if isinstance(node, ast.Delete):
            for target in node.targets:
                for name in _target_names(target):
                    self.delete(name)
                if isinstance(target, (ast.Subscript, ast.Attribute)):
                    self.store(target)
            return
        if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            self.statements(node.body)  # type: ignore[attr-defined]
            for handler in node.handlers:  # type: ignore[attr-defined]
                self.expr(handler.type)
                self.statements(handler.body)
            self.statements(node.orelse)  # type: ignore[attr-defined]
            self.statements(node.finalbody)  # type: ignore[attr-defined]
            return
        if isinstance(node, ast.Match):
            self.expr(node.subject)
            for case in node.cases:
                for sub in ast.walk(case.pattern):
                    if isinstance(sub, (ast.MatchValue, ast.MatchClass)):
                        self.expr(sub.value if isinstance(sub, ast.MatchValue) else sub.cls)
                    elif isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name:
                        self.bind(sub.name)
                    elif isinstance(sub, ast.MatchMapping):
                        for key in sub.keys:
                            self.expr(key)
                        if sub.rest:
                            self.bind(sub.rest)
                self.expr(case.guard)
                self.statements(case.body)
            return
        if isinstance(node, (ast.If, ast.While)):
            self.expr(node.test)
            self.statements(node.body)
            self.statements(node.orelse)
            return
        if isinstance(node, (ast.Global, ast.Nonlocal, ast.Pass, ast.Break, ast.Continue)):
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.statement(child)
            else:
                self.expr(child)

    def finish(self) -> CellAnalysis:
        self.result.soft = [name for name in self.soft if name not in self.hard]
        bound_anywhere = set(self.result.bound) | set(self.result.deleted)
        for name in self.deferred:
            if name not in bound_anywhere:
                _add(self.result.reads, name)
        return self.result


def parse(source: str, filename: str = "<cell>") -> ast.Module:
    """Parse transformed cell source; top-level ``await`` is allowed as in IPython."""
    return ast.parse(source, filename=filename)


def analyze(tree: ast.Module) -> CellAnalysis:
    walker = _TopLevel()
    walker.statements(tree.body)
    result = walker.finish()
    result.canonical = canonical(tree)
    return result


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


def ends_with_semicolon(source: str) -> bool:
    """True when the cell's last token is ``;`` (IPython then shows no result)."""
    last = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                  tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT):
                last = token
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"
