"""The code's shape, held by tests (issue 25): pipeline/ is stage glue, arrows point one way, functions stay short.

Read from the source files with `ast`; nothing is imported or run.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "elimnet"
PIPELINE_MAX_LINES = 400
FUNCTION_MAX_LINES = 60


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def _imports(tree: ast.Module) -> set[str]:
    """Every elimnet module named by an import anywhere in the file (function bodies included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("elimnet")}


def test_pipeline_is_stage_glue_of_at_most_400_lines():
    lines = sum(len(p.read_text().splitlines()) for p in (SRC / "pipeline").glob("*.py"))
    assert lines <= PIPELINE_MAX_LINES


@pytest.mark.parametrize("importer,forbidden", [
    ("elimnet.", "elimnet.pipeline"),   # library code never reaches up into the stage glue
    ("elimnet.config", "elimnet.compress"),
    ("elimnet.bench", "elimnet.compress"),
])
def test_no_arrow_points_back(importer, forbidden):
    bad = {name: sorted(i for i in _imports(tree) if i == forbidden or i.startswith(forbidden + "."))
           for name, tree in _modules().items()
           if name.startswith(importer) and not name.startswith(forbidden)}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_stage_module_imports_another():
    stages = {n for n in _modules() if n.startswith("elimnet.pipeline.") and n != "elimnet.pipeline.common"}
    bad = {n: sorted(_imports(t) & stages) for n, t in _modules().items() if n in stages}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_function_is_longer_than_60_lines():
    long = [f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for name, tree in _modules().items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > FUNCTION_MAX_LINES]
    assert long == []
