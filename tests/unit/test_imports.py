"""The shape of the package: imports flow one way, from the Fabric face down.

Every ``import`` counts, also those under ``if TYPE_CHECKING:`` and inside
functions: a cycle there is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fabns"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The fabns modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
                elif base in MODULES:
                    found.add(base)
    found.discard(name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def test_there_is_no_import_cycle():
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycle = [*trail[trail.index(node) :], node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for target in sorted(GRAPH[node]):
            visit(target, [*trail, node])
        done.add(node)

    for name in sorted(GRAPH):
        visit(name, [])


@pytest.mark.parametrize(
    "lower", ["fabns.engines", "fabns.runner", "fabns.transfer", "fabns.session", "fabns.host"]
)
def test_lower_layers_never_reach_the_connection(lower):
    reachable: set[str] = set()
    todo = [m for m in MODULES if m == lower or m.startswith(lower + ".")]
    while todo:
        module = todo.pop()
        for target in GRAPH[module]:
            if target not in reachable:
                reachable.add(target)
                todo.append(target)
    assert "fabns.connection" not in reachable


def test_the_remote_helper_imports_only_the_stdlib_and_its_siblings():
    for name, deps in GRAPH.items():
        if name.startswith("fabns.remote"):
            assert all(d.startswith("fabns.remote") for d in deps), (name, deps)
