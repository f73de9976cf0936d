"""The package layout is the architecture: no import cycle inside governance/, and each layer imports only the
layers below it (docs/architecture.md). Function-level (lazy) imports count: they are cycles all the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "governance"

#: layer -> the layers its modules may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "contract": {"contract"},
    "quality": {"contract", "quality"},
    "host": {"contract", "host"},
    "run": {"contract", "host", "quality", "run"},
    "report": {"contract", "host", "quality", "report"},
    "integrations": {"contract", "host", "quality", "run", "integrations"},
    "api": {"contract", "host", "run", "report", "api"},
    "testing": {"contract", "host", "quality", "run", "report", "testing"},
    "service": {"contract", "host", "run", "report", "api", "service"},
    "cli": {"contract", "host", "quality", "run", "report", "integrations", "api", "service", "testing", "cli"},
}
#: top-level modules and the layer they belong to
TOP = {"errors": "contract", "figures": "contract", "api": "api", "__main__": "cli"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """governance modules imported anywhere in ``path`` (top-level or inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        out |= {n for n in names if n.startswith("governance.") and n in modules}
    return out


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package root: lazy public re-exports only
    return TOP.get(parts[1], parts[1]) if len(parts) == 2 else parts[1]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_inside_governance():
    assert cycles(graph()) == []


def test_each_layer_imports_only_the_layers_below_it():
    bad = []
    for module, targets in sorted(graph().items()):
        src = layer(module)
        if src is None:
            continue
        assert src in ALLOWED, f"{module}: layer {src!r} is not in the architecture; add it to docs and ALLOWED"
        bad += [f"{module} -> {t}" for t in sorted(targets) if layer(t) is not None and layer(t) not in ALLOWED[src]]
    assert bad == []


def test_the_checks_catch_a_cycle_and_a_layer_violation():
    """The detector itself: a planted cycle and an upward import are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("governance.host.registry") == "host" and layer("governance.errors") == "contract"
    assert "cli" not in ALLOWED["service"] and "run" not in ALLOWED["report"] and "api" not in ALLOWED["run"]


@pytest.mark.parametrize("module", ["governance.run.pipeline", "governance.report.build", "governance.api"])
def test_import_graph_sees_function_level_imports(module):
    assert graph()[module], f"{module} imports nothing from governance? the AST walk is broken"
