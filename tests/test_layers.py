"""The architecture, checked: dependencies point one way between negkit's packages, and no two modules import
each other (directly or in a longer cycle). Imports are read from the source with ``ast`` (module level and
inside functions alike; ``if TYPE_CHECKING:`` blocks are ignored)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "negkit"
#: each package may import only from packages of a lower layer or its own
LAYERS = [
    {"_optional", "_validation", "io"},
    {"losses", "negatives"},  # the bottom: a loss accepts sampled Negatives, a sampler scores with the core
    {"metrics", "distributed"},
    {"data", "report"},
    {"models", "integrations"},
    {"mining"},
    {"strategies"},
    {"tasks"},
    {"train"},
    {"cli", "__main__"},  # python -m negkit
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SRC.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(child) for child in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:  # `from pkg import module` depends on the module, not on pkg's __init__
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {module for module in found if module.startswith("negkit")}


GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, group in enumerate(LAYERS):
        if top in group:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "negkit"))
def test_dependencies_point_down(module):
    upward = sorted(m for m in GRAPH[module] if m != "negkit" and layer(m) > layer(module))
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
