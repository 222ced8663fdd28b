"""Words a user reads (audit 2026-12-07, F14): "1 credit", never "1 credits"; a folder
given to `submit` is called a folder, with what to type instead; a song-file value of the
wrong kind is "a whole number", never "a int".

Real `python -m bygheartd` subprocesses against the simulator, like tests/test_cli.py (and
MCP's `get_credits` over the same store).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_KEY, MakeConfig
from mcp import Client
from mcp.types import TextContent

from bygheartd.config import Config
from bygheartd.errors import RequestError
from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator
from bygheartd.songs.request import RequestRules, SongRequest

SONG = """---
title: {title}
style: warm indie folk, male vocal
model: bygheart-melody-fast
duration: 20
---
[Verse]
paper moon above the harbour
"""
# "1 credits", "a int", "1 file(s)": the slips this file keeps out.
SLIPS = re.compile(r"\b1 (credits|jobs|files|takes|seeds)\b|\ba int\b|\b1 \w+\(s\)")


def bgh(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    assert config.source_path is not None
    env = {
        **os.environ,
        "BYGHEART_API_KEY": TEST_KEY,
        "BYGHEARTD_LOAD_PLUGINS": "",
        "COLUMNS": "250",
    }
    command = [sys.executable, "-m", "bygheartd", *args, "--config", str(config.source_path)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def no_slips(text: str) -> None:
    assert not SLIPS.search(text), text


@pytest.mark.anyio
async def test_credits_say_one_credit_used(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator, budget={"plan": "ultimate"})
    song = tmp_path / "paper-moon.txt"
    song.write_text(SONG.format(title="Paper Moon"), encoding="utf-8")
    made = bgh(config, "submit", str(song), "--wait")
    assert made.returncode == 0, made.stderr
    shown = bgh(config, "credits")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"today \(\S+\): 1 credit used, no daily cap", shown.stdout), shown.stdout
    assert re.search(r"this month \(\S+\): 1 credit used\n", shown.stdout), shown.stdout
    no_slips(shown.stdout + made.stdout + made.stderr)
    async with (
        Runtime(config, role=EngineRole.MCP, engine=False) as runtime,
        Client(build_server(runtime.service)) as client,
    ):
        result = await client.call_tool("get_credits", {})
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    assert "Plan ultimate: no daily cap; 1 credit used this month." in text, text


@pytest.mark.parametrize("dry_run", [False, True])
def test_submit_a_folder_says_it_is_a_folder_and_what_to_type(
    make_config: MakeConfig, tmp_path: Path, dry_run: bool
) -> None:
    config = make_config(None)
    folder = tmp_path / "my songs"
    folder.mkdir()
    for name in ("one.txt", "two.txt", "notes.md"):
        (folder / name).write_text(SONG.format(title=name), encoding="utf-8")
    result = bgh(config, "submit", f"{folder}/", *(["--dry-run"] if dry_run else []))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: {folder}: is a folder, not a song file" in result.stderr
    # The extension most of its files have, the path quoted for a shell, and the inbox.
    assert f"`bygheartd submit {shlex.quote(str(folder))}/*.txt`" in result.stderr
    assert f"drop them into the inbox ({config.folders.inbox})" in result.stderr
    assert "no extension" not in result.stderr
    assert "1 of 1 file refused" in result.stderr
    no_slips(result.stderr)


def test_submit_an_empty_folder_suggests_markdown_song_files(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(None)
    folder = tmp_path / "empty"
    folder.mkdir()
    result = bgh(config, "submit", str(folder), "--json")
    assert result.returncode == 1 and json.loads(result.stdout) == []
    [refusal] = [json.loads(line) for line in result.stderr.splitlines()]
    assert "is a folder, not a song file" in json.dumps(refusal)
    assert f"bygheartd submit {folder}/*.md" in json.dumps(refusal)


def test_a_number_where_lyrics_go_is_called_a_whole_number(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(None)
    song = tmp_path / "numbers.json"
    song.write_text(json.dumps({"title": "x", "style": "pop", "lyrics": 5}), encoding="utf-8")
    text = tmp_path / "title.yaml"
    text.write_text("title: [a, b]\nstyle: pop\nlyrics: la la\n", encoding="utf-8")
    result = bgh(config, "submit", str(song), str(text), "--dry-run")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "lyrics must be text, not a whole number" in result.stderr
    assert "title must be text, not a list" in result.stderr
    assert "2 of 2 files refused: fix them and submit them again" in result.stderr
    no_slips(result.stderr)


def test_a_job_over_the_cap_in_one_take_names_one_take_and_a_cheaper_model() -> None:
    rules = RequestRules(backend="bygheart", max_job_credits=3)
    data = {"model": "bygheart-composer-lab", "takes": 1, "lyrics": "la la", "style": "pop"}
    with pytest.raises(RequestError) as info:
        SongRequest.build(data, rules, source="song.txt")
    assert info.value.reason == (
        "this job costs 4 credits (bygheart-composer-lab: 4 × 1 take), more than the daily cap of 3"
    )
    assert info.value.hint == "use a cheaper model (bygheart-melody-fast costs 1 credit a take)"
