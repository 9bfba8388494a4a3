"""The package's shape: its modules import one another without a circle, counting imports inside functions."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

PACKAGE = Path(__file__).resolve().parent.parent / "deepexp"


def module_name(path: Path) -> str:
    """`deepexp/models/cnn.py` -> `deepexp.models.cnn`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Each module under deepexp/ -> the modules of deepexp/ it imports anywhere in its file (at the top, in a
    function, under `if TYPE_CHECKING`), relative imports resolved. `from P import n` counts as importing the
    module P.n where that is a module, else P. The implicit import of a module's parent packages is not an edge:
    every submodule would otherwise close a circle with a package `__init__` that imports it."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in paths)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                origin = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{origin}.{alias.name}"
                    edges.add(target if target in paths else origin)
        graph[name] = {e for e in edges if e in paths and e != name}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One circle of `graph` as a list of modules, first repeated at the end (`a -> b -> a`), or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_import_graph_is_read_from_every_module_with_relative_and_function_level_imports_resolved():
    graph = import_graph()
    assert "deepexp.models.cnn" in graph and "deepexp.commands.report" in graph and "deepexp" in graph
    assert "deepexp.models.activations" in graph["deepexp.models.cnn"]  # from .activations import act_layer
    assert "deepexp.registry" in graph["deepexp.models.activations"]  # from ..registry import Registry
    assert "deepexp.plots" in graph["deepexp.commands.report"]  # from .. import plots
    assert "deepexp.rundir" in graph["deepexp.cli"]  # only inside functions


def test_find_cycle_names_the_circle_of_a_hand_built_graph():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])
