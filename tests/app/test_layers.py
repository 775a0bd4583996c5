"""Layers point one way, and no module imports in a cycle.

Every import statement of every module of the project's packages (found by walking the AST,
so imports inside functions count too) is checked against the allowed directions:
config/records <- exchanges <- app, and compute <- agents <- app.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

# package -> the project packages it may import (besides itself)
ALLOWED = {
    "config": set(),
    "records": {"config"},
    "exchanges": {"config", "records", "replay"},
    "replay": {"config", "records", "exchanges"},  # record/replay tooling, beside exchanges
    "compute": {"records"},
    "agents": {"config", "records", "compute"},
    "app": {"config", "records", "exchanges", "replay", "compute", "agents"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in ALLOWED:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _nodes(tree: ast.Module, at_import: bool) -> list[ast.AST]:
    """Every node, or with `at_import` only those that run when the module is imported: not
    inside functions, nor under `if TYPE_CHECKING:`."""
    if not at_import:
        return list(ast.walk(tree))
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def imports(name: str, path: Path, known: set[str], at_import: bool = False) -> set[str]:
    """The project modules `name` imports (the longest known prefix of each)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    out = set()
    for node in _nodes(tree, at_import):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names
                          if f"{module}.{alias.name}" in known]
            # `from pkg import mod` imports the module; `from mod import name`, mod itself
            targets = submodules if len(submodules) == len(node.names) else [module, *submodules]
        for target in targets:
            parts = target.split(".")
            for i in range(len(parts), 0, -1):
                candidate = ".".join(parts[:i])
                if candidate in known:
                    if candidate != name:
                        out.add(candidate)
                    break
    return out


def graph(at_import: bool = False) -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found), at_import) for name, path in found.items()}


def test_every_package_is_found() -> None:
    found = modules()
    for package in ("config", "records", "exchanges", "compute", "agents", "app"):
        assert package in found, package
    assert "compute.windows" in found and "agents.faust_internals" in found


def test_layers_point_one_way() -> None:
    upward = []
    for name, targets in graph().items():
        package = name.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package]:
                upward.append(f"{name} imports {target}")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    """Among the imports that run at import time (an import inside a function runs later)."""
    edges = graph(at_import=True)
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The walk finds imports inside functions and relative imports (it could otherwise
    pass on a tree it cannot read)."""
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from app import main\n\nfrom .windows import Bucket\n")
    known = {"app", "app.main", "compute.windows"}
    assert imports("compute.mod", source, known) == {"app.main", "compute.windows"}
    assert imports("compute.mod", source, known, at_import=True) == {"compute.windows"}
