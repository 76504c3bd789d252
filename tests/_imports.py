"""The import graph of ``src/farslip``, read from the source with ``ast`` (nothing is imported).

Every ``import`` / ``from ... import`` statement counts, at module level or inside a function,
except those under ``if TYPE_CHECKING:``. Relative imports are resolved against the module's
package; ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of the package,
else to ``pkg`` itself. Only edges between farslip modules are kept; a package's ``__init__`` is
the module named by the package. Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and
``a.b``; those implicit edges are not counted (a package whose ``__init__`` re-exports its own
submodules would otherwise be a cycle by construction), as import-graph tools do.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "farslip"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every .py file of the package."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every Import / ImportFrom under ``node``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes_of(other)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _import_nodes(node)


def _base(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    """The absolute module a ``from`` statement names (``level`` dots, then ``name``)."""
    if level == 0:
        return name or ""
    parts = module.split(".")
    package = parts if is_package else parts[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join(package + ([name] if name else []))


def imports_of(module: str, path: Path, modules: set[str]) -> dict[str, int]:
    """``{imported farslip module: line of the first such import}`` of one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in modules:  # `import farslip.x.y.Name`-style or an attribute path
            target = target.rpartition(".")[0]
        if target and target != module:
            found.setdefault(target, line)
        elif target == module:
            found.setdefault(target, line)  # a module importing itself is a cycle too

    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "farslip":
                    add(alias.name, node.lineno)
        else:
            base = _base(module, is_package, node.level, node.module)
            if base.split(".")[0] != "farslip":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base, node.lineno)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` over every farslip module."""
    files = module_files(package)
    names = set(files)
    return {name: imports_of(name, path, names) for name, path in files.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[tuple[list[str], list[str]]]:
    """``(members, cycle)`` per strongly connected component that holds a cycle: its modules, and
    one shortest cycle through the first of them (a list of modules, first == last)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's algorithm (recursive: the package is a few levels deep)
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, {})):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    found = []
    for component in components:
        members = set(component)
        start = component[0]
        if len(component) == 1 and start not in graph.get(start, {}):
            continue
        # a shortest path back to the start inside the component, by breadth-first search
        previous: dict[str, str] = {}
        frontier = [start]
        seen = {start}
        end = None
        while frontier and end is None:
            nxt = []
            for node in frontier:
                for succ in sorted(graph[node]):
                    if succ == start:
                        end = node
                        break
                    if succ in members and succ not in seen:
                        seen.add(succ)
                        previous[succ] = node
                        nxt.append(succ)
                if end is not None:
                    break
            frontier = nxt
        path = [end]
        while path[-1] != start:
            path.append(previous[path[-1]])
        found.append((component, [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, start]))
    return found


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """``a (a.py:12) -> b (b.py:3) -> a``: each hop with the line of its import."""
    files = module_files()
    hops = []
    for here, there in zip(cycle, cycle[1:]):
        rel = files[here].relative_to(ROOT)
        hops.append(f"{here} ({rel}:{graph[here][there]})")
    return " -> ".join(hops + [cycle[-1]])
