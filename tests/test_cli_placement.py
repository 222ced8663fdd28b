"""`--config` and `--log-level` work before or after every subcommand (DESIGN pins it), for
every command in the tree, including ones added later: the test walks the whole tree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from bygheartd.cli.main import State, main


def _paths(
    group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        path = (*prefix, name)
        if isinstance(command, click.Group):
            yield from _paths(command, ctx, path)
        else:
            yield path


def _parsed(args: list[str]) -> State:
    """What the command line sets, parsed the way click runs it, down to the leaf command
    (without running it: required arguments may be missing)."""
    ctx = main.make_context("bygheartd", list(args), resilient_parsing=True)
    command: click.Command = main
    rest = [*ctx._protected_args, *ctx.args]
    while isinstance(command, click.Group) and rest:
        name, *rest = rest
        found = command.get_command(ctx, name)
        assert found is not None, name
        command = found
        ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=True)
        rest = [*ctx._protected_args, *ctx.args] if isinstance(command, click.Group) else []
    state = ctx.find_object(State)
    assert state is not None
    return state


ALL = sorted(_paths(main, main.make_context("bygheartd", [], resilient_parsing=True)))


def test_the_tree_is_walked() -> None:
    assert {("config", "example"), ("store", "migrate"), ("list",), ("mcp",)} <= set(ALL)


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
@pytest.mark.parametrize("placement", ["before", "after"])
def test_config_and_log_level_are_taken_in_either_place(
    path: tuple[str, ...], placement: str, tmp_path: Path
) -> None:
    chosen = tmp_path / "elsewhere.toml"
    options = ["--config", str(chosen), "--log-level", "debug"]
    args = [*options, *path] if placement == "before" else [*path, *options]
    state = _parsed(args)  # no usage error ("No such option") in either place
    if path == ("simulator",) and placement == "after":
        return  # its own --log-level and an ignored --config: it reads no config file
    assert (state.config_path, state.log_level) == (chosen, "debug")
