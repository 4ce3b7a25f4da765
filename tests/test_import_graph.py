"""The package `apex_jax` has no import cycle.

Every module of `apex_jax/` is parsed with `ast`; each `import apex_jax.x` / `from apex_jax.x
import y` (at module level or inside a function) is an edge to the submodule `apex_jax.x.y` when
`y` is one, else to module `apex_jax.x`; importing a package is an edge to its `__init__`
(`apex_jax.x.__init__`). The implicit import of the parent packages that Python performs first
is not an edge: every module would otherwise close a cycle with a package `__init__` that
re-exports it.
A cycle in this graph is an import circle, whether or not a function-local import hides it at
run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "apex_jax"

def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (`pkg.__init__` for packages)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts)] = path
    return out


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The graph node of an imported dotted name: the module itself or its package's __init__."""
    if name in modules:
        return name
    if f"{name}.__init__" in modules:
        return f"{name}.__init__"
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `module` imports, anywhere in its file."""
    package = module.rsplit(".", 1)[0]  # the package a relative import starts from
    edges: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    t = _target(alias.name, modules)
                    if t:
                        edges.add(t)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if not (name == PACKAGE or name.startswith(PACKAGE + ".")):
                continue
            for alias in node.names:
                # a submodule `y` of `from x import y`: an edge to it; any other name: to `x`
                t = _target(f"{name}.{alias.name}", modules) or _target(name, modules)
                if t:
                    edges.add(t)
    edges.discard(module)
    return edges


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each as a
    path `a -> b -> ... -> a` through the component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(c)) for c in components]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A concrete cycle inside a strongly connected component: breadth-first from its first
    module back to itself."""
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def test_graph_sees_the_package():
    graph = import_graph()
    assert "apex_jax.models.model" in graph and "apex_jax.__init__" in graph
    assert "apex_jax.models.__init__" in graph["apex_jax.__init__"]


def test_no_import_cycle():
    graph = import_graph()
    cycles = find_cycles(graph)
    for c in cycles:
        print("import cycle:", " -> ".join(c))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_reports_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_edges_name_modules_and_package_inits():
    modules = module_files()
    edges = imports_of("apex_jax.__init__", modules["apex_jax.__init__"], modules)
    assert "apex_jax.models.__init__" in edges  # `from apex_jax.models import Model`: the package
    edges = imports_of("apex_jax.models.__init__", modules["apex_jax.models.__init__"], modules)
    assert "apex_jax.models.model" in edges  # `from apex_jax.models.model import Model`


def test_the_package_imports_itself_at_module_level_only():
    """No function-local import of apex_jax hides a dependency anywhere in the package (function-
    local imports are for optional or heavy third-party packages only)."""
    local = []
    for module, path in module_files().items():
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                         else ["."] if isinstance(node, ast.ImportFrom) else [])
                if any(n == PACKAGE or n.startswith(PACKAGE + ".") or n == "." for n in names):
                    local.append(f"{module}.{fn.name}: {ast.unparse(node)}")
    assert not local, local
