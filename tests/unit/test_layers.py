"""The package's imports go one way: no module imports a higher layer, and no import cycle exists.

Layers (docs/architecture.md): a module may import its own layer and the layers below it. Every
import counts, at module level or inside a function, except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fhir_exchange"

LAYERS: dict[str, int] = {
    "fhir_exchange": 0, "settings": 0, "errors": 0, "clock": 0,
    "logs": 0, "metrics": 0,  # logging configuration; the Prometheus metrics every layer may count
    "native": 0,  # the compiled build of the validator's hot modules (loads them, imports nothing of ours)
    "fhir": 1,
    "definitions": 2,
    "validation": 3, "search": 3, "formats": 3,
    "store": 4,
    "consult": 5, "security": 5,
    "interactions": 6,
    "bundles": 7, "notify": 7,
    "api": 8, "portal": 8, "cli": 8, "__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["fhir_exchange"]


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("fhir_exchange"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("fhir_exchange"):
                continue
            for alias in node.names:  # "from fhir_exchange.x import y" may import the module x.y
                candidate = f"{base}.{alias.name}"
                out.add(candidate if candidate in MODULES else base)
    return out


MODULES: dict[str, Path] = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH: dict[str, set[str]] = {m: {i for i in _imports(p, m) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_every_package_has_a_layer() -> None:
    unknown = {m.split(".")[1] for m in MODULES if "." in m and m.split(".")[1] not in LAYERS}
    assert not unknown, f"give these a layer in LAYERS and docs/architecture.md: {sorted(unknown)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_from_a_higher_layer(module: str) -> None:
    upward = sorted(i for i in GRAPH[module] if _layer(i) > _layer(module))
    assert not upward, f"{module} (layer {_layer(module)}) imports higher layers: {upward}"


def test_no_import_cycle() -> None:
    # Cycles between packages' __init__ and their own modules are how Python packages work; any other
    # strongly connected component is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w.startswith(v + ".") and MODULES[v].name == "__init__.py":
                continue  # a package re-exporting its own modules
            if w not in index:
                visit(w)
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
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
