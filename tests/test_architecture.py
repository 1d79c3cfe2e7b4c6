"""Meta-tests that keep the house in order: no import circles, plugins reach core only through the
plugin API (``flux_core.__all__``) and never another plugin, no giant classes or functions, every
plugin folder is a self-contained distribution.

They read source with ``ast`` (only ``flux_core`` itself is imported, for ``__all__``: no torch, TRL
or plugin), so they run in about a second. Product code is ``flux_core``, ``flux`` and every ``flux_plugins/<name>/flux_<name>``
package; tests, examples, benchmarks and scripts are not held to these rules.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from paths import REPO

import flux_core  # only pluggy behind it: the plugin API names load lazily

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 has no TOML reader; the readme check falls back to a line match
    tomllib = None

PLUGINS = REPO / "flux_plugins"
MAX_CLASS_LINES = 350
MAX_FUNCTION_LINES = 100


def plugin_folders() -> list[Path]:
    """Every ``flux_plugins/<name>/`` that is a plugin distribution (not a cache or hidden folder)."""
    return sorted(p for p in PLUGINS.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def product_packages() -> list[Path]:
    """The package directories of product code (an ``*.egg-info`` next to a plugin package is not one)."""
    plugin_packages = [p for p in PLUGINS.glob("*/flux_*") if (p / "__init__.py").is_file()]
    return [REPO / "flux_core", REPO / "flux", *sorted(plugin_packages)]


@cache
def product_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of product code."""
    modules = {}
    for package in product_packages():
        for path in sorted(package.rglob("*.py")):
            parts = path.relative_to(package.parent).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO)}:{node.lineno}"


def runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at the top, inside functions and classes, but not under
    ``if TYPE_CHECKING:`` (those never execute; they are how annotations name a type without a circle)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skipped.update(id(child) for statement in node.body for child in ast.walk(statement))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
            yield node


def all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, ``if TYPE_CHECKING:`` ones included."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement in ``module`` may load: the module it names, and for
    ``from X import y`` also ``X.y`` (a submodule, if y is one). Relative imports are resolved."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


@cache
def import_graph() -> dict[str, dict[str, str]]:
    """module -> {module it imports: where the first such import is}, within product code only."""
    modules = product_modules()
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for module, path in modules.items():
        for node in runtime_imports(parsed(path)):
            for target in imported_names(node, module, path.name == "__init__.py"):
                if target in modules and target != module:
                    graph[module].setdefault(target, where(path, node))
    return graph


def strongly_connected(graph: dict[str, dict[str, str]], nodes: list[str]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that each reach all the others (two or more: a circle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in nodes:
        if node not in index:
            visit(node)
    return groups


def one_cycle(graph: dict[str, dict[str, str]], group: list[str]) -> list[str]:
    """A shortest circle through the first module of ``group`` (breadth-first inside the group)."""
    start, members = group[0], set(group)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph.get(node, {})):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target in members and target not in parents:
                    parents[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle through {start}")  # a group of two or more always has one


def test_the_import_graph_has_no_circle():
    # Imports inside functions count: a lazy import still ties the two modules together, and the
    # circle shows up as an ImportError the day someone moves that import to the top.
    graph = import_graph()
    groups = [g for g in strongly_connected(graph, sorted(product_modules())) if len(g) > 1]
    explained = []
    for group in groups:
        inside = [f"      {a} -> {b}  ({location})" for a in group for b, location in graph[a].items() if b in group]
        explained.append(
            f"  {' -> '.join(one_cycle(graph, group))}\n    every import among these {len(group)} modules:\n"
            + "\n".join(inside)
        )
    message = "import circles (move what both sides need into a module that imports neither):\n"
    assert not groups, message + "\n".join(explained)


def test_plugins_import_core_only_through_the_plugin_api():
    # `flux_core.__all__` is what a plugin may rely on; the modules behind it move between releases.
    api = set(flux_core.__all__)
    problems = []
    for module, path in product_modules().items():
        if module.split(".")[0] in ("flux_core", "flux"):
            continue
        for node in all_imports(parsed(path)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "flux_core" or alias.name.startswith("flux_core."):
                        problems.append(f"  {where(path, node)}: import {alias.name}")
            elif node.level == 0 and node.module and node.module.startswith("flux_core."):
                names = ", ".join(alias.name for alias in node.names)
                problems.append(f"  {where(path, node)}: from {node.module} import {names}")
            elif node.level == 0 and node.module == "flux_core":
                for alias in node.names:
                    if alias.name not in api:
                        problems.append(f"  {where(path, node)}: from flux_core import {alias.name} (not in __all__)")
    message = (
        "plugins import core only as `from flux_core import NAME` with NAME in flux_core.__all__ "
        "(a name a plugin needs goes into _PLUGIN_API in flux_core/__init__.py):\n"
    )
    assert not problems, message + "\n".join(problems)


def test_no_product_code_imports_another_plugin():
    # Each plugin installs alone (tests/test_plugin_wheels.py), so neither core nor a plugin may need one.
    plugins = {path.name for path in product_packages()} - {"flux_core", "flux"}
    problems = []
    for module, path in product_modules().items():
        own = module.split(".")[0]
        for node in runtime_imports(parsed(path)):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # relative: inside its own package
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top in plugins and top != own:
                    problems.append(f"  {where(path, node)}: {own} imports {name}")
    assert not problems, "a plugin is imported from outside its own package:\n" + "\n".join(problems)


def test_no_class_or_function_in_product_code_is_too_long():
    too_long = []
    for path in product_modules().values():
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.ClassDef):
                limit, kind = MAX_CLASS_LINES, "class"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit, kind = MAX_FUNCTION_LINES, "function"
            else:
                continue
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                too_long.append(f"  {where(path, node)}: {kind} {node.name} is {length} lines (limit {limit})")
    assert not too_long, "split these into smaller pieces:\n" + "\n".join(sorted(too_long))


@pytest.mark.parametrize("folder", plugin_folders(), ids=lambda p: p.name)
def test_each_plugin_folder_is_a_self_contained_distribution(folder):
    package = folder / f"flux_{folder.name}"
    missing = [
        what
        for what, present in (
            ("pyproject.toml", (folder / "pyproject.toml").is_file()),
            ("README.md", (folder / "README.md").is_file()),
            ("LICENSE", (folder / "LICENSE").is_file()),
            ("MANIFEST.in", (folder / "MANIFEST.in").is_file()),
            (f"flux_{folder.name}/__init__.py", (package / "__init__.py").is_file()),
            (f"flux_{folder.name}/trl_reliance.py", (package / "trl_reliance.py").is_file()),
            ("tests/test_*.py", any((folder / "tests").glob("test_*.py"))),
        )
        if not present
    ]
    assert not missing, f"flux_plugins/{folder.name}/ lacks {', '.join(missing)}"
    text = (folder / "pyproject.toml").read_text()
    if tomllib is not None:
        readme = tomllib.loads(text)["project"].get("readme")
    else:
        found = re.search(r'^readme\s*=\s*"([^"]*)"', text, re.MULTILINE)
        readme = found and found.group(1)
    assert readme == "README.md", f'flux_plugins/{folder.name}/pyproject.toml: set readme = "README.md" (its PyPI page)'
    from flux_core.registry import KNOWN_ALGORITHM_PACKAGES

    distribution = re.search(r'^name\s*=\s*"([^"]*)"', text, re.MULTILINE).group(1)
    assert distribution in KNOWN_ALGORITHM_PACKAGES.values(), (
        f"flux_core/registry.py: add {distribution} to KNOWN_ALGORITHM_PACKAGES (a missing install gets its pip hint)"
    )


def test_the_meta_tests_see_every_plugin_package():
    # Guards the globs above: a plugin package they missed would escape every rule in this file.
    seen = {module.split(".")[0] for module in product_modules()}
    assert {f"flux_{folder.name}" for folder in plugin_folders()} | {"flux_core", "flux"} <= seen
