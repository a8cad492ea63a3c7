"""Which names code reads from the notebook, scope by scope (for :mod:`.analysis`).

A ``def``, ``lambda`` or ``class`` body is a scope of its own: the names it binds are
its locals, ``global`` declarations send names back to the notebook, a class body's
names are not visible to its methods, and a comprehension's targets stay inside it.
What is left of the names a body loads are the notebook names it reads when it runs.
"""

from __future__ import annotations

import ast

FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def add_once(ordered: list[str], name: str) -> None:
    if name not in ordered:
        ordered.append(name)


def target_names(target: ast.AST) -> list[str]:
    """Plain names a binding target binds (not subscript/attribute bases)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in target_names(elt)]
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    return []


def root_name(node: ast.AST) -> str | None:
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
            for child in (*node.decorator_list, *def_header(node)):
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
        elif isinstance(node, COMPREHENSIONS):
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


def def_header(node: ast.AST) -> list[ast.AST]:
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


def scope_globals(node: ast.AST, enclosing: frozenset[str]) -> set[str]:
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
        if isinstance(sub, (*FUNCTION_NODES, ast.ClassDef)):
            if not isinstance(sub, ast.Lambda):
                for part in sub.decorator_list:
                    visit(part, visible)
            header = def_header(sub) if not isinstance(sub, ast.Lambda) else [
                d for d in (*sub.args.defaults, *sub.args.kw_defaults) if d is not None]
            for part in header:
                visit(part, visible)
            found.update(scope_globals(sub, closure))
            return
        if isinstance(sub, COMPREHENSIONS):
            targets = {n for gen in sub.generators for n in target_names(gen.target)}
            inner = visible | targets
            for i, gen in enumerate(sub.generators):
                visit(gen.iter, visible if i == 0 else inner)
                for cond in gen.ifs:
                    visit(cond, inner)
            for part in comprehension_results(sub):
                visit(part, inner)
            return
        for child in ast.iter_child_nodes(sub):
            visit(child, visible)

    scope_visible = frozenset(enclosing | local)
    for statement in body:
        visit(statement, scope_visible)
    return found


def class_globals(node: ast.ClassDef) -> tuple[list[str], list[str]]:
    """Names a class body reads when it runs, and names its methods read later."""
    local, _ = _local_names(node.body, None)
    immediate: list[str] = []
    deferred: list[str] = []

    def visit(sub: ast.AST) -> None:
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            if sub.id not in local:
                add_once(immediate, sub.id)
            return
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            defaults = sub.args.defaults + [d for d in sub.args.kw_defaults if d is not None]
            for part in (*getattr(sub, "decorator_list", []), *defaults):
                visit(part)
            deferred.extend(sorted(scope_globals(sub, frozenset())))
            return
        if isinstance(sub, ast.ClassDef):
            for part in (*sub.decorator_list, *def_header(sub)):
                visit(part)
            inner_immediate, inner_deferred = class_globals(sub)
            for name in inner_immediate:
                add_once(immediate, name)
            deferred.extend(inner_deferred)
            return
        for child in ast.iter_child_nodes(sub):
            visit(child)

    for statement in node.body:
        visit(statement)
    return immediate, deferred


def comprehension_results(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.DictComp):
        return [node.key, node.value]
    return [node.elt]  # type: ignore[attr-defined]
