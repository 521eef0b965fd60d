"""tracerflow's import layers, checked from the source with ``ast`` (no module is imported).

The layers, top to bottom; a module may import from its own layer's package and from any layer
below it, never from one above:

1. entry points: ``tracerflow.cli`` (the ``tracerflow`` command), ``tracerflow.cli.__main__``,
   ``tracerflow.viewer.__main__`` (``python -m tracerflow.viewer``: the CLI's ``view`` command
   alone, so it imports ``tracerflow.cli``) and ``tracerflow.deploy`` (``tracerflow deploy``);
2. ``tracerflow.flows``: the Prefect flows that wire the stages;
3. ``tracerflow.tasks``: one module per stage;
4. the libraries: ``storage``, ``transcoders``, ``attribution``, ``evaluation``, ``dashboards``,
   ``viewer``, ``toy`` and the base modules (``settings``, ``errors``, ``hashing``, ``corpus``,
   ``fsutil``, ...), which never import the stages, the flows or the CLI.

Checked here: (a) only the entry points import ``tracerflow.cli``; only they and
``tracerflow.flows`` import ``tracerflow.flows``; and only those and ``tracerflow.tasks`` import
``tracerflow.tasks``; (b) no import cycle between tracerflow's modules. Every import counts:
module-level and inside functions, since a function-level import that closes a cycle is a cycle
hidden until that function runs. Imports under ``if TYPE_CHECKING:`` are never executed, so
``test_no_import_cycles`` leaves them out; ``test_no_import_cycles_through_annotations`` counts
them too, as two modules that name each other's types are one unit to read and change. Both kinds
count for the layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "tracerflow"
ENTRY_POINTS = frozenset(
    {"tracerflow.cli.__main__", "tracerflow.viewer.__main__", "tracerflow.deploy"}
)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    type_checking_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def is_type_checking_guard(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def walk_with_guard(node: ast.AST, guarded: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under ``node``, with whether it sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and is_type_checking_guard(child.test):
            for statement in child.body:
                yield statement, True
                yield from walk_with_guard(statement, True)
            for statement in child.orelse:
                yield statement, guarded
                yield from walk_with_guard(statement, guarded)
        else:
            yield child, guarded
            yield from walk_with_guard(child, guarded)


def resolve_from(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """tracerflow modules that ``name`` imports; ``from package import module`` names the
    module, ``from module import thing`` the module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node, guarded in walk_with_guard(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(name, is_package, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.append(submodule if submodule in modules else source)
        for target in targets:
            if target.split(".")[0] == "tracerflow" and target in modules and target != name:
                yield Import(name, target, node.lineno, guarded)


def import_graph() -> list[Import]:
    modules = all_modules()
    return [found for name, path in modules.items() for found in imports_of(name, path, modules)]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violation(found: Import) -> str | None:
    """Why ``found`` reaches up a layer, or None."""
    importer, imported = found.importer, found.imported
    if within(importer, "tracerflow.cli") or importer in ENTRY_POINTS:
        return None
    if within(imported, "tracerflow.cli"):
        return "only the entry points import tracerflow.cli"
    if within(imported, "tracerflow.flows") and not within(importer, "tracerflow.flows"):
        return "a library or task imports tracerflow.flows"
    in_a_library = not any(within(importer, p) for p in ("tracerflow.flows", "tracerflow.tasks"))
    if within(imported, "tracerflow.tasks") and in_a_library:
        return "a library imports tracerflow.tasks"
    return None


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def import_edges(graph: list[Import], *, type_checking: bool) -> dict[str, set[str]]:
    """Importer -> imported; ``if TYPE_CHECKING:`` imports only with ``type_checking``. A
    module's import of its own package is left out: ``tracerflow.a.b`` importing ``tracerflow.a``
    finds ``a``'s ``__init__`` already run, whatever that ``__init__`` imports."""
    edges: dict[str, set[str]] = {}
    for found in graph:
        if (found.type_checking_only and not type_checking) or within(
            found.importer, found.imported
        ):
            continue
        edges.setdefault(found.importer, set()).add(found.imported)
    return edges


def cycles_message(cycles: list[list[str]]) -> str:
    return "import cycles between tracerflow's modules:\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_the_graph_is_read() -> None:
    """The parser finds imports of every kind it must: a broken walker would pass every check."""
    graph = import_graph()
    pairs = {(found.importer, found.imported) for found in graph}
    assert ("tracerflow.cli", "tracerflow.cli.run") in pairs  # from package import module
    assert ("tracerflow.cli", "tracerflow.errors") in pairs  # from module import name
    assert ("tracerflow.tasks.dashboards", "tracerflow.model_sources") in pairs  # in a function
    assert any(found.type_checking_only for found in graph)
    assert len(all_modules()) > 50


def test_libraries_never_import_flows_or_cli() -> None:
    violations = [
        f"{found.importer} (line {found.line}) imports {found.imported}: {why}"
        for found in import_graph()
        if (why := layer_violation(found)) is not None
    ]
    assert not violations, "imports that reach up a layer:\n" + "\n".join(violations)


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_edges(import_graph(), type_checking=False))
    assert not cycles, cycles_message(cycles)


def test_no_import_cycles_through_annotations() -> None:
    cycles = find_cycles(import_edges(import_graph(), type_checking=True))
    assert not cycles, cycles_message(cycles)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_find_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert find_cycles(edges) == expected
