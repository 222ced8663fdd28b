"""What a record says against what happened (design audit findings 3, 9 and 10).

- The sidecar's `sent` is the `/release_task` body as the server received it (plugins'
  changes, seeds, batch size and defaults included; never a key): compared with what the
  real simulator on loopback recorded, after a real `bygheartd submit --wait`.
- `reason` in job records is why a job is held, failed or cancelled: null for a done job,
  whose last line stays in its history.
- A song still queued has an ETA from the history of generated songs and the queue ahead
  of it, the same figure in MCP (real client), `show` (real subprocess) and the song page
  (real HTTP); with no history yet it is null, and the summary says when it comes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TEST_KEY, MakeConfig
from mcp import Client
from mcp.types import CallToolResult, TextContent

from bygheartd.config import Config
from bygheartd.mcp.http import McpHttpServer
from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.service.progress import seconds_text
from bygheartd.simulator import RunningSimulator, SimulatorSettings
from bygheartd.web.app import web_routes

SONG = """---
title: Wire Song
style: warm indie folk
model: bygheart-melody-fast
duration: 20
takes: 2
seed: [7, 8]
key: F# minor
language: en
---
[Verse]
what we said is what they heard
[Chorus]
every field and every word
"""

# A before_submit plugin: its change must be in `sent` (and in `request`).
LOUDER = """
from bygheartd import hookimpl

@hookimpl
def before_submit(request):
    return {"style": request["style"] + ", stadium reverb"}
"""

LYRICS = "[Verse]\nthe queue is long tonight\n[Chorus]\nwe wait our turn"
TOKEN = "eta-web-token-7d2c9e4a1b"


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    # Long enough that a queued song's ETA is over a second once one song is ahead of it.
    return SimulatorSettings(latency=0.7, audio_scale=0.02, seed=5)


def bgh(config: Config, *args: str, plugins: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if plugins:  # `[plugins] paths` decides, not the tests' "no plugins" setting
        env.pop("BYGHEARTD_LOAD_PLUGINS", None)
    assert config.source_path is not None
    cmd = [sys.executable, "-m", "bygheartd", "--config", str(config.source_path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def received_bodies(simulator: RunningSimulator) -> dict[str, dict[str, Any]]:
    """What the simulator received per task id (its `/_sim/tasks` admin route)."""
    reply = httpx.get(f"{simulator.base_url}/_sim/tasks", timeout=10)
    reply.raise_for_status()
    return {t["task_id"]: t["received"] for t in reply.json()["tasks"]}


def test_the_sidecar_sent_is_the_body_the_server_received(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "louder.py").write_text(LOUDER, encoding="utf-8")
    config = make_config(simulator, plugins={"enabled": [], "paths": [str(folder)]})
    song = tmp_path / "wire.txt"
    song.write_text(SONG, encoding="utf-8")

    done = bgh(config, "submit", str(song), "--wait", "--json", plugins=True)
    assert done.returncode == 0, done.stderr
    [record] = json.loads(done.stdout)
    assert record["status"] == "done" and record["reason"] is None
    sidecar_path = Path(record["files"][0]["path"]).with_suffix(".json")
    text = sidecar_path.read_text(encoding="utf-8")
    sidecar = json.loads(text)

    received = received_bodies(simulator)[record["task_id"]]
    assert sidecar["sent"] == received
    sent = sidecar["sent"]
    assert sent["prompt"] == "warm indie folk, stadium reverb"  # the plugin's change
    assert (sent["batch_size"], sent["seed"], sent["use_random_seed"]) == (2, "7,8", False)
    assert (sent["audio_duration"], sent["key_scale"], sent["vocal_language"]) == (
        20,
        "F# minor",
        "en",
    )
    # `request` stays the song request in song-file names, after plugins.
    request = sidecar["request"]
    assert request["style"] == "warm indie folk, stadium reverb"
    assert request["takes"] == 2 and "batch_size" not in request
    assert TEST_KEY not in text and "ai_token" not in sent

    shown = bgh(config, "show", "--json", record["id"])
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["sent"] == received and detail["reason"] is None
    # The done line is kept where it belongs: the history.
    assert re.match(r"\d+ files? in ", detail["history"][-1]["reason"] or "")
    [listed] = json.loads(bgh(config, "list", "--json").stdout)
    assert listed["status"] == "done" and listed["reason"] is None


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def tool(client: Client, name: str, **args: Any) -> tuple[dict[str, Any], str]:
    result = await client.call_tool(name, args)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content, text_of(result)


@pytest.mark.anyio
async def test_a_queued_song_has_no_eta_before_any_song_was_generated(
    make_config: MakeConfig,
) -> None:
    idle = Runtime(make_config(None), role=EngineRole.MCP, engine=False)
    async with idle, Client(build_server(idle.service)) as client:
        record, text = await tool(client, "generate_song", lyrics=LYRICS, style="folk")
        got, got_text = await tool(client, "get_song", job_id=record["id"])
    assert record["status"] == "queued" and record["eta_seconds"] is None
    assert "its ETA comes once it runs" in text
    assert got["eta_seconds"] is None and "its ETA comes once it runs" in got_text


@pytest.mark.anyio
async def test_a_queued_song_has_an_eta_from_the_history_and_the_songs_ahead(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    token_file = tmp_path / "web-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    config = make_config(
        simulator,
        queue={"max_in_flight": 1},
        mcp={"http": False, "port": 0, "token_file": str(token_file)},
        web={"enabled": True},
    )
    song = {"lyrics": LYRICS, "style": "folk", "duration": 20}
    runtime = Runtime(config, role=EngineRole.MCP, engine=True)
    async with runtime, Client(build_server(runtime.service)) as client:
        made, _ = await tool(client, "generate_song", title="First", **song, wait_seconds=30)
    assert made["status"] == "done" and made["reason"] is None

    async with Runtime(config, role=EngineRole.MCP, engine=False) as idle:
        # What the engine's predictions start from: the one song generated so far.
        [(_, _, seconds)] = await idle.service.store.recent_generations()
        async with Client(build_server(idle.service)) as client:
            first, first_text = await tool(client, "generate_song", title="Second", **song)
            second, second_text = await tool(client, "generate_song", title="Third", **song)
            got, got_text = await tool(client, "get_song", job_id=second["id"])
            listed, _ = await tool(client, "list_songs", status="queued")
        # One place in flight: the first waits one generation, the second two.
        assert first["eta_seconds"] == pytest.approx(seconds, abs=0.06)
        assert second["eta_seconds"] == pytest.approx(2 * seconds, abs=0.06)
        assert got["eta_seconds"] == second["eta_seconds"]
        assert "expected to be generated in about" in first_text
        assert "expected to be generated in about" in second_text + got_text
        assert {j["id"]: j["eta_seconds"] for j in listed["jobs"]} == {
            first["id"]: first["eta_seconds"],
            second["id"]: second["eta_seconds"],
        }
        assert all(j["reason"] is None for j in listed["jobs"])

        # The song page says the same, and no longer shows a done song's last line.
        server = McpHttpServer(
            idle.service,
            mcp=False,
            extra_routes=lambda token: web_routes(idle.service, token, poll_seconds=0.05),
        )
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
                code = await idle.service.logins.new_code()
                assert (await http.get(f"/login?code={code}")).status_code == 303
                page = await http.get(f"/songs/{second['id']}", headers={"Accept": "text/html"})
                done_page = await http.get(f"/songs/{made['id']}", headers={"Accept": "text/html"})
        finally:
            await server.stop()
    assert page.status_code == 200 and done_page.status_code == 200
    left = f"~{seconds_text(2 * seconds)} left"  # `~2 s left`, as every face words it
    found = re.search(r'id="song-eta">([^<]*)<', page.text)
    assert found is not None and found.group(1) == left
    assert 'id="song-reason"' not in done_page.text

    # `show` (a real subprocess) gives the queued song the same ETA.
    shown = bgh(config, "show", "--json", second["id"])
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["eta_seconds"] == pytest.approx(2 * seconds, abs=0.06)
    assert detail["sent"] is None  # never submitted
    assert f"queued {left}" in bgh(config, "show", second["id"]).stdout
    records = {r["id"]: r for r in json.loads(bgh(config, "list", "--json").stdout)}
    assert records[first["id"]]["eta_seconds"] == first["eta_seconds"]
    assert records[made["id"]]["eta_seconds"] is None and records[made["id"]]["reason"] is None
