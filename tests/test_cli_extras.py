"""The commands people look for (`guide`, `models`, `open`, `config example`), help texts
that are never cut off, ISO times in `status --json`, and budgets shown wherever a cost is:
real `python -m bygheartd` subprocesses, and MCP through the official client.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import TEST_KEY, MakeConfig
from mcp import Client
from mcp.types import CallToolResult, TextContent, TextResourceContents

from bygheartd import catalog
from bygheartd.cli.main import main as cli_main
from bygheartd.engine.lock import EngineLock, EngineRole
from bygheartd.mcp.server import GUIDE_URI, build_server
from bygheartd.runtime import Runtime
from bygheartd.simulator import RunningSimulator

REPO = Path(__file__).resolve().parent.parent

SONG = """---
title: Paper Moon
style: warm indie folk, male vocal
model: bygheart-melody-fast
duration: 20
---
[Verse]
paper moon above the harbour
"""
# 4 credits a take × 4 takes: two of these do not fit one day's 30 credits.
BIG_SONG = """---
title: Big Night
style: stadium rock
model: bygheart-studio-max
takes: 4
duration: 20
---
[Verse]
the lights go up
"""
LYRICS = "[Verse]\nNeon rivers run tonight\nWe are shining in the light\n"


def bgh(
    *args: str,
    config: Path | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "BYGHEART_API_KEY": TEST_KEY,
        "BYGHEARTD_LOAD_PLUGINS": "",
        "COLUMNS": "250",
        **(env or {}),
    }
    for name in drop:
        full.pop(name, None)
    cmd = [sys.executable, "-m", "bygheartd", *args]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=timeout)


@pytest.fixture
def cfg(simulator: RunningSimulator, make_config: MakeConfig) -> Path:
    config = make_config(simulator)
    assert config.source_path is not None
    return config.source_path


@pytest.fixture
def offline_cfg(make_config: MakeConfig) -> Path:
    """No server at all: submitted jobs stay queued (nothing is spent)."""
    config = make_config(None)
    assert config.source_path is not None
    return config.source_path


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- guide, models, config example ----------------------------------------------------


def test_guide_piped_prints_the_packaged_markdown_that_mcp_serves_too() -> None:
    result = bgh("guide")
    assert result.returncode == 0, result.stderr
    text = (REPO / "bygheartd" / "data" / "guide.md").read_text(encoding="utf-8")
    assert result.stdout == text  # plain text when piped: no escape codes, no rendering
    assert "\x1b[" not in result.stdout


@pytest.mark.anyio
async def test_the_mcp_guide_resource_is_the_same_text(make_config: MakeConfig) -> None:
    async with (
        Runtime(make_config(None), role=EngineRole.MCP, engine=False) as rt,
        Client(build_server(rt.service)) as client,
    ):
        contents = (await client.read_resource(GUIDE_URI)).contents
    [content] = contents
    assert isinstance(content, TextResourceContents)
    assert content.text == bgh("guide").stdout


def test_config_example_prints_the_repository_config_example() -> None:
    result = bgh("config", "example")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "config.example.toml").read_text(encoding="utf-8")


def test_models_lists_the_hosted_catalog_with_cost_and_purpose(cfg: Path) -> None:
    data = json.loads(bgh("models", "--json", config=cfg).stdout)
    assert data["backend"] == "bygheart"
    assert [(m["name"], m["credits"], m["purpose"]) for m in data["models"]] == [
        (m.name, m.credits, m.purpose) for m in catalog.HOSTED_MODELS.values()
    ]
    assert [m["name"] for m in data["models"] if m["default"]] == [catalog.DEFAULT_HOSTED_MODEL]
    text = bgh("models", config=cfg).stdout
    assert re.search(r"bygheart-melody-fast\s+1 credit\s+fast iteration", text), text
    assert "bygheart-studio-pro (default)" in text and "1 credits" not in text


def test_models_for_acestep_lists_its_free_models(make_config: MakeConfig) -> None:
    config = make_config(None, api={"backend": "acestep", "base_url": "http://127.0.0.1:9"})
    assert config.source_path is not None
    data = json.loads(bgh("models", "--json", config=config.source_path).stdout)
    assert data["backend"] == "acestep"
    assert [m["name"] for m in data["models"]] == catalog.acestep_models()
    assert {m["credits"] for m in data["models"]} == {0}
    assert "free" in bgh("models", config=config.source_path).stdout


# -- open -------------------------------------------------------------------------------


def test_open_without_a_desktop_prints_the_take_path(cfg: Path, tmp_path: Path) -> None:
    song = write(tmp_path, "paper-moon.txt", SONG)
    [record] = json.loads(bgh("submit", str(song), "--wait", "--json", config=cfg).stdout)
    no_desktop = ("DISPLAY", "WAYLAND_DISPLAY")
    result = bgh("open", record["id"][:8], config=cfg, drop=no_desktop)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == record["files"][0]["path"]
    assert Path(result.stdout.strip()).is_file()

    wrong = bgh("open", record["id"], "--take", "2", config=cfg, drop=no_desktop)
    assert wrong.returncode == 1 and "has 1 take: use --take 1" in wrong.stderr


def test_open_a_job_without_takes_says_what_it_is_doing(offline_cfg: Path, tmp_path: Path) -> None:
    song = write(tmp_path, "paper-moon.txt", SONG)
    [record] = json.loads(bgh("submit", str(song), "--json", config=offline_cfg).stdout)
    result = bgh("open", record["id"], config=offline_cfg, drop=("DISPLAY", "WAYLAND_DISPLAY"))
    assert result.returncode == 1
    assert "is queued and has no takes yet" in result.stderr and "bygheartd show" in result.stderr


# -- help and JSON ----------------------------------------------------------------------


def test_top_level_help_shows_every_description_in_full() -> None:
    result = bgh("--help", env={"COLUMNS": "80"})
    assert result.returncode == 0
    listing = result.stdout.split("Commands:", 1)[1]
    assert "..." not in listing
    flat = " ".join(listing.split())
    for name, command in cli_main.commands.items():
        summary = " ".join(command.get_short_help_str(limit=10_000).split())
        assert summary in flat, name
    config_help = " ".join(bgh("config", "--help", env={"COLUMNS": "80"}).stdout.split())
    assert "Validate the config; show effective paths and where the key comes from." in config_help


def test_every_json_flag_and_demo_dir_have_help() -> None:
    def walk(group: click.Group) -> list[click.Command]:
        found: list[click.Command] = []
        for command in group.commands.values():
            found += walk(command) if isinstance(command, click.Group) else [command]
        return found

    commands = walk(cli_main)
    options = [
        (command.name, p)
        for command in commands
        for p in command.params
        if isinstance(p, click.Option) and ("--json" in p.opts or "--dir" in p.opts)
    ]
    assert len(options) >= 8  # submit list show credits status plugins models demo
    assert all(option.help for _, option in options), [n for n, o in options if not o.help]


def test_status_json_gives_the_lock_holders_start_as_iso(offline_cfg: Path, tmp_path: Path) -> None:
    state = tmp_path / "bgh" / "state"
    lock = EngineLock(state)
    assert lock.try_acquire(EngineRole.MCP)  # an assistant's in-process engine
    try:
        data = json.loads(bgh("status", "--json", config=offline_cfg).stdout)
    finally:
        lock.release()
    assert data["engine"]["owner"] == "bygheartd mcp"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["engine"]["since"])


# -- budgets ----------------------------------------------------------------------------


def test_submit_shows_what_is_left_after_each_job(offline_cfg: Path, tmp_path: Path) -> None:
    song = write(tmp_path, "paper-moon.txt", SONG)
    first = bgh("submit", str(song), config=offline_cfg)
    assert "Paper Moon: 1 credit, 29 left today after this job" in first.stdout, first.stdout
    # the first job is still queued: it will be paid first, so it counts
    second = bgh("submit", str(song), config=offline_cfg)
    assert "1 credit, 28 left today after this job" in second.stdout, second.stdout


def test_submit_of_several_files_counts_each_earlier_one_as_spent(
    offline_cfg: Path, tmp_path: Path
) -> None:
    # One read of the queue for the whole batch (the cost per file stays flat however large
    # the store is: bench/submit.py), and still each line counts the jobs queued before it.
    bgh("submit", str(write(tmp_path, "first.txt", SONG)), config=offline_cfg)
    songs = [write(tmp_path, f"song-{n}.txt", SONG) for n in range(3)]
    batch = bgh("submit", *map(str, songs), config=offline_cfg)
    lefts = re.findall(r"1 credit, (\d+) left today after this job", batch.stdout)
    assert lefts == ["28", "27", "26"], batch.stdout


def test_dry_run_says_plainly_when_a_job_will_wait(offline_cfg: Path, tmp_path: Path) -> None:
    big = write(tmp_path, "big.txt", BIG_SONG)
    queued = bgh("submit", str(big), config=offline_cfg)
    assert "16 credits, 14 left today after this job" in queued.stdout, queued.stdout
    dry = bgh("submit", "--dry-run", str(big), config=offline_cfg)
    assert dry.returncode == 0, dry.stderr
    assert "needs 16 credits, 14 left today: it will wait until 00:00 UTC" in dry.stdout
    [row] = json.loads(bgh("submit", "--dry-run", "--json", str(big), config=offline_cfg).stdout)
    assert row["credits"] == 16 and row["credits_left_today"] == 14
    assert row["will_wait_until"].endswith("T00:00:00.000Z")


def test_list_and_show_give_what_was_charged_beside_the_cost(cfg: Path, tmp_path: Path) -> None:
    song = write(tmp_path, "paper-moon.txt", SONG)
    [done] = json.loads(bgh("submit", str(song), "--wait", "--json", config=cfg).stdout)
    other = write(tmp_path, "other.txt", SONG.replace("Paper Moon", "Never Sent"))
    [dropped] = json.loads(bgh("submit", str(other), "--json", config=cfg).stdout)
    assert bgh("cancel", dropped["id"], config=cfg).returncode == 0

    rows = {line.split()[0]: line for line in bgh("list", config=cfg).stdout.splitlines() if line}
    assert re.search(r"\s1\s+\S+ ago", rows[done["id"]]), rows  # charged as it costs
    assert re.search(r"\s0 \(cost 1\)\s+\S+ ago", rows[dropped["id"]]), rows
    shown = bgh("show", dropped["id"], config=cfg).stdout
    assert re.search(r"credits\s+0 \(cost 1\)", shown), shown
    listed = {r["id"]: r for r in json.loads(bgh("list", "--json", config=cfg).stdout)}
    assert (listed[done["id"]]["credits"], listed[done["id"]]["charged"]) == (1, 1)
    assert (listed[dropped["id"]]["credits"], listed[dropped["id"]]["charged"]) == (1, 0)
    record = json.loads(bgh("show", dropped["id"], "--json", config=cfg).stdout)
    assert (record["credits"], record["charged"]) == (1, 0)


# -- MCP --------------------------------------------------------------------------------


@pytest.fixture
async def idle_runtime(make_config: MakeConfig) -> AsyncIterator[Runtime]:
    async with Runtime(make_config(None), role=EngineRole.MCP, engine=False) as rt:
        yield rt


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def generate(runtime: Runtime, **args: Any) -> CallToolResult:
    async with Client(build_server(runtime.service)) as client:
        result = await client.call_tool("generate_song", args)
    assert not result.is_error, text_of(result)
    return result


@pytest.mark.anyio
async def test_generate_song_counts_the_job_it_queued_and_says_when_it_waits(
    idle_runtime: Runtime,
) -> None:
    big = {"lyrics": LYRICS, "model": "bygheart-studio-max", "takes": 4}
    first = await generate(idle_runtime, **big, title="One")
    assert first.structured_content is not None
    assert first.structured_content["credits_left_today"] == 14
    assert "16 credits, 14 left today after this job" in text_of(first)

    second = await generate(idle_runtime, **big, title="Two")
    assert second.structured_content is not None
    assert second.structured_content["credits_left_today"] == 14  # it does not spend today
    assert second.structured_content["budget_hold"] is not None
    assert "needs 16 credits, 14 left today: it will wait until 00:00 UTC" in text_of(second)


@pytest.mark.anyio
async def test_a_deduplicated_request_names_the_existing_job(idle_runtime: Runtime) -> None:
    first = await generate(idle_runtime, lyrics=LYRICS, title="Same")
    again = await generate(idle_runtime, lyrics=LYRICS, title="Same")
    assert first.structured_content is not None
    job_id = first.structured_content["id"]
    assert f"the same request is already job {job_id} (queued)" in text_of(again)
