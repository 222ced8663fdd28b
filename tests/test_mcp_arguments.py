"""What a client sees of the tools' arguments, found by checking the server from the outside
(the MCP Inspector and the official client): an unknown argument name is refused with the
nearest valid one instead of being dropped, a missing one says what to pass, the schemas
and descriptions are ones clients can use, and the prompt names a missing argument.
Official client, in memory, both protocol modes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import TEST_KEY, MakeConfig
from mcp import Client, MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent

from bygheartd.mcp.server import build_server
from bygheartd.service.runtime import Runtime

pytestmark = pytest.mark.anyio

MODES = ["legacy", "auto"]
LYRICS = "[Verse]\nNeon rivers run tonight\nWe are shining in the light\n\n[Chorus]\nHold on"


@pytest.fixture
async def idle_runtime(make_config: MakeConfig) -> AsyncIterator[Runtime]:
    """No engine: nothing is sent, so a refused call visibly queues nothing."""
    async with Runtime(make_config(None), owner="test", engine=False) as rt:
        yield rt


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("generate_song", {"lyric": LYRICS, "style": "pop"}, "'lyric': did you mean 'lyrics'?"),
        ("generate_song", {"lyrics": LYRICS, "stlye": "pop"}, "'stlye': did you mean 'style'?"),
        ("generate_song", {"lyrics": LYRICS, "tempo": 120}, "'tempo': did you mean 'bpm'?"),
        ("generate_song", {"lyrics": LYRICS, "Title": "x"}, "'Title': did you mean 'title'?"),
        ("get_song", {"job": "abcdef"}, "'job': did you mean 'job_id'?"),
        ("get_song", {"job_id": "abcdef", "wait": 5}, "'wait': did you mean 'wait_seconds'?"),
        ("list_songs", {"statuses": "done"}, "'statuses': did you mean 'status'?"),
        ("get_credits", {"month": "2026-12"}, "'month': it takes no arguments"),
        ("polish_song", {"lyrics": LYRICS, "zzz": 1}, "'zzz': the arguments are lyrics, style"),
    ],
)
async def test_an_unknown_argument_is_refused_with_the_nearest_name(
    idle_runtime: Runtime, mode: str, tool: str, args: dict[str, Any], expected: str
) -> None:
    """The SDK would drop it and run the tool without it: a song without its style."""
    async with Client(build_server(idle_runtime.service), mode=mode) as client:
        result = await client.call_tool(tool, args)
    assert result.is_error
    assert f"unknown argument {expected}" in text_of(result), text_of(result)
    assert idle_runtime.service.list() == []


async def test_every_unknown_argument_is_named_at_once(idle_runtime: Runtime) -> None:
    args = {"lyric": LYRICS, "stlye": "pop", "bpm": 120, "wait": 1}
    async with Client(build_server(idle_runtime.service)) as client:
        result = await client.call_tool("generate_song", args)
    text = text_of(result)
    assert result.is_error and "3 problems" in text
    for name, near in (("lyric", "lyrics"), ("stlye", "style"), ("wait", "wait_seconds")):
        assert f"unknown argument '{name}': did you mean '{near}'?" in text
    assert "'bpm'" not in text.replace("'bpm'?", "")  # a valid name is not a problem


async def test_known_arguments_still_work(idle_runtime: Runtime) -> None:
    args = {"lyrics": LYRICS, "style": "synth-pop", "bpm": "120", "wait_seconds": 0}
    async with Client(build_server(idle_runtime.service)) as client:
        result = await client.call_tool("generate_song", args)
    assert not result.is_error, text_of(result)
    assert [job.request["style"] for job in idle_runtime.service.list()] == ["synth-pop"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_missing_argument_says_what_to_pass(idle_runtime: Runtime, mode: str) -> None:
    async with Client(build_server(idle_runtime.service), mode=mode) as client:
        result = await client.call_tool("get_song", {})
        polish = await client.call_tool("polish_song", {"style": "pop"})
    text = text_of(result)
    assert result.is_error and "job_id is required: a job id or a unique prefix" in text
    assert "lyrics is required: the lyrics with section tags" in text_of(polish)
    for reply in (text, text_of(polish)):
        assert "Field required" not in reply and "pydantic" not in reply.lower()


@pytest.mark.parametrize("mode", MODES)
async def test_schemas_and_descriptions_are_ones_clients_can_use(
    idle_runtime: Runtime, mode: str
) -> None:
    async with Client(build_server(idle_runtime.service), mode=mode) as client:
        tools = (await client.list_tools()).tools
        templates = (await client.list_resource_templates()).resource_templates
        instructions = client.instructions
    for tool in tools:
        schema = tool.input_schema
        assert schema.get("additionalProperties") is False, tool.name
        for name, spec in schema.get("properties", {}).items():
            assert spec.get("description"), f"{tool.name}.{name} has no description"
        # One paragraph per line: no hard breaks from the docstring's wrapping.
        assert tool.description and "\n" not in tool.description, tool.name
    for template in templates:
        assert template.description and "\n" not in template.description, template.name
    by_name = {t.name: t for t in tools}
    for tool in ("generate_song", "get_song"):
        wait = by_name[tool].input_schema["properties"]["wait_seconds"]
        assert wait["type"] == "number" and "anyOf" not in wait
    assert instructions and "\n" not in instructions


async def test_a_numeric_wait_as_text_is_still_accepted(idle_runtime: Runtime) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        queued = await client.call_tool("generate_song", {"lyrics": LYRICS, "style": "pop"})
        job = (queued.structured_content or {})["id"]
        result = await client.call_tool("get_song", {"job_id": job, "wait_seconds": "0"})
    assert not result.is_error, text_of(result)


@pytest.mark.parametrize("mode", MODES)
async def test_the_prompt_describes_its_arguments_and_names_a_missing_one(
    idle_runtime: Runtime, mode: str
) -> None:
    async with Client(build_server(idle_runtime.service), mode=mode) as client:
        (prompt,) = (await client.list_prompts()).prompts
        assert prompt.arguments and all(a.description for a in prompt.arguments)
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("write_song", {})
        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("write_song", {"topic": "rain", "gnre": "pop"})
        ok = await client.get_prompt("write_song", {"topic": "rain", "genre": "pop"})
    assert missing.value.code == INVALID_PARAMS
    assert "topic is required (what the song is about" in missing.value.message
    assert "unknown argument 'gnre': did you mean 'genre'?" in unknown.value.message
    assert "rain" in str(ok.messages[0].content)


async def test_refusals_never_carry_the_key(idle_runtime: Runtime) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        replies = [
            await client.call_tool("generate_song", {"api_key": TEST_KEY, "lyrics": LYRICS}),
            await client.call_tool("get_song", {}),
        ]
    for reply in replies:
        assert reply.is_error
        assert TEST_KEY not in text_of(reply)
