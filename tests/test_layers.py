"""The import rules of DESIGN.md ("Which way dependencies point"), checked per package.

Imports point down only; faces reach the engine, the store and the client only through the
service; the simulator stays a stand-in for a server we do not own; only `bygheartd.mcp`
imports the `mcp` SDK. Lazy imports inside functions count like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bygheartd"

# The shared vocabulary, in the order its modules may use one another.
VOCABULARY = ["safetext", "errors", "catalog", "jobs", "config", "logs", "__init__"]
BASE = {"songs", "store", "api", "folders"}
CORE = {"engine", "hooks"}
SERVICE = {"service"}
# The wiring above the service (store, engine, service built in one place): faces use it.
WIRING = {"runtime"}
FACES = {"watch", "mcp", "web", "cli", "daemon", "__main__"}
RANK = {
    **{name: i / 10 for i, name in enumerate(VOCABULARY)},
    **dict.fromkeys(BASE, 1),
    **dict.fromkeys(CORE, 2),
    **dict.fromkeys(SERVICE, 3),
    **dict.fromkeys(WIRING, 3.5),
    **dict.fromkeys(FACES, 4),
}
# Within a layer, who may use whom (anything else in the same layer is a sideways import).
SIDEWAYS = {
    "api": {"folders"},  # a download is fsynced and renamed like every other file we write
    "engine": {"hooks"},
    "daemon": {"watch", "mcp", "web"},  # `bygheartd run` wires the faces together
    "cli": {"daemon", "mcp", "web"},  # `bygheartd run`, `bygheartd mcp`, `bygheartd web`
    "__main__": {"cli"},
}
# Faces may use the service, the shared vocabulary and these base packages, nothing else.
FACE_MAY_USE = {"songs", "folders"}


def unit_of(path: Path) -> str:
    """The package a file belongs to (`engine`), or the top-level module's own name."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports_of(path: Path) -> set[str]:
    """Every module name imported anywhere in the file (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "bygheartd":
                found.update(f"bygheartd.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def units_used(path: Path) -> set[str]:
    """Our packages and top-level modules that a file imports, other than its own."""
    names = {m.split(".")[1] for m in imports_of(path) if m.startswith("bygheartd.")}
    return names - {unit_of(path), "__version__", "hookimpl", "RejectJob"}


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if unit_of(p) != "simulator")


def test_every_package_has_a_layer() -> None:
    units = {unit_of(p) for p in sources()}
    assert units - set(RANK) == set(), "give new packages a layer in this test"


def test_every_package_init_is_empty() -> None:
    """The CLI's cold start depends on lazy imports: a package import costs nothing."""
    for init in PACKAGE.glob("*/__init__.py"):
        if unit_of(init) == "simulator":
            continue
        assert init.read_text(encoding="utf-8").strip() == "", init


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_only(path: Path) -> None:
    me = unit_of(path)
    wrong = {
        u
        for u in units_used(path)
        if u in RANK and RANK[u] >= RANK[me] and u not in SIDEWAYS.get(me, set())
    }
    if me == "__init__":
        wrong -= {"hooks"}  # the lazy `from bygheartd import hookimpl` for plugin authors
    assert wrong == set(), f"{me} imports its own or a higher layer: {sorted(wrong)}"


@pytest.mark.parametrize(
    "path",
    [p for p in sources() if unit_of(p) in FACES],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_faces_reach_the_engine_store_and_client_only_through_the_service(path: Path) -> None:
    used = units_used(path)
    below_service = {u for u in used if u in BASE | CORE} - FACE_MAY_USE
    assert below_service == set(), f"{path.name} must go through the service: {below_service}"


@pytest.mark.parametrize(
    "path",
    [p for p in sources() if unit_of(p) in FACES - {"daemon"}],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_faces_never_reach_past_the_service_to_its_store(path: Path) -> None:
    """`service.store.x` is the store all the same, only without an import to show it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reached = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "store"
        and isinstance(node.value, ast.Attribute | ast.Name)
        and (node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id)
        == "service"
    ]
    assert reached == [], f"{path.name} reaches the service's store on lines {reached}"


def test_the_simulator_imports_only_the_protocol_constants() -> None:
    for path in (PACKAGE / "simulator").glob("*.py"):
        names = units_used(path) - {"simulator"}
        assert names <= {"catalog"}, f"{path.name} imports {sorted(names)}"


def test_only_the_mcp_package_imports_the_mcp_sdk() -> None:
    for path in PACKAGE.rglob("*.py"):
        if unit_of(path) == "mcp":
            continue
        assert not {m for m in imports_of(path) if m.split(".")[0] == "mcp"}, path.name


def module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (lazy and TYPE_CHECKING imports included:
    a cycle hidden in a function is still a cycle in the design)."""
    modules = {module_of(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules:
                    edges.add(target)
                    break  # `from pkg.mod import name`: the most precise module found
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_anywhere() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
