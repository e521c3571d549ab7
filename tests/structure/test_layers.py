"""The package's structure drawing: imports point down, and nothing imports in a circle.

Layers, bottom up: ``core`` and ``storage`` (plus ``provider_info``, the provider's data), then one
package per system, then ``cli`` (the run command and its devnets). DAG files sit on top. Every import
counts, including the ones inside functions: a cycle hidden by a lazy import is still a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "tributary"
GROUND = {"core", "storage", "provider_info"}
TOP = {"cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The tributary modules ``path`` imports (anywhere in the file), resolved to known modules."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if not name.startswith("tributary"):
                continue
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        for target in imports_of(path, modules):
            if target != name and not name.startswith(target + "."):  # a module reaching its own package
                edges[name].add(target)
    return {name: edges.get(name, set()) for name in modules}


def layer_of(module: str) -> tuple[int, str]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top in GROUND or not top:
        return 0, top
    if top in TOP:
        return 2, top
    return 1, top


def test_the_ground_floor_and_the_systems_never_import_upwards(graph: dict[str, set[str]]) -> None:
    upward = []
    for source, targets in graph.items():
        source_layer, _ = layer_of(source)
        for target in targets:
            target_layer, _ = layer_of(target)
            if target_layer > source_layer or (source_layer == 0 and target_layer == 1):
                upward.append(f"{source} -> {target}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_no_module_imports_itself_through_a_cycle(graph: dict[str, set[str]]) -> None:
    # Tarjan's strongly connected components, iteratively: any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _class_kind(node: ast.ClassDef) -> str | None:
    bases = {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases}
    if any(b.endswith("Hook") for b in bases):
        return "hook.py"
    if any(b.endswith("Operator") for b in bases):
        return "operators.py"
    if any(b.endswith("Trigger") for b in bases):
        return "triggers.py"
    return None


def test_hooks_operators_and_triggers_live_in_their_fixed_files() -> None:
    """In a system package a hook is in ``hook.py``, an operator in ``operators.py``, a trigger in
    ``triggers.py`` (a sub-package such as ``ml/models`` follows the same names)."""
    misplaced = []
    for path in PACKAGE.rglob("*.py"):
        if layer_of(module_name(path))[0] != 1:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and (want := _class_kind(node)) and path.name != want:
                misplaced.append(f"{path.relative_to(PACKAGE)}: {node.name} belongs in {want}")
    assert not misplaced, "\n".join(sorted(misplaced))


def test_every_system_package_names_itself_once(graph: dict[str, set[str]]) -> None:
    missing = []
    for init in PACKAGE.glob("*/__init__.py"):
        if init.parent.name in GROUND | TOP:
            continue
        tree = ast.parse(init.read_text(encoding="utf-8"))
        names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Name)}
        if "SYSTEM" not in names:
            missing.append(init.parent.name)
    assert not missing, "packages without a SYSTEM constant in __init__.py: " + ", ".join(missing)


# --------------------------------------------------------------------------- the drawing
DRAWING = ROOT / "docs" / "structure.md"
FLOOR = "core+storage"  # one floor: storage reaches core's errors, core's event store the warehouse


def package_of(module: str) -> str:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "tributary"
    return FLOOR if name in {"core", "storage"} else name


def package_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(package_of(a), package_of(b)) for a, targets in graph.items() for b in targets
            if package_of(a) != package_of(b)}


def render(edges: set[tuple[str, str]]) -> str:
    lines = [
        "# Package structure",
        "",
        "Which package of `plugins/tributary` imports which (every import, including those inside",
        "functions). Generated by `tests/structure/test_layers.py`, which fails when this drawing is out",
        "of date, when an arrow points up a floor, or when the arrows make a cycle. To redraw it:",
        "`TRIBUTARY_REDRAW=1 .venv/bin/python -m pytest tests/structure -q`.",
        "",
        "```mermaid",
        "flowchart BT",
    ]
    lines += [f"    {a.replace('+', '_')}[{a}] --> {b.replace('+', '_')}[{b}]" for a, b in sorted(edges)]
    lines += ["```", ""]
    return "\n".join(lines)


def test_the_drawing_is_current_and_its_packages_form_no_cycle(graph: dict[str, set[str]]) -> None:
    import os

    edges = package_edges(graph)
    text = render(edges)
    if os.environ.get("TRIBUTARY_REDRAW"):
        DRAWING.write_text(text, encoding="utf-8")
    assert DRAWING.read_text(encoding="utf-8") == text, "docs/structure.md is out of date (see its header)"
    # Depth-first search for a cycle among packages.
    adjacency: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        adjacency[a].add(b)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(adjacency[node]):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for start in sorted(adjacency):
        if start not in state and (cycle := visit(start, [])):
            raise AssertionError("packages import each other in a circle: " + " -> ".join(cycle))
