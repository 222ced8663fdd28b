"""`bygheartd mcp` as a real subprocess over stdio, the way Claude Desktop and Cursor run it:
nothing but protocol on stdout, an in-process engine, the song in the shared store.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from bygheartd.jobs import JobStatus
from bygheartd.store import Store
from bygheartd.simulator import RunningSimulator
from conftest import TEST_KEY, MakeConfig

pytestmark = pytest.mark.anyio

LYRICS = "[Verse]\nLetters in the static\n\n[Chorus]\nTune me in"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_bygheartd_mcp_makes_a_song_over_stdio(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, mode: str
) -> None:
    config = make_config(simulator)
    assert config.source_path is not None
    env = {
        "BYGHEART_API_KEY": TEST_KEY,
        "BYGHEARTD_CONFIG": str(config.source_path),
        "BYGHEARTD_LOAD_PLUGINS": "",
        "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],
        "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "bygheartd", "mcp"], env=env)
    async with Client(params, mode=mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool(
            "generate_song", {"lyrics": LYRICS, "title": "Static", "wait_seconds": 30}
        )
    assert "generate_song" in tools
    assert not result.is_error, result.content
    song = result.structured_content or {}
    assert song["status"] == "done" and Path(song["files"][0]["path"]).is_file()
    assert TEST_KEY not in result.model_dump_json()
    store = Store.open(config.state_dir)
    try:
        assert store.get(song["id"]).status is JobStatus.DONE
    finally:
        store.close()
