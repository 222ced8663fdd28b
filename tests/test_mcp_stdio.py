"""`bygheartd mcp` as a real subprocess over stdio, the way Claude Desktop and Cursor run it:
nothing but protocol on stdout, an in-process engine, the song in the shared store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TEST_KEY, MakeConfig
from mcp import Client, StdioServerParameters

from bygheartd.jobs import JobStatus
from bygheartd.simulator import RunningSimulator, SimulatorSettings
from bygheartd.store.store import Store

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
        version = client.protocol_version
        tools = {t.name for t in (await client.list_tools()).tools}
        view = await client.read_resource("ui://bygheartd/song.html")
        result = await client.call_tool(
            "generate_song", {"lyrics": LYRICS, "title": "Static", "wait_seconds": 30}
        )
    # The current protocol, and the older one that many clients still speak.
    assert version == {"legacy": "2025-11-25", "auto": "2026-07-28"}[mode]
    assert view.contents[0].mime_type == "text/html;profile=mcp-app"  # the package's view
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


def test_stdout_carries_only_protocol_and_logs_go_to_stderr(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    config = make_config(simulator)
    env = dict(os.environ, BYGHEARTD_CONFIG=str(config.source_path))
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "get_credits", "arguments": {}},
        },
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bygheartd", "mcp", "--log-level", "info"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
    proc.stdin.flush()
    lines = [proc.stdout.readline() for _ in range(3)]  # the replies to 1, 2 and 3
    rest, stderr = proc.communicate(timeout=60)  # closes stdin: the client is gone
    stdout = "".join(lines) + rest
    replies = [json.loads(line) for line in stdout.splitlines()]
    assert [r.get("id") for r in replies] == [1, 2, 3], stdout
    assert all(r["jsonrpc"] == "2.0" and "result" in r for r in replies)
    assert "engine running in this process" in stderr
    assert TEST_KEY not in stdout + stderr
    assert proc.returncode == 0, stderr


@pytest.mark.parametrize(
    "sim_settings", [SimulatorSettings(latency=3.0, audio_scale=0.02, seed=1)], ids=["3s"]
)
def test_a_song_in_flight_is_finished_when_the_client_closes(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    """An assistant that closes `bygheartd mcp` while its song generates (no daemon
    running) does not leave it half made until some engine next starts."""
    config = make_config(simulator)
    env = dict(os.environ, BYGHEARTD_CONFIG=str(config.source_path))
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    make = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "generate_song", "arguments": {"lyrics": LYRICS, "title": "Static"}},
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bygheartd", "mcp", "--log-level", "info"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(json.dumps(m) + "\n" for m in (hello, initialized, make)))
    proc.stdin.flush()
    replies = [json.loads(proc.stdout.readline()) for _ in range(2)]
    job_id = replies[1]["result"]["structuredContent"]["id"]
    store = Store.open(config.state_dir)
    try:
        deadline = time.monotonic() + 30
        while store.get(job_id).status is not JobStatus.RUNNING:  # paid for, generating
            assert time.monotonic() < deadline, store.get(job_id).status
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=60)  # closes stdin: the client is gone
        assert proc.returncode == 0, stderr
        assert "finishing 1 song in flight before exiting" in stderr
        done = store.get(job_id)
    finally:
        store.close()
    assert done.status is JobStatus.DONE, done.reason
    assert all(f.path.is_file() for f in done.files)


def test_only_the_mcp_modules_import_mcp() -> None:
    """`import mcp` costs over a second: `bygheartd list` must never pay for it."""
    code = (
        "import pkgutil, importlib, sys, bygheartd\n"
        "for m in pkgutil.walk_packages(bygheartd.__path__, 'bygheartd.'):\n"
        # The MCP face's own modules; records and arguments stay plain (the CLI uses them).
        "    plain = m.name in ('bygheartd.mcp.records', 'bygheartd.mcp.arguments')\n"
        "    skip = m.name.startswith('bygheartd.mcp.') and not plain\n"
        "    if not skip and not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n == 'mcp' or n.startswith('mcp.'))[:3])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
