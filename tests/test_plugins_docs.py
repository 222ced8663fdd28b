"""Every hook in hookspecs.py is documented (with its exact signature) and has a test."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from bygheartd.hooks import specs as hookspecs
from bygheartd.hooks.host import HOOK_NAMES

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [
    name
    for name, obj in vars(hookspecs).items()
    if inspect.isfunction(obj) and hasattr(obj, "bygheartd_spec")
]


def signature(name: str) -> str:
    params = inspect.signature(getattr(hookspecs, name)).parameters
    return f"{name}({', '.join(params)})"


def test_the_hook_list_matches_the_pinned_names() -> None:
    assert sorted(HOOKS) == sorted(HOOK_NAMES)
    assert all(getattr(hookspecs, name).__doc__ for name in HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert f"### `{signature(hook)}`" in docs


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    names = set()
    for path in (ROOT / "tests").glob("test_plugins*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
    assert any(name.startswith(f"test_hook_{hook}") for name in names), (
        f"add a test named test_hook_{hook}_... to tests/test_plugins*.py"
    )
