"""Imports among syncpool's own modules point one way: no cycle, and nothing above the pool imports it back.

The graph is read from the source with ``ast``, so it holds every import: at module level, under
``if TYPE_CHECKING:`` and inside functions (a lazy import still ties two modules together).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "syncpool"

# Modules above the pool: the pool offers them as methods (map, run, transaction), so they must not import it.
ABOVE_THE_POOL = ("syncpool.batch", "syncpool.retry", "syncpool.transactions")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path | None]:
    """Every syncpool module, with its source; None for a compiled one (known by its stub), whose imports are C."""
    found: dict[str, Path | None] = {_module_name(path): None for path in PACKAGE.rglob("*.pyi")}
    found.update((_module_name(path), path) for path in PACKAGE.rglob("*.py"))
    return found


def _imports(name: str, path: Path, modules: dict[str, Path | None]) -> set[str]:
    """The syncpool modules that ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # ".x" from syncpool.a.b is syncpool.a.x; from the package syncpool.a it is syncpool.a.x too.
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # "from package import submodule" imports the submodule; "from module import name" the module.
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # "import syncpool.a.b" runs syncpool.a.b; the longest syncpool module named by the target is the one.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) if path else set() for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph.get(node, ())):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for neighbour in graph.get(todo.pop(), ()):
            if neighbour not in seen:
                seen.add(neighbour)
                todo.append(neighbour)
    return seen


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = _graph()
    assert "syncpool.pool" in graph["syncpool"]  # "from .pool import Pool" in the package
    assert "syncpool.connector" in graph["syncpool.connectors.postgres"]  # absolute "from syncpool.connector ..."
    assert "syncpool.errors" in graph["syncpool.postgres"]  # "from syncpool import errors": a submodule
    assert "syncpool.testing" in graph["syncpool.demo"]  # inside a function
    assert "syncpool.protocols" in graph["syncpool.batch"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", ABOVE_THE_POOL)
def test_modules_above_the_pool_never_import_it(module: str) -> None:
    graph = _graph()
    assert "syncpool.pool" not in _reachable(graph, module), sorted(_reachable(graph, module))


def test_no_import_cycle_among_syncpool_modules() -> None:
    assert _cycles(_graph()) == []
