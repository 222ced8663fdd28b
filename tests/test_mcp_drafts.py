"""The MCP tools and resources of issue 14 through the official client, in memory, in both
protocol modes: suggest_song, polish_song, get_guide, tidy descriptions, and finished
songs that link their takes as readable audio (and the library page when it is on).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeConfig
from mcp import Client
from mcp.types import (
    BlobResourceContents,
    CallToolResult,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from bygheartd import catalog
from bygheartd.mcp import server as mcp_server
from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator, SimulatorSettings, run_in_thread
from bygheartd.songs.songfile import parse_song_text

pytestmark = pytest.mark.anyio

MODES = ["legacy", "auto"]
LYRICS = "[Verse]\nNeon rivers run tonight\nWe are shining in the light\n\n[Chorus]\nHold on"


@pytest.fixture
async def runtime(simulator: RunningSimulator, make_config: MakeConfig) -> AsyncIterator[Runtime]:
    async with Runtime(
        make_config(simulator), role=EngineRole.MCP, engine=True, release_when_idle=30
    ) as rt:
        yield rt


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


@pytest.mark.parametrize("mode", MODES)
async def test_no_description_line_starts_with_spaces(runtime: Runtime, mode: str) -> None:
    async with Client(build_server(runtime.service), mode=mode) as client:
        tools = (await client.list_tools()).tools
        templates = (await client.list_resource_templates()).resource_templates
        resources = (await client.list_resources()).resources
        prompts = (await client.list_prompts()).prompts
    described = [*tools, *templates, *resources, *prompts]
    assert len(described) >= 14
    for item in described:
        assert item.description, item.name
        for line in item.description.splitlines():
            assert line == line.lstrip(), f"{item.name}: {line!r}"


@pytest.mark.parametrize("mode", MODES)
async def test_suggest_song_returns_a_draft_that_generate_song_takes(
    runtime: Runtime, simulator: RunningSimulator, mode: str
) -> None:
    async with Client(build_server(runtime.service), mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool(
            "suggest_song", {"description": "a bittersweet song about leaving a small town"}
        )
        draft = structured(result)
        assert simulator.sim.stats.submit_attempts == 0  # it spent nothing
        fields = draft["draft"]
        args = {k: v for k, v in fields.items() if v is not None and k != "instrumental"}
        queued = structured(await client.call_tool("generate_song", args))
    annotations = tools["suggest_song"].annotations
    assert annotations is not None
    assert annotations.read_only_hint is True and annotations.destructive_hint is False
    assert fields["title"] == "Bittersweet Song about Leaving"  # as a Simple-mode song is named
    assert fields["lyrics"] and "[Chorus]" in fields["lyrics"]
    request = parse_song_text(draft["song_file"], name="draft.md")
    assert request.style == fields["style"] and request.bpm == fields["bpm"]
    assert "generate_song" in text_of(result) and draft["song_file"] in text_of(result)
    assert queued["title"] == fields["title"]


async def test_suggest_song_instrumental_and_the_servers_examples(runtime: Runtime) -> None:
    async with Client(build_server(runtime.service)) as client:
        quiet = structured(
            await client.call_tool("suggest_song", {"description": "rain", "instrumental": "yes"})
        )
        example = structured(await client.call_tool("suggest_song", {}))
    assert quiet["draft"]["instrumental"] is True and quiet["draft"]["lyrics"] is None
    assert example["draft"]["title"] and example["draft"]["style"]


@pytest.mark.parametrize("backend", ["bygheart", "acestep"])
async def test_a_backend_without_its_lm_gets_a_message_to_act_on(
    make_config: MakeConfig, backend: str
) -> None:
    settings = SimulatorSettings(backend=backend, latency=0.1, lm_helpers=False)
    with run_in_thread(settings) as sim:
        extra: dict[str, Any] = {"api": {"backend": backend}}
        if backend == "acestep":
            extra["defaults"] = {"model": ""}
        async with Runtime(make_config(sim, **extra), role=EngineRole.MCP, engine=False) as rt:
            results = await _call_both(rt)
    for result in results:
        assert result.is_error
        text = text_of(result)
        assert "does not offer inspiration and polish" in text
        assert "generate_song with `description`" in text


async def _call_both(rt: Runtime) -> list[CallToolResult]:
    async with Client(build_server(rt.service)) as client:
        return [
            await client.call_tool("suggest_song", {"description": "x"}),
            await client.call_tool("polish_song", {"lyrics": LYRICS, "style": "pop"}),
        ]


async def test_polish_song_returns_before_after_and_the_changes(runtime: Runtime) -> None:
    messy = "[verse]\nneon   rivers run tonight\n[ chorus ]\nhold on"
    async with Client(build_server(runtime.service)) as client:
        result = await client.call_tool(
            "polish_song", {"lyrics": messy, "style": "synthwave, Synthwave", "bpm": 110}
        )
        bad = await client.call_tool("polish_song", {"lyrics": LYRICS, "bpm": 999})
    data = structured(result)
    assert data["before"]["lyrics"] == messy
    assert data["after"]["lyrics"] == "[Verse]\nNeon rivers run tonight\n\n[Chorus]\nHold on"
    assert data["after"]["bpm"] == 110 and data["after"]["style"].startswith("synthwave")
    assert "+[Chorus]" in data["changes"]
    parse_song_text(data["song_file"], name="p.md")
    assert bad.is_error and "bpm" in text_of(bad)


async def test_get_guide_is_the_guide_as_a_tool_result(runtime: Runtime) -> None:
    async with Client(build_server(runtime.service)) as client:
        result = await client.call_tool("get_guide", {})
    assert not result.is_error
    assert text_of(result) == catalog.data_text("guide.md")
    assert result.structured_content is None and len(result.content) == 1  # once, not twice


@pytest.mark.parametrize("mode", MODES)
async def test_a_finished_song_links_its_takes_as_readable_audio(
    runtime: Runtime, mode: str
) -> None:
    async with Client(build_server(runtime.service), mode=mode) as client:
        templates = (await client.list_resource_templates()).resource_templates
        done = await client.call_tool(
            "generate_song", {"lyrics": LYRICS, "takes": 2, "wait_seconds": 30}
        )
        record = structured(done)
        assert record["status"] == "done", text_of(done)
        links = [c for c in done.content if isinstance(c, ResourceLink)]
        got = await client.call_tool("get_song", {"job_id": record["id"]})
        again = [c for c in got.content if isinstance(c, ResourceLink)]
        blobs = [await client.read_resource(str(link.uri)) for link in links]
        missing = await _read_error(client, f"bygheart://songs/{record['id']}/takes/3")
    assert "bygheart://songs/{job_id}/takes/{n}" in [t.uri_template for t in templates]
    assert [str(link.uri) for link in links] == [
        f"bygheart://songs/{record['id']}/takes/{n}" for n in (1, 2)
    ]
    assert [str(link.uri) for link in again] == [str(link.uri) for link in links]
    for link, file, read in zip(links, record["files"], blobs, strict=True):
        assert link.mime_type == "audio/mpeg" and link.size == file["size"]
        assert link.name == Path(file["path"]).name
        content = read.contents[0]
        assert isinstance(content, BlobResourceContents)
        assert content.mime_type == "audio/mpeg"
        assert base64.b64decode(content.blob) == Path(file["path"]).read_bytes()
    assert "takes 1 to 2" in missing
    # No library page unless [web] enabled.
    assert "/songs/" not in text_of(done)


async def _read_error(client: Client, uri: str) -> str:
    try:
        await client.read_resource(uri)
    except Exception as exc:  # the client raises the server's error
        return str(exc)
    raise AssertionError(f"{uri} was readable")


async def test_a_take_over_the_size_limit_is_its_size_and_path(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Client(build_server(runtime.service)) as client:
        record = structured(
            await client.call_tool("generate_song", {"lyrics": LYRICS, "wait_seconds": 30})
        )
        monkeypatch.setattr(mcp_server, "TAKE_BLOB_LIMIT", 10)
        read = await client.read_resource(f"bygheart://songs/{record['id']}/takes/1")
        queued = structured(await client.call_tool("generate_song", {"lyrics": LYRICS + "\nx"}))
        early = await _read_error(client, f"bygheart://songs/{queued['id']}/takes/1")
    content = read.contents[0]
    assert isinstance(content, TextResourceContents)
    assert record["files"][0]["path"] in content.text and "bytes" in content.text
    assert "readable once it is done" in early


async def test_the_library_page_is_linked_when_the_web_is_on(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    config = make_config(simulator, web={"enabled": True}, mcp={"port": 8799})
    async with (
        Runtime(config, role=EngineRole.MCP, engine=True, release_when_idle=30) as rt,
        Client(build_server(rt.service)) as client,
    ):
        done = await client.call_tool("generate_song", {"lyrics": LYRICS, "wait_seconds": 30})
    record = structured(done)
    assert f"http://127.0.0.1:8799/songs/{record['id']}" in text_of(done)


async def test_generate_song_still_deduplicates_with_links(runtime: Runtime) -> None:
    async with Client(build_server(runtime.service)) as client:
        first = structured(
            await client.call_tool("generate_song", {"lyrics": LYRICS, "wait_seconds": 30})
        )
        again = await client.call_tool("generate_song", {"lyrics": LYRICS})
    second = structured(again)
    assert second["id"] == first["id"] and second["deduplicated"] is True
    assert [c for c in again.content if isinstance(c, ResourceLink)]
