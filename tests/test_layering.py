"""The package's layers, as README's "Layout" states them: no module imports a layer
its line in README does not list (lazy imports inside functions included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stated_graph() -> dict[str, set[str]]:
    """The `layer -> allowed layers` lines of README's fenced block after "Layers"."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- layers -->\s*```\n(.*?)```", text, re.S)
    assert block, "README.md has no <!-- layers --> block"
    graph = {}
    for line in block.group(1).splitlines():
        if "->" in line:
            name, allowed = line.split("->", 1)
            graph[name.strip()] = {a for a in allowed.replace(",", " ").split() if a != "(nothing)"}
    return graph


def layer_of(path: Path) -> str:
    rel = path.relative_to(ROOT / "fleetserve")
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else "fleetserve"


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "fleetserve" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_import_follows_the_layers_readme_states():
    graph = stated_graph()
    wrong = []
    for path in sorted((ROOT / "fleetserve").rglob("*.py")):
        layer = layer_of(path)
        if layer in ("fleetserve", "__main__"):
            continue
        assert layer in graph, f"README's layers do not list {layer} ({path})"
        for target in imports(path) - {layer}:
            if target not in graph[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports {target}, which {layer} may not")
    assert not wrong, "\n".join(wrong)


def test_the_stated_layers_have_no_cycle():
    graph = stated_graph()
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"cycle: {' -> '.join(path + (node,))}"
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, path + (node,))
        done.add(node)

    for node in graph:
        visit(node, ())
