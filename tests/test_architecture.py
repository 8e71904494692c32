"""The map is code: docs/architecture.md's module table names every module and exactly the qzoo modules it imports."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "qzoo"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
ROW = re.compile(r"^\| `(\w+)\.py` \|.*\| ([^|]+) \|$")


def real_imports(module: str) -> set[str]:
    """The qzoo modules ``module`` imports, at the top or inside a function (a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("qzoo.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qzoo":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names if a.name in MODULES}
    return found - {module}


def mapped_imports() -> dict[str, set[str]]:
    rows = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        match = ROW.match(line.strip())
        if match:
            column = match.group(2).strip()
            rows[match.group(1)] = set() if column == "none" else {name.strip() for name in column.split(",")}
    return rows


def test_the_map_lists_every_module_once():
    assert sorted(mapped_imports()) == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_the_map_names_exactly_the_modules_each_module_imports(module):
    assert mapped_imports().get(module) == real_imports(module), (
        f"docs/architecture.md's row for {module}.py is stale; it imports {sorted(real_imports(module))}")


def test_imports_flow_one_way():
    """No cycle among qzoo's modules: a pure piece never imports upward."""
    graph = {module: real_imports(module) for module in MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module not in done:
            for imported in graph[module]:
                visit(imported, (*path, module))
            done.add(module)

    for module in MODULES:
        visit(module, ())
