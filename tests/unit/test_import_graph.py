"""The import graph of fuzzkv/ has no circles (#33), counting imports inside functions and under TYPE_CHECKING:
a circle hidden in a function still ties two modules' meaning to each other's."""

from __future__ import annotations

import grimp


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_fuzzkv_has_no_import_circles():
    graph = grimp.build_graph("fuzzkv")
    edges = {module: set(graph.find_modules_directly_imported_by(module)) & graph.modules for module in graph.modules}
    assert circles(edges) == []


# The layers of fuzzkv/, top to bottom (ARCHITECTURE.md): a module imports only its own layer's and those below. A
# module belongs to the longest name listed that contains it.
LAYERS = (
    ("fuzzkv.__main__", "fuzzkv.cli"),
    ("fuzzkv", "fuzzkv.app", "fuzzkv.pytest_plugin"),
    ("fuzzkv.api",),
    ("fuzzkv.workers", "fuzzkv.executors", "fuzzkv.campaign", "fuzzkv.replay"),
    ("fuzzkv.sweep", "fuzzkv.runner"),
    ("fuzzkv.baselines", "fuzzkv.canaries", "fuzzkv.search", "fuzzkv.reports"),
    ("fuzzkv.backends.loader",),  # builds the lanes a run's config asks for: the config goes no lower
    ("fuzzkv.config",),
    ("fuzzkv.backends.lanes",),
    ("fuzzkv.tolerance", "fuzzkv.diagnosis"),
    ("fuzzkv.oracles",),
    ("fuzzkv.backends.drivers",),
    ("fuzzkv.backends", "fuzzkv.models"),  # the drivers' implementations, path code and scripts; model building
    ("fuzzkv.backends.interface", "fuzzkv.events", "fuzzkv.db", "fuzzkv.comparison", "fuzzkv.strategies",
     "fuzzkv.matrix", "fuzzkv.expected", "fuzzkv.rootcause"),
    ("fuzzkv.verdict", "fuzzkv.case", "fuzzkv.errors", "fuzzkv.features", "fuzzkv.quantizers", "fuzzkv.registry",
     "fuzzkv.plugins", "fuzzkv._version"),
)


def layer_of(module: str) -> int:
    matches = [(len(name), index) for index, names in enumerate(LAYERS) for name in names
               if module == name or module.startswith(name + ".")]
    return max(matches)[1]


def test_every_import_points_down_the_layers():
    """No import points up (#33 allows two; there are none), counting imports inside functions and under
    TYPE_CHECKING: a run's config and the objects built from it travel down without returning."""
    graph = grimp.build_graph("fuzzkv")
    upward = sorted((module, imported) for module in graph.modules
                    for imported in graph.find_modules_directly_imported_by(module)
                    if imported in graph.modules and layer_of(imported) < layer_of(module))
    assert upward == []


def test_the_layer_check_sees_an_upward_import():
    assert layer_of("fuzzkv.backends.hf.backend") > layer_of("fuzzkv.config") > layer_of("fuzzkv.backends.loader")
    assert layer_of("fuzzkv.oracles.core") < layer_of("fuzzkv.backends.interface")
