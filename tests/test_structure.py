"""The support package's shape: kit/ modules import each other without cycles, at any depth (imports inside
functions included), never reach back up into the four files, and stay short enough to read."""

import ast
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[1] / "kit"
TOP_FILES = {"algorithm", "env", "inference", "training", "my_reward", "my_tools"}
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(KIT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The kit modules `path` imports, anywhere in it; `from kit.x import y` counts kit.x.y where y is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in modules or name.split(".")[0] in TOP_FILES}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in KIT.rglob("*.py")}
    return {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}


def test_kit_never_imports_the_four_files(graph):
    upward = {name: sorted(i for i in imported if i.split(".")[0] in TOP_FILES) for name, imported in graph.items()}
    assert {name: found for name, found in upward.items() if found} == {}


def test_kit_has_no_import_cycle(graph):
    done, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(name):] + [name])}")
        if name in done:
            return
        path.append(name)
        for imported in graph.get(name, ()):
            if imported.startswith("kit"):
                visit(imported)
        path.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_subpackages_have_no_cycle_between_them(graph):
    """Between kit's groups too (patches, data, rollout, setup, run and the top-level modules): one order holds."""
    def group(name):  # kit.rollout.sampler -> rollout; kit.worker -> kit.worker
        parts = name.split(".")
        return parts[1] if len(parts) > 1 and (KIT / parts[1]).is_dir() else name

    edges = {(group(a), group(b)) for a, imported in graph.items() for b in imported
             if b.startswith("kit.") and group(a) != group(b)}
    groups = {g for edge in edges for g in edge}
    order = []
    while groups:
        free = sorted(g for g in groups if not any(a == g and b in groups for a, b in edges))
        assert free, f"the groups {sorted(groups)} import each other: {sorted(e for e in edges if set(e) <= groups)}"
        order += free
        groups -= set(free)


def test_patches_package_imports_nothing():
    """algorithm.py imports kit.patches.cpu_platform before verl loads: the package's __init__ must not load verl."""
    tree = ast.parse((KIT / "patches" / "__init__.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_no_module_is_too_long_to_read():
    long = {str(path.relative_to(KIT.parent)): n for path in KIT.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
