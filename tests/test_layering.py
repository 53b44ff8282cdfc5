"""The package's layering (docs/architecture.md, "Principles"), read from the source: every import of a
rosa module, at the top of a file or inside a function, is an edge.

- no import cycle between rosa's modules, nor between its units (a sub-package or a top-level module);
- nothing below the loop imports ``rosa.training`` (data, models, kernels, methods, evaluation, results,
  metrics, and the leaves);
- the leaf utilities import no other part of rosa but leaves.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "rosa"
LEAVES = {"rosa.atomic", "rosa.runs", "rosa.distributed", "rosa.schema", "rosa.metrics", "rosa.tracking"}
BELOW_TRAINING = {
    "rosa.data",
    "rosa.models",
    "rosa.kernels",
    "rosa.methods",
    "rosa.evaluation",
    "rosa.results",
    *LEAVES,
}


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from pkg import sub` imports the module pkg.sub; `from pkg import name` imports pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for source, targets in graph.items():
        units.setdefault(unit(source), set()).update(unit(t) for t in targets if unit(t) != unit(source))
    return units


def test_no_import_cycle_between_modules_or_units():
    graph = import_graph()
    assert cycles(graph) == []
    assert cycles(unit_graph(graph)) == []


def test_nothing_below_the_loop_imports_training():
    bad = sorted(
        f"{m} -> {t}"
        for m, ts in import_graph().items()
        for t in ts
        if unit(m) in BELOW_TRAINING and unit(t) == "rosa.training"
    )
    assert bad == []


def test_leaves_import_only_leaves():
    bad = sorted(
        f"{m} -> {t}" for m, ts in import_graph().items() for t in ts if unit(m) in LEAVES and unit(t) not in LEAVES
    )
    assert bad == []


def test_the_checker_sees_a_cycle_and_a_forbidden_edge():
    """The checks can fail: a planted cycle and a planted import of training are both reported."""
    graph = {k: set(v) for k, v in import_graph().items()}
    graph["rosa.runs"].add("rosa.training.loop")
    assert any("rosa.runs" in c for c in cycles(graph))
    assert any("rosa.runs" in c for c in cycles(unit_graph(graph)))
    assert unit("rosa.training.loop") == "rosa.training" and "rosa.runs" in LEAVES
    assert "rosa.training.lifecycle" in import_graph()["rosa.launch"]  # relative and absolute imports are both read
