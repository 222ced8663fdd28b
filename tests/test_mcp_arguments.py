"""What a client sees of the tools' arguments, found by checking the server from the outside
(the MCP Inspector and the official client): an unknown argument name is refused with the
nearest valid one instead of being dropped, a missing one says what to pass, the schemas
and descriptions are ones clients can use, and the prompt names a missing argument.
Official client, in memory, both protocol modes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import TEST_KEY, MakeConfig
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent

from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime

pytestmark = pytest.mark.anyio

MODES = ["legacy", "auto"]
LYRICS = "[Verse]\nNeon rivers run tonight\nWe are shining in the light\n\n[Chorus]\nHold on"


@pytest.fixture
async def idle_runtime(make_config: MakeConfig) -> AsyncIterator[Runtime]:
    """No engine: nothing is sent, so a refused call visibly queues nothing."""
    async with Runtime(make_config(None), role=EngineRole.MCP, engine=False) as rt:
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
    assert await idle_runtime.service.list() == []


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
    assert [job.request["style"] for job in await idle_runtime.service.list()] == ["synth-pop"]


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


@pytest.mark.parametrize("args", [{"style": "pop"}, {"lyrics": "  ", "instrumental": False}])
async def test_no_lyrics_is_said_in_the_tools_words(
    idle_runtime: Runtime, args: dict[str, Any]
) -> None:
    """Not the song file's "after the front matter": the tool has no front matter."""
    async with Client(build_server(idle_runtime.service)) as client:
        result = await client.call_tool("generate_song", args)
    text = text_of(result)
    assert result.is_error and "pass the complete lyrics (or lyrics_file)" in text
    assert "front matter" not in text
    assert await idle_runtime.service.list() == []


async def test_a_refusal_names_the_tool_once(idle_runtime: Runtime) -> None:
    args = {"lyrics": LYRICS, "bpm": 500, "key": "H minor", "duration": 700}
    async with Client(build_server(idle_runtime.service)) as client:
        result = await client.call_tool("generate_song", args)
    text = text_of(result)
    assert result.is_error and text.startswith("Error executing tool generate_song: 3 problems")
    assert text.count("generate_song") == 1
    for key in ("bpm", "key", "duration"):
        assert f"key '{key}'" in text


async def test_a_song_without_a_style_is_warned_in_words_that_fit_the_tool(
    idle_runtime: Runtime,
) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        result = await client.call_tool("generate_song", {"lyrics": LYRICS})
    assert not result.is_error, text_of(result)
    (warning,) = (result.structured_content or {})["warnings"]
    assert warning.startswith("no style:") and "the `style` argument" in warning


async def test_a_typo_is_refused_over_stdio_too(make_config: MakeConfig) -> None:
    """`bygheartd mcp` as clients run it: the refusal comes from the real subprocess."""
    config = make_config(None)
    assert config.source_path is not None
    env = {
        "BYGHEART_API_KEY": TEST_KEY,
        "BYGHEARTD_CONFIG": str(config.source_path),
        "BYGHEARTD_LOAD_PLUGINS": "",
        "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],
        "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "bygheartd", "mcp"], env=env)
    async with Client(params) as client:
        result = await client.call_tool("generate_song", {"lyric": LYRICS, "style": "pop"})
        listed = await client.call_tool("list_songs", {})
    assert result.is_error
    assert "unknown argument 'lyric': did you mean 'lyrics'?" in text_of(result)
    assert (listed.structured_content or {})["jobs"] == []
    assert TEST_KEY not in result.model_dump_json()


async def test_lyrics_without_a_title_are_named_after_the_first_sung_line(
    idle_runtime: Runtime,
) -> None:
    """Not `song-<id>`: the first line that is not a section tag names the song."""
    async with Client(build_server(idle_runtime.service)) as client:
        named = await client.call_tool("generate_song", {"lyrics": LYRICS, "style": "pop"})
        given = await client.call_tool(
            "generate_song", {"lyrics": LYRICS, "style": "rock", "title": "Mine"}
        )
    assert (named.structured_content or {})["title"] == "Neon Rivers Run Tonight"
    assert (given.structured_content or {})["title"] == "Mine"


async def test_an_unknown_job_points_at_list_songs_not_the_cli(idle_runtime: Runtime) -> None:
    """An assistant cannot run `bygheartd list`: it is told about the tool it has, once."""
    async with Client(build_server(idle_runtime.service)) as client:
        replies = [
            text_of(await client.call_tool(tool, {"job_id": "zzzzzzzz"}))
            for tool in ("get_song", "cancel_song", "retry_song")
        ]
        for uri in ("bygheart://songs/zzzzzzzz", "bygheart://songs/zzzzzzzz/takes/1"):
            with pytest.raises(MCPError) as failed:
                await client.read_resource(uri)
            replies.append(failed.value.message)
    for reply in replies:
        assert "no job matches 'zzzzzzzz': list_songs shows the known jobs" in reply, reply
        assert "bygheartd list" not in reply and reply.count("list_songs") == 1


async def test_list_songs_counts_in_words(idle_runtime: Runtime) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        await client.call_tool("generate_song", {"lyrics": LYRICS, "style": "pop"})
        one = text_of(await client.call_tool("list_songs", {}))
        await client.call_tool("generate_song", {"lyrics": LYRICS, "style": "jazz"})
        two = text_of(await client.call_tool("list_songs", {"status": "queued"}))
    assert one.startswith("1 song:\n- ") and two.startswith("2 songs:\n- ")


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("get_song", {"job_id": None}, "job_id is required: give a job id or a unique prefix"),
        ("polish_song", {"lyrics": None}, "no lyrics: pass the lyrics to polish"),
        ("polish_song", {"lyrics": " "}, "for a whole draft from a description, call suggest"),
    ],
)
async def test_a_null_or_empty_argument_is_answered_in_the_tools_words(
    idle_runtime: Runtime, tool: str, args: dict[str, Any], expected: str
) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        result = await client.call_tool(tool, args)
    text = text_of(result)
    assert result.is_error and expected in text, text
    assert text.count(tool) == 1 and "front matter" not in text and "NoneType" not in text
    assert text.count("list_songs") <= 1


async def test_a_polish_refusal_names_the_tool_once(idle_runtime: Runtime) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        result = await client.call_tool("polish_song", {"lyrics": LYRICS, "bpm": "fast"})
    text = text_of(result)
    assert result.is_error and "bpm" in text, text
    assert text.startswith("Error executing tool polish_song: ") and text.count("polish_song") == 1
