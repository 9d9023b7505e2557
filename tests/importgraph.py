"""The import graph of the appliance package, read from the source (no import runs).

An edge a -> b means module a imports module b anywhere in its body (a function-level import
is still a dependency); imports under `if TYPE_CHECKING:` are not, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from appliance.paths import REPO

PACKAGE = "appliance"


def module_names(root: Path = REPO) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its __init__)."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, current: str) -> set[str]:
    """Every dotted name an import statement in `tree` can refer to (module or attribute)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = current.split(".")[: -node.level] if node.level else []
                base = ".".join([*pkg, base] if base else pkg)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph(root: Path = REPO) -> dict[str, set[str]]:
    """module -> the package's modules it imports (names that are not modules are dropped)."""
    modules = module_names(root)
    edges = {}
    for name, path in modules.items():
        current = name if path.name != "__init__.py" else f"{name}.__init__"
        found = imported_names(ast.parse(path.read_text(encoding="utf-8")), current)
        edges[name] = {n for n in found if n in modules and n != name
                       and not name.startswith(n + ".")}  # a parent package is no edge
    return edges


def foreign_imports(root: Path = REPO, banned: str = "tests") -> dict[str, set[str]]:
    """Modules of the package that import from `banned` (the test suite)."""
    result = {}
    for name, path in module_names(root).items():
        found = imported_names(ast.parse(path.read_text(encoding="utf-8")), name)
        bad = {n for n in found if n == banned or n.startswith(banned + ".")}
        if bad:
            result[name] = bad
    return result


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def depth(edges: dict[str, set[str]]) -> int:
    """The longest import chain (in edges) of an acyclic graph."""
    memo: dict[str, int] = {}

    def longest(v: str) -> int:
        if v not in memo:
            memo[v] = 0
            memo[v] = max((1 + longest(w) for w in edges.get(v, ())), default=0)
        return memo[v]

    return max((longest(v) for v in edges), default=0)
