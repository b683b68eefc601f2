"""The LLM layer needs no ORM and has no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]


def module_imports(module: str) -> set[str]:
    """The batchgen modules ``module`` imports at import time (not inside functions)."""
    path = PROJECT_DIR / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            for alias in node.names:  # ``from batchgen.llm import config``: a submodule
                candidate = f"{node.module}.{alias.name}"
                if (PROJECT_DIR / (candidate.replace(".", "/") + ".py")).exists():
                    found.add(candidate)
    return {name for name in found if name.startswith("batchgen")}


def test_the_llm_layer_has_no_import_cycle_and_no_orm() -> None:
    graph: dict[str, set[str]] = {}
    # Every module of the layer: batchgen.llm itself imports its names lazily.
    modules = sorted(path.relative_to(PROJECT_DIR).with_suffix("").as_posix().replace("/", ".")
                     for path in (PROJECT_DIR / "batchgen" / "llm").rglob("*.py"))
    todo = [module.removesuffix(".__init__") for module in modules]
    while todo:
        module = todo.pop()
        if module not in graph:
            graph[module] = module_imports(module)
            todo.extend(graph[module])
    assert "batchgen.models" not in graph

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            pytest.fail(f"import cycle: {' -> '.join((*path, module))}")
        for imported in graph[module]:
            visit(imported, (*path, module))

    for module in graph:
        visit(module, ())
