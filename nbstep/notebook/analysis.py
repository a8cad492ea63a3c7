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
    ``class``, ``match`` captures. The base name of a subscript or attribute
    assignment (``df["x"] = 1``, ``cfg.lr = 0.1``) is a read, not a binding: the
    object changes in place, and the tracker records its new state.
    ``except ... as e`` is not a binding (Python deletes ``e`` after the handler);
    ``del x`` is recorded as a deletion.
reads
    Names the cell reads from the namespace before binding them, in order of first
    use. Code inside a ``def``/``lambda`` runs later, when called, so a name such a
    body reads counts only if the cell binds it nowhere at top level. Names used in
    ``$name`` / ``{expr}`` of ``!cmd`` lines and identifiers in ``%magic`` arguments
    count as reads too (a heuristic: magics parse their own arguments).
maybe_bound
    Names the cell binds on some paths only (``if QUICK: N_EPOCHS = 1``, a loop body,
    a ``try`` body): where the branch is not taken the earlier value stays, so they
    count as reads too (:attr:`CellAnalysis.reads`) and are recorded only when the run
    changed them.
immediate
    The reads evaluated when the cell runs (not only inside a ``def``/``lambda``
    body): a name among them that is not defined is recorded as absent, so defining
    it later (``try: u = LIMIT`` / ``except NameError``) is a changed input.
used
    The immediate reads the cell acts on: anything but only storing the object
    (``c = conn``, ``[conn]``, a default ``def f(c=conn)``). An object nbstep cannot
    see into matters only when used (:mod:`.tracking`).
strings
    Identifiers inside the cell's string literals: code reads variables through
    strings too (``df.query("a > @LIMIT")``, ``duckdb.sql("select * from sales")``,
    ``globals()["X"]``). Those that name a notebook variable the cell does not bind
    itself count as reads.
dynamic
    The cell reads the namespace in a way no name shows (``globals()``, ``vars()``,
    ``eval(text)`` of a text that is not a literal): every variable counts as read.
    ``exec("...")`` / ``eval("...")`` of a literal is analysed as code instead.
environ
    The cell reads the process environment (``os.environ``, ``os.getenv``, ``%env``):
    the variables its string literals name count as inputs.
calls
    The dotted names the cell calls (``torch.manual_seed``, ``%matplotlib`` as
    ``%matplotlib``): some change state nbstep cannot record (:mod:`.tracking`).
chains
    The attribute chains the cell uses (``np.random.seed``, ``cfgmod.SCALE``): the
    modules along them are watched for changed attributes (:mod:`.tracking`).
imports
    The dotted module names the cell's import statements name: a replay imports
    them, so ``import xml.dom.minidom`` leaves ``xml.dom.minidom`` usable.
touched
    Names whose method is called (``model.fit(X)``, ``rng.normal()``) or that are the
    base of an assignment (``df["x"] = 1``): their object may change in place though
    the cell never rebinds them.
canonical
    The cell's code as a canonical string: the AST with line numbers, comments and
    whitespace left out and empty fields omitted (so it is stable across Python
    versions that add optional AST fields). Whitespace-only and comment-only edits
    leave it unchanged; any other edit, a docstring or a string literal included,
    changes it.

What static analysis cannot see (``exec``, ``globals()[...] = ...``, ``%store -r``,
a magic that binds a name) is caught at run time by comparing the namespace before
and after, by identity (see :mod:`nbstep.notebook.recording`).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nbstep.hashing.code import canonical

from .scopes import (
    COMPREHENSIONS,
    add_once,
    class_globals,
    comprehension_results,
    def_header,
    root_name,
    scope_globals,
    target_names,
)

# get_ipython() methods whose string arguments name notebook variables at run time.
_MAGIC_CALLS = {"run_line_magic", "run_cell_magic", "system", "getoutput"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_NAME = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_BRACED = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")
# Calls that read the whole namespace, unless their argument is a literal.
_NAMESPACE_CALLS = {"globals", "vars", "locals", "dir"}
_CODE_CALLS = {"eval", "exec"}
_ENVIRON = {"environ", "getenv", "putenv", "unsetenv", "environb"}


@dataclass
class CellAnalysis:
    bound: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)
    maybe_bound: list[str] = field(default_factory=list)
    immediate: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)
    dynamic: bool = False
    environ: bool = False
    calls: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    # Bound only as `with ... as NAME` targets: usually a closed file or a released
    # lock afterwards, worth recording only if it can be persisted.
    soft: list[str] = field(default_factory=list)
    canonical: str = ""


class _TopLevel:
    def __init__(self) -> None:
        self.result = CellAnalysis()
        self.bound_so_far: set[str] = set()
        self.definite: set[str] = set()  # bound on every path so far
        self.deferred: list[str] = []  # names function bodies read (checked at the end)
        self.soft_binding = False
        self.hard: set[str] = set()
        self.soft: list[str] = []
        self.strings: set[str] = set()
        self.storing = False  # evaluating an expression whose value is only stored

    # names
    def read(self, name: str) -> None:
        if name not in self.bound_so_far:
            add_once(self.result.reads, name)
            add_once(self.result.immediate, name)
            if not self.storing:
                add_once(self.result.used, name)

    def stored(self, node: ast.AST | None) -> None:
        """An expression whose value is only stored: names and displays of them."""
        if isinstance(node, (ast.Name, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Starred)):
            storing, self.storing = self.storing, True
            try:
                if isinstance(node, ast.Name):
                    self.expr(node)
                elif isinstance(node, ast.Dict):
                    for part in (*node.keys, *node.values):
                        self.stored(part)
                elif isinstance(node, ast.Starred):
                    self.stored(node.value)
                else:
                    for element in node.elts:
                        self.stored(element)
            finally:
                self.storing = storing
        else:
            self.expr(node)

    def bind(self, name: str) -> None:
        if self.soft_binding:
            add_once(self.soft, name)
        else:
            self.hard.add(name)
        self.bound_so_far.add(name)
        self.definite.add(name)
        add_once(self.result.bound, name)
        if name in self.result.deleted:
            self.result.deleted.remove(name)

    def delete(self, name: str) -> None:
        # Deleting needs the name to exist, not any particular value: not a read.
        if name in self.result.bound:
            self.result.bound.remove(name)
        self.bound_so_far.discard(name)
        self.definite.discard(name)
        add_once(self.result.deleted, name)

    # paths: what every path binds (If, loops, try, match)
    def paths(self, *blocks: list[ast.stmt]) -> set[str]:
        """Walk each block from the current state; the names every one of them binds."""
        start, bound_before = set(self.definite), set(self.bound_so_far)
        common: set[str] | None = None
        bound_after = set(bound_before)
        for block in blocks:
            # A name one block binds is still the earlier value in the others.
            self.definite, self.bound_so_far = set(start), set(bound_before)
            self.statements(block)
            common = set(self.definite) if common is None else common & self.definite
            bound_after |= self.bound_so_far
        self.definite, self.bound_so_far = start, bound_after
        return common if common is not None else start

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
            # `df["x"] = ...`: evaluates df (a read if not bound yet), then changes it
            # in place; the tracker finds the change (:mod:`.tracking`).
            self.expr(target.value)
            if isinstance(target, ast.Subscript):
                self.expr(target.slice)
            root = root_name(target)
            if root is not None:
                add_once(self.result.touched, root)

    # expressions
    def expr(self, node: ast.AST | None) -> None:
        if node is None:
            return
        if self.storing and not isinstance(node, ast.Name):
            self.storing = False  # an operation on it: acting, all the way down
            try:
                self.expr(node)
            finally:
                self.storing = True
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self.read(node.id)
            return
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                self.strings.update(_IDENTIFIER.findall(node.value))
            return
        if isinstance(node, ast.Attribute):
            if node.attr in _ENVIRON:
                self.result.environ = True
            dotted = dotted_name(node)
            if dotted is not None:
                add_once(self.result.chains, dotted)
            self.expr(node.value)
            return
        if isinstance(node, ast.Subscript) and _namespace_lookup(node):
            self.expr(node.slice)  # `globals()["X"]`: X, through the strings
            return
        if isinstance(node, ast.NamedExpr):
            self.expr(node.value)
            self.bind(node.target.id)
            return
        if isinstance(node, ast.Lambda):
            for default in (*node.args.defaults, *node.args.kw_defaults):
                self.expr(default)
            self.deferred.extend(scope_globals(node, frozenset()))
            return
        if isinstance(node, COMPREHENSIONS):
            self.comprehension(node)
            return
        if isinstance(node, ast.Call):
            if self.namespace_call(node):
                return
            self.expr(node.func)
            for arg in node.args:
                self.expr(arg)
            for keyword in node.keywords:
                self.expr(keyword.value)
            if isinstance(node.func, ast.Attribute):
                root = root_name(node.func.value)
                if root is not None:
                    add_once(self.result.touched, root)
            dotted = dotted_name(node.func)
            if dotted is not None:
                add_once(self.result.calls, dotted)
            self.magic_arguments(node)
            return
        for child in ast.iter_child_nodes(node):
            self.expr(child)

    def namespace_call(self, call: ast.Call) -> bool:
        """``globals()``, ``vars()``, ``eval``/``exec``: True when handled here."""
        func = call.func
        if not isinstance(func, ast.Name) or func.id in self.bound_so_far:
            return False
        if func.id in _NAMESPACE_CALLS and not call.args:
            self.result.dynamic = True
            return True
        if func.id in _CODE_CALLS and call.args:
            first = call.args[0]
            for arg in (*call.args[1:], *(k.value for k in call.keywords)):
                self.expr(arg)
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                try:
                    inner = ast.parse(first.value, mode="exec" if func.id == "exec" else "eval")
                except SyntaxError:
                    return True  # it raises when it runs: nothing is recorded
                if isinstance(inner, ast.Expression):
                    self.expr(inner.body)
                else:
                    self.statements(inner.body)
                return True
            self.expr(first)
            self.result.dynamic = True
            return True
        return False

    def comprehension(self, node: ast.AST) -> None:
        generators = node.generators  # type: ignore[attr-defined]
        targets = {n for gen in generators for n in target_names(gen.target)}
        # The first iterable is evaluated here; the rest inside the comprehension's scope.
        self.expr(generators[0].iter)
        saved = set(self.bound_so_far)
        self.bound_so_far |= targets
        for i, gen in enumerate(generators):
            if i:
                self.expr(gen.iter)
            for cond in gen.ifs:
                self.expr(cond)
        for part in comprehension_results(node):
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
            if strings:
                add_once(self.result.calls, "%" + strings[0])
                if strings[0] == "env":
                    self.result.environ = True
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
        handler = self._STATEMENTS.get(type(node).__name__)
        if handler is not None:
            handler(self, node)
            return
        if isinstance(node, (ast.Global, ast.Nonlocal, ast.Pass, ast.Break, ast.Continue)):
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.statement(child)
            else:
                self.expr(child)

    def definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for decorator in node.decorator_list:
            self.expr(decorator)
        for part in def_header(node):
            (self.expr if isinstance(node, ast.ClassDef) else self.stored)(part)
        if isinstance(node, ast.ClassDef):
            # A class body runs now; the bodies of its methods run later.
            immediate, deferred = class_globals(node)
            for name in immediate:
                self.read(name)
            self.deferred.extend(deferred)
        else:
            self.deferred.extend(sorted(scope_globals(node, frozenset())))
        self.bind(node.name)

    def assign(self, node: ast.Assign) -> None:
        self.stored(node.value)
        for target in node.targets:
            self.store(target)

    def augmented(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.read(node.target.id)
        self.expr(node.value)
        self.store(node.target)

    def annotated(self, node: ast.AnnAssign) -> None:
        self.expr(node.annotation)
        if node.value is not None:
            self.expr(node.value)
            self.store(node.target)

    def loop(self, node: ast.For | ast.AsyncFor) -> None:
        self.expr(node.iter)
        start = set(self.definite)
        self.store(node.target)
        self.statements(node.body)
        self.statements(node.orelse)
        self.definite = start  # the body may not run at all

    def with_block(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.expr(item.context_expr)
            if item.optional_vars is not None:
                self.soft_binding = True
                try:
                    self.store(item.optional_vars)
                finally:
                    self.soft_binding = False
        self.statements(node.body)

    def imports(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add_once(self.result.imports, alias.name)
        elif node.module and not node.level:
            add_once(self.result.imports, node.module)
            for alias in node.names:
                if alias.name != "*":  # maybe a submodule (`from xml.dom import minidom`)
                    add_once(self.result.imports, f"{node.module}.{alias.name}")
        for alias in node.names:
            if alias.name != "*":
                self.bind((alias.asname or alias.name).split(".")[0])

    def deletion(self, node: ast.Delete) -> None:
        for target in node.targets:
            for name in target_names(target):
                self.delete(name)
            if isinstance(target, (ast.Subscript, ast.Attribute)):
                self.store(target)

    def try_block(self, node: Any) -> None:  # ast.Try, and ast.TryStar (3.11+)
        for handler in node.handlers:
            if handler.type is not None:
                self.expr(handler.type)
        # The body runs to its end (then `else`) or an `except` takes over midway.
        blocks = [[*node.body, *node.orelse], *(h.body for h in node.handlers)]
        self.definite = self.paths(*blocks)
        self.statements(node.finalbody)

    def match(self, node: ast.Match) -> None:
        self.expr(node.subject)
        start = set(self.definite)
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
        self.definite = start  # no case may match

    def branch(self, node: ast.If | ast.While) -> None:
        self.expr(node.test)
        if isinstance(node, ast.If):
            self.definite = self.paths(node.body, node.orelse)
            return
        start = set(self.definite)
        self.statements(node.body)
        self.statements(node.orelse)
        self.definite = start  # the body may not run at all

    # Statement kind (by class name) -> the method that walks it.
    _STATEMENTS: ClassVar[dict[str, Callable[[Any, Any], None]]] = {
        "FunctionDef": definition, "AsyncFunctionDef": definition, "ClassDef": definition,
        "Assign": assign, "AugAssign": augmented, "AnnAssign": annotated,
        "For": loop, "AsyncFor": loop, "With": with_block, "AsyncWith": with_block,
        "Import": imports, "ImportFrom": imports, "Delete": deletion,
        "Try": try_block, "TryStar": try_block, "Match": match, "If": branch, "While": branch,
    }

    def finish(self) -> CellAnalysis:
        result = self.result
        result.soft = [name for name in self.soft if name not in self.hard]
        bound_anywhere = set(result.bound) | set(result.deleted)
        for name in self.deferred:
            if name not in bound_anywhere:
                add_once(result.reads, name)
        # Bound on some paths only: the earlier value may stay, so it is read too.
        result.maybe_bound = [name for name in result.bound if name not in self.definite]
        for name in result.maybe_bound:
            add_once(result.reads, name)
        # A name the cell binds itself is its own value there (`with open("runs.log")
        # as log`), not the notebook's: only the others count.
        result.strings = sorted(self.strings - set(result.reads) - bound_anywhere)
        return result


def dotted_name(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _namespace_lookup(node: ast.Subscript) -> bool:
    """``globals()["X"]`` / ``vars()["X"]``: a literal lookup in the namespace."""
    call = node.value
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id in _NAMESPACE_CALLS and not call.args
            and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str))


def parse(source: str, filename: str = "<cell>") -> ast.Module:
    """Parse transformed cell source; top-level ``await`` is allowed as in IPython."""
    return ast.parse(source, filename=filename)


def analyze(tree: ast.Module) -> CellAnalysis:
    walker = _TopLevel()
    walker.statements(tree.body)
    result = walker.finish()
    result.canonical = canonical(tree)
    return result


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
