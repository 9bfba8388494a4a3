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
                return path[path.index(nxt) :] + [nxt]
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


def section(text: str, title: str) -> str:
    """The text of the markdown section `title` (any level) up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == title and line.startswith("#"))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines)
    )
    return "\n".join(lines[start + 1 : end])


def test_docs_formats_documents_every_key_a_real_run_writes_into_metrics_json(tmp_path):
    """docs/formats.md names every key of a tiny real run's metrics.json: the top-level keys (one table row each),
    and those of a history row, of `data` and of `provenance` in their sections; grad_clip and on_nan=skip_batch
    bring in the history keys that only those settings write."""
    import json

    from conftest import run_cli

    out = run_cli(
        [
            "train",
            "debug=fast",
            "dataset=synthetic",
            "dataset.train_size=64",
            "dataset.test_size=16",
            "model.depth=1",
            "model.width=8",
            "monitor.figure=false",
            "grad_clip=1.0",
            "on_nan=skip_batch",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    docs = (PACKAGE.parent / "docs" / "formats.md").read_text()
    top = section(docs, "Top-level keys")
    assert [k for k in metrics if f"| `{k}` |" not in top] == []
    history = section(docs, "History rows")
    assert [k for k in metrics["history"][-1] if f"`{k}`" not in history] == []
    assert [k for k in metrics["history"][-1]["layers"] if f"`{k}`" not in history] == []
    assert [k for k in metrics["data"] if f"`{k}`" not in top] == []
    assert [k for k in metrics["provenance"] if f"`{k}`" not in section(docs, "Provenance")] == []
    assert f"`{metrics['status']}`" in section(docs, "Statuses")


def test_no_file_cites_a_document_the_repository_does_not_have():
    """Every `docs/*.md` or top-level `*.md` that the package, configs, scripts or tests name exists."""
    import re

    root = PACKAGE.parent
    files = [
        p
        for folder in ("deepexp", "configs", "scripts", "tests")
        if (root / folder).is_dir()
        for p in (root / folder).rglob("*")
        if p.suffix in (".py", ".yaml", ".md")
    ]
    cited = {
        (p.relative_to(root).as_posix(), name)
        for p in files
        for name in re.findall(r"\b((?:docs/)?[A-Z][A-Za-z_]*\.md|docs/\w+\.md)\b", p.read_text())
    }
    assert [(where, name) for where, name in sorted(cited) if not (root / name).exists()] == []


def test_the_readme_layout_gives_every_module_of_the_package_its_own_line():
    root = PACKAGE.parent
    readme = (root / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = {line.split()[0] for line in block.splitlines() if line.strip()}
    assert sorted(p.name for p in PACKAGE.rglob("*.py") if p.name not in named) == []
    assert "docs/" in named and "formats.md" in named


def test_ruff_finds_nothing_in_the_package_tests_and_scripts():
    """`ruff check .` with pyproject.toml's [tool.ruff] rules (pyflakes, pycodestyle errors) and `ruff format --check .` exit 0."""
    import shutil
    import subprocess

    import pytest

    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    out = subprocess.run([ruff, "check", "--no-cache", "."], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # and the formatter ([tool.ruff.format]) would change nothing: `ruff format` before committing
    out = subprocess.run([ruff, "format", "--check", "--no-cache", "."], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
