"""The import rules of DESIGN.md ("Which way dependencies point"), checked on every run:
imports point down only, faces never reach the store or the client, the simulator stays a
stand-in for a server we do not own, and only the MCP modules import `mcp`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bygheartd"

FACES = {
    "cli",
    "commands",
    "display",
    "mcp_server",
    "mcp_http",
    "mcp_models",
    "watcher",
    "intake",
    "inbox",
    "stability",
    "ignore",
    "daemon",
    "demo",
    "configcheck",
    "checks",
    "__main__",
}
SERVICE = {"service", "runtime"}
CORE = {
    "engine",
    "polling",
    "delivery",
    "budget",
    "scheduler",
    "plugins",
    "plugin_discovery",
    "hookspecs",
    "naming",
}
BASE = {
    "store",
    "schema",
    "client",
    "client_errors",
    "results",
    "download",
    "request",
    "request_fields",
    "request_values",
    "songfile",
    "config",
    "catalog",
    "errors",
    "jobs",
    "folders",
    "lock",
    "logs",
    "systemd",
    "__init__",
}
RANK = {
    **dict.fromkeys(BASE, 0),
    **dict.fromkeys(CORE, 1),
    **dict.fromkeys(SERVICE, 2),
    **dict.fromkeys(FACES, 3),
}


def imports_of(path: Path) -> set[str]:
    """Every module name imported anywhere in the file (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def ours(modules: set[str]) -> set[str]:
    return {m.split(".")[1] for m in modules if m.startswith("bygheartd.") and m.count(".") >= 1}


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules - set(RANK) == set(), "give new modules a layer in this test"


@pytest.mark.parametrize("module", sorted(RANK))
def test_imports_point_down_only(module: str) -> None:
    path = PACKAGE / f"{module}.py"
    if not path.exists():
        pytest.skip("module gone")
    upward = {m for m in ours(imports_of(path)) if m in RANK and RANK[m] > RANK[module]}
    if module == "__init__":
        upward -= {"plugins"}  # the lazy `from bygheartd import hookimpl` for plugin authors
    assert upward == set(), f"{module} imports a higher layer: {sorted(upward)}"


@pytest.mark.parametrize("module", sorted(FACES))
def test_faces_never_reach_the_store_or_the_client(module: str) -> None:
    direct = ours(imports_of(PACKAGE / f"{module}.py")) & {"store", "client", "schema"}
    assert direct == set(), f"{module} must go through the service"


def test_the_simulator_imports_only_the_protocol_constants() -> None:
    for path in (PACKAGE / "simulator").glob("*.py"):
        names = ours(imports_of(path)) - {"simulator"}
        assert names <= {"catalog"}, f"{path.name} imports {sorted(names)}"


def test_only_the_mcp_modules_import_mcp() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.stem in {"mcp_server", "mcp_http"}:
            continue
        assert not {m for m in imports_of(path) if m.split(".")[0] == "mcp"}, path.name
