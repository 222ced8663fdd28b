"""The MCP tools, resources and prompt through the official client, in memory, against a
runtime whose engine talks to the simulator. Both protocol modes: "legacy" (2025-11-25,
initialize handshake) and the default modern mode.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import TEST_KEY, MakeConfig
from mcp import Client
from mcp.types import CallToolResult, TextContent, TextResourceContents

from bygheartd import catalog
from bygheartd.engine.budget import Budget
from bygheartd.engine.lock import EngineLock, EngineRole
from bygheartd.jobs import JobStatus, utcnow
from bygheartd.mcp import arguments
from bygheartd.mcp.server import MAX_WAIT_SECONDS, build_server, sentences
from bygheartd.runtime import Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

MODES = ["legacy", "auto"]
LYRICS = "[Verse]\nNeon rivers run tonight\nWe are shining in the light\n\n[Chorus]\nHold on"
VERSE_LYRICS = "[Verse]\nNeon rivers run tonight\nWe are shining in the light\n"


@pytest.fixture
async def runtime(simulator: RunningSimulator, make_config: MakeConfig) -> AsyncIterator[Runtime]:
    config = make_config(simulator)
    async with Runtime(config, role=EngineRole.MCP, engine=True, release_when_idle=30.0) as rt:
        yield rt


@pytest.fixture
async def idle_runtime(make_config: MakeConfig) -> AsyncIterator[Runtime]:
    """No engine: jobs stay queued, so cancel/retry/holds can be looked at calmly."""
    async with Runtime(make_config(None), role=EngineRole.MCP, engine=False) as rt:
        yield rt


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def call(runtime: Runtime, tool: str, args: dict[str, Any] | None = None) -> CallToolResult:
    async with Client(build_server(runtime.service)) as client:
        return await client.call_tool(tool, args or {})


async def generate(client: Client, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("generate_song", args)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def test_the_pinned_tools_are_listed_with_their_annotations(idle_runtime: Runtime) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {
        "generate_song",
        "get_song",
        "list_songs",
        "cancel_song",
        "retry_song",
        "keep_take",
        "make_album",
        "extend_song",
        "make_stems",
        "describe_audio",
        "get_credits",
        "list_models",
        "suggest_song",
        "polish_song",
        "get_guide",
    }
    generate = tools["generate_song"].annotations
    assert generate is not None
    assert generate.read_only_hint is False and generate.idempotent_hint is True
    for name in ("get_song", "list_songs", "get_credits", "list_models", "get_guide"):
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is True, name
    for name in ("cancel_song", "retry_song", "keep_take"):
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is False, name
    assert all(t.output_schema for name, t in tools.items() if name != "get_guide")
    assert tools["get_guide"].output_schema is None  # plain text: the guide is sent once


async def test_generate_song_declares_ranges_and_enums_for_the_backend(
    idle_runtime: Runtime,
) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    props = tools["generate_song"].input_schema["properties"]

    def branch(name: str) -> dict[str, Any]:
        return next(b for b in props[name]["anyOf"] if b.get("type") != "null")

    assert (branch("bpm")["minimum"], branch("bpm")["maximum"]) == (30, 200)
    assert props["model"]["examples"] == list(catalog.HOSTED_MODELS)[:3]
    assert "4" in props["time_signature"]["examples"]
    assert "A minor" in props["key"]["examples"]
    assert (props["takes"]["minimum"], props["takes"]["maximum"]) == (1, 8)
    assert "50" in props["wait_seconds"]["description"]


async def test_the_schema_does_not_forbid_what_song_files_accept(idle_runtime: Runtime) -> None:
    """No enum for key or time signature: `Am` and `6/8` are valid, as in song files."""
    async with Client(build_server(idle_runtime.service)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    props = tools["generate_song"].input_schema["properties"]
    for name in ("key", "time_signature", "language", "model"):
        assert "enum" not in json.dumps(props[name]), name
    assert "maximum" not in json.dumps(props["wait_seconds"])


@pytest.mark.parametrize(
    ("spelling", "sent"),
    [
        ({"key": "Am"}, {"key": "A minor"}),
        ({"key": "F♯ minor"}, {"key": "F# minor"}),
        ({"time_signature": "6/8"}, {"time_signature": "6"}),
        ({"bpm": "124 bpm"}, {"bpm": 124}),
        ({"language": "English"}, {"language": "en"}),
        ({"model": "studio-pro"}, {"model": "bygheart-studio-pro"}),
        ({"duration": "3:30"}, {"duration": 210.0}),
        ({"instrumental": "yes", "lyrics": None}, {"instrumental": True}),
    ],
)
async def test_tool_arguments_accept_the_spellings_song_files_accept(
    idle_runtime: Runtime, spelling: dict[str, Any], sent: dict[str, Any]
) -> None:
    args = {"lyrics": LYRICS, **spelling}
    song = structured(
        await call(idle_runtime, "generate_song", {k: v for k, v in args.items() if v})
    )
    body = (await idle_runtime.service.get(song["id"])).request
    assert {k: body.get(k) for k in sent} == sent


@pytest.mark.parametrize("mode", MODES)
async def test_generate_waits_with_rising_progress_until_the_file_exists(
    runtime: Runtime, mode: str
) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        assert total == 1.0 and message
        progress.append(value)

    async with Client(build_server(runtime.service), mode=mode) as client:
        result = await client.call_tool(
            "generate_song",
            {"lyrics": LYRICS, "style": "synthwave", "title": "Neon Rivers", "wait_seconds": 30},
            progress_callback=on_progress,
        )
    song = structured(result)
    assert song["status"] == "done", song
    assert song["title"] == "Neon Rivers" and song["cost"] == 2 and song["credits"] == 2
    assert song["deduplicated"] is False and song["budget_hold"] is None
    assert song["lyrics_sha256"] == hashlib.sha256(LYRICS.encode()).hexdigest()
    assert song["lyrics_lines"] == 5
    assert song["credits_left_today"] == 28  # counts the job just queued (2 credits)
    path = Path(song["files"][0]["path"])
    assert path.is_absolute() and path.is_file()
    assert song["files"][0]["uri"] == path.as_uri()
    assert progress and progress == sorted(set(progress)) and progress[-1] <= 1.0
    assert all(round(value, 4) == value for value in progress), progress  # no float noise
    assert "Neon Rivers" in text_of(result) and str(path) in text_of(result)


async def test_the_same_request_again_returns_the_existing_job(idle_runtime: Runtime) -> None:
    args = {"lyrics": LYRICS, "style": "pop", "title": "Twice"}
    first = structured(await call(idle_runtime, "generate_song", args))
    second = await call(idle_runtime, "generate_song", args)
    assert structured(second)["id"] == first["id"]
    assert structured(second)["deduplicated"] is True
    assert "Not queued again" in text_of(second)
    assert "pass a new `seed` or an `idempotency_key`" in text_of(second)  # how to, then
    assert len(await idle_runtime.service.list()) == 1


async def test_the_job_id_examples_look_like_real_ids(idle_runtime: Runtime) -> None:
    from bygheartd.mcp.server import build_server

    first = structured(await call(idle_runtime, "generate_song", {"lyrics": LYRICS}))
    async with Client(build_server(idle_runtime.service)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    examples = tools["get_song"].input_schema["properties"]["job_id"]["examples"]
    assert len(examples[0]) == len(first["id"])  # a whole id, then a prefix
    assert all(e.isalnum() and e.islower() for e in examples)


async def test_an_idempotency_key_always_maps_to_one_job(idle_runtime: Runtime) -> None:
    args = {"lyrics": LYRICS, "key": "A minor", "idempotency_key": "k-1"}
    async with Client(build_server(idle_runtime.service)) as client:
        first = await generate(client, **args)
        # The same request (the same normalised values, in another order) gets the job back.
        again = await generate(client, idempotency_key="k-1", key="A minor", lyrics=LYRICS)
    assert again["id"] == first["id"] and again["deduplicated"] is True
    assert len(await idle_runtime.service.list()) == 1


async def test_an_idempotency_key_reused_for_another_request_is_an_error(
    idle_runtime: Runtime,
) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        first = await generate(client, lyrics=LYRICS, idempotency_key="k-1")
        other = await client.call_tool(
            "generate_song", {"lyrics": LYRICS + "\nmore", "idempotency_key": "k-1"}
        )
        same = await generate(client, lyrics=LYRICS, idempotency_key="k-1")
    assert other.is_error
    message = text_of(other)
    assert "idempotency key 'k-1' was used for job " + first["id"] in message
    assert "different request" in message and "use a new key" in message
    assert "Not queued again" not in message
    # Nothing was queued for the refused call, and the key still answers with its job.
    assert same["id"] == first["id"] and same["deduplicated"] is True
    assert [job.id for job in await idle_runtime.service.list()] == [first["id"]]


async def test_a_new_idempotency_key_is_never_answered_with_another_keys_job(
    idle_runtime: Runtime,
) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        first = await generate(client, lyrics=VERSE_LYRICS, idempotency_key="call-1")
        second = await generate(client, lyrics=VERSE_LYRICS, idempotency_key="call-2")
        await client.call_tool("cancel_song", {"job_id": first["id"]})
        again = await generate(client, lyrics=VERSE_LYRICS, idempotency_key="call-2")
    # "call-2" must name one job, whatever happened to the job of "call-1".
    assert again["id"] == second["id"]
    assert second["id"] != first["id"] and second["deduplicated"] is False


async def test_a_failed_job_is_not_returned_for_the_same_request(runtime: Runtime) -> None:
    args = {"lyrics": LYRICS, "style": "FAIL please", "wait_seconds": 20}
    failed = structured(await call(runtime, "generate_song", args))
    assert failed["status"] == "failed"
    again = structured(await call(runtime, "generate_song", {**args, "wait_seconds": 0}))
    assert again["id"] != failed["id"] and again["deduplicated"] is False


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"lyrics": LYRICS, "bpm": 500}, "bpm 500 is above the maximum of 200"),
        ({"lyrics": LYRICS, "bpm": "fast"}, "bpm must be a number, not 'fast'"),
        ({"lyrics": LYRICS, "key": "H minor"}, "key 'H minor' is not a key"),
        ({"lyrics": LYRICS, "time_signature": "5/4"}, "use 2, 3, 4 or 6"),
        ({"lyrics": LYRICS, "language": "englsh"}, "did you mean 'english'?"),
        ({"lyrics": LYRICS, "model": "bygheart-ultra"}, "unknown model 'bygheart-ultra'"),
        ({"lyrics": LYRICS, "takes": 9}, "takes 9 is above the maximum of 8"),
        ({"lyrics": LYRICS, "wait_seconds": -1}, "wait_seconds -1 is below the minimum of 0"),
        ({"lyrics": LYRICS, "wait_seconds": "soon"}, "wait_seconds must be a number"),
        ({"lyrics": LYRICS, "idempotency_key": "k" * 201}, "over the limit of 200"),
        ({"lyrics": LYRICS, "title": ["a", "b"]}, "title must be text, not a list"),
        ({"lyrics": LYRICS, "instrumental": True}, "instrumental"),
        ({"style": "pop"}, "no lyrics"),
        ({"lyrics": LYRICS, "lyrics_file": "x.md"}, "not both"),
        ({"lyrics": LYRICS, "model": "bygheart-studio-max", "takes": 8}, "daily cap"),
    ],
)
async def test_bad_input_is_refused_with_a_message_to_act_on(
    idle_runtime: Runtime, args: dict[str, Any], expected: str
) -> None:
    result = await call(idle_runtime, "generate_song", args)
    assert result.is_error
    assert expected in text_of(result)
    assert "pydantic" not in text_of(result)
    assert await idle_runtime.service.list() == []


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("generate_song", {"lyrics": LYRICS, "bpm": 500}),
        ("generate_song", {"lyrics": 12, "instrumental": {"a": 1}}),
        ("get_song", {"job_id": 5}),
        ("get_song", {"job_id": "abc"}),
        ("list_songs", {"status": "faild"}),
        ("list_songs", {"limit": "many"}),
        ("list_songs", {"limit": 0}),
    ],
)
async def test_no_bad_argument_is_answered_with_pydantic_text(
    idle_runtime: Runtime, tool: str, args: dict[str, Any]
) -> None:
    result = await call(idle_runtime, tool, args)
    assert result.is_error
    assert "pydantic" not in text_of(result).lower(), text_of(result)


async def test_an_unknown_status_suggests_the_nearest(idle_runtime: Runtime) -> None:
    result = await call(idle_runtime, "list_songs", {"status": "faild"})
    assert result.is_error and "did you mean 'failed'?" in text_of(result)


def test_a_wait_above_the_limit_is_cut_to_it_with_a_note() -> None:
    """Not refused: the wait is cut to 50 s, and a song still being made gets a note in a
    sentence of its own (a real 50 s wait is too long for a test: the rule is checked here,
    the finished case end to end below)."""
    wait = arguments.wait_seconds("90", MAX_WAIT_SECONDS)
    assert wait.seconds == 50
    note = wait.note_for(JobStatus.RUNNING)
    assert note is not None and "above the limit of 50" in note
    for status in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED):
        assert wait.note_for(status) is None
    assert arguments.wait_seconds(30, MAX_WAIT_SECONDS).note_for(JobStatus.RUNNING) is None
    text = sentences("'Song' (job 01abc) is running (40%)", note)
    assert text == f"'Song' (job 01abc) is running (40%). {note}"
    assert sentences("Queued.", note) == f"Queued. {note}"


async def test_a_finished_song_never_invites_to_wait_more(runtime: Runtime) -> None:
    """A wait above the limit on a song that is done (or ends within it) adds no note:
    there is nothing to wait on, and the summary ends with the files, untouched."""
    song = structured(await call(runtime, "generate_song", {"lyrics": LYRICS, "wait_seconds": 51}))
    assert song["status"] == "done"
    assert not any("above the limit" in note for note in song["notes"])
    result = await call(runtime, "get_song", {"job_id": song["id"], "wait_seconds": "120"})
    record = structured(result)
    assert record["status"] == "done"
    first = result.content[0]
    assert isinstance(first, TextContent)
    assert "wait" not in first.text
    assert first.text.endswith(record["files"][-1]["path"])


async def test_a_lyrics_file_outside_the_allowed_folders_is_refused(
    idle_runtime: Runtime, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.txt"
    outside.write_text(LYRICS, encoding="utf-8")
    link = idle_runtime.config.folders.drafts / "sneaky.txt"
    link.symlink_to(outside)
    for ref in (str(outside), "sneaky.txt", "../state/bygheartd.db"):
        result = await call(idle_runtime, "generate_song", {"lyrics_file": ref})
        assert result.is_error and "outside the folders MCP may read" in text_of(result), ref
    assert await idle_runtime.service.list() == []


async def test_a_lyrics_file_in_the_inbox_is_refused(idle_runtime: Runtime) -> None:
    dropped = idle_runtime.config.folders.inbox / "song.txt"
    dropped.write_text(LYRICS, encoding="utf-8")
    result = await call(idle_runtime, "generate_song", {"lyrics_file": str(dropped)})
    assert result.is_error and "inbox" in text_of(result)


@pytest.mark.parametrize("ref", ["bad\x00name.md", "~no-such-user-here/song.md"])
async def test_an_unusable_lyrics_file_name_is_refused_with_a_message(
    idle_runtime: Runtime, ref: str
) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        result = await client.call_tool("generate_song", {"lyrics_file": ref})
    assert result.is_error
    assert "lyrics_file" in text_of(result)
    assert await idle_runtime.service.list() == []


async def test_a_song_file_in_drafts_is_read_and_arguments_override_it(
    idle_runtime: Runtime,
) -> None:
    draft = idle_runtime.config.folders.drafts / "harbour.md"
    draft.write_text(
        "---\ntitle: Harbour\nstyle: sea shanty, choir\nbpm: 90\n---\n" + LYRICS, encoding="utf-8"
    )
    song = structured(
        await call(
            idle_runtime,
            "generate_song",
            {"lyrics_file": "harbour.md", "title": "Harbour Lights", "bpm": 100},
        )
    )
    job = await idle_runtime.service.get(song["id"])
    assert job.title == "Harbour Lights"
    assert job.request["style"] == "sea shanty, choir" and job.request["bpm"] == 100
    assert job.request["lyrics"] == LYRICS and job.source == "drafts/harbour.md"
    assert song["lyrics_sha256"] == hashlib.sha256(LYRICS.encode()).hexdigest()


async def test_an_argument_replaces_a_bad_value_in_the_song_file_it_overrides(
    idle_runtime: Runtime,
) -> None:
    """The file and the arguments are merged first and validated once: a value the
    arguments replace is never judged on its own (the file spells it as the API does)."""
    draft = idle_runtime.config.folders.drafts / "fast.md"
    draft.write_text("---\nprompt: drum and bass\nbpm: 500\n---\n" + LYRICS, encoding="utf-8")
    song = structured(
        await call(
            idle_runtime,
            "generate_song",
            {"lyrics_file": "fast.md", "bpm": 174, "style": "liquid drum and bass"},
        )
    )
    job = await idle_runtime.service.get(song["id"])
    assert job.request["bpm"] == 174 and job.request["style"] == "liquid drum and bass"


async def test_a_plain_lyrics_file_takes_its_title_from_the_file_name(
    idle_runtime: Runtime,
) -> None:
    (idle_runtime.config.folders.archive / "old-tune.txt").write_text(LYRICS, encoding="utf-8")
    path = idle_runtime.config.folders.archive / "old-tune.txt"
    song = structured(await call(idle_runtime, "generate_song", {"lyrics_file": str(path)}))
    assert song["title"] == "old-tune" and song["source"] == "archive/old-tune.txt"


async def test_an_invalid_song_file_reports_the_line_and_key(idle_runtime: Runtime) -> None:
    draft = idle_runtime.config.folders.drafts / "typo.md"
    draft.write_text("---\ntempo_bpm: 90\n---\n" + LYRICS, encoding="utf-8")
    result = await call(idle_runtime, "generate_song", {"lyrics_file": "typo.md"})
    assert result.is_error
    assert "drafts/typo.md: line 2" in text_of(result) and "bpm" in text_of(result)


async def test_an_exhausted_budget_queues_the_song_and_says_when_it_starts(
    idle_runtime: Runtime,
) -> None:
    until = utcnow() + timedelta(hours=3)
    # what the engine records when the server answers 429 credit_limit_reached
    await Budget(idle_runtime.config, idle_runtime.store).server_capped_until(until)
    result = await call(idle_runtime, "generate_song", {"lyrics": LYRICS})
    song = structured(result)
    assert song["status"] == "queued" and song["budget_hold"] is not None
    assert song["budget_hold"]["resumes_at"].endswith("Z")
    assert "waits for credits" in text_of(result)


@pytest.mark.parametrize("mode", MODES)
async def test_get_song_waits_and_reports_progress(runtime: Runtime, mode: str) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with Client(build_server(runtime.service), mode=mode) as client:
        queued = structured(await client.call_tool("generate_song", {"lyrics": LYRICS}))
        result = await client.call_tool(
            "get_song",
            {"job_id": queued["id"][:8], "wait_seconds": 30},
            progress_callback=on_progress,
        )
    song = structured(result)
    assert song["id"] == queued["id"] and song["status"] == "done"
    assert Path(song["files"][0]["path"]).is_file()
    assert progress == sorted(set(progress)) and progress[-1] == 1.0


async def test_get_song_never_waits_longer_than_asked(idle_runtime: Runtime) -> None:
    queued = structured(await call(idle_runtime, "generate_song", {"lyrics": LYRICS}))
    with anyio.fail_after(5):
        result = await call(idle_runtime, "get_song", {"job_id": queued["id"], "wait_seconds": 1})
    assert structured(result)["status"] == "queued"


async def test_an_unknown_job_is_a_tool_error(idle_runtime: Runtime) -> None:
    result = await call(idle_runtime, "get_song", {"job_id": "zzzzzzzz"})
    assert result.is_error and "zzzzzzzz" in text_of(result)


async def test_list_songs_filters_by_status(idle_runtime: Runtime) -> None:
    a = structured(await call(idle_runtime, "generate_song", {"lyrics": LYRICS, "title": "A"}))
    structured(await call(idle_runtime, "generate_song", {"lyrics": LYRICS, "title": "B"}))
    await idle_runtime.service.cancel(a["id"])
    listed = structured(await call(idle_runtime, "list_songs", {"status": ["cancelled"]}))
    assert [j["id"] for j in listed["jobs"]] == [a["id"]]
    for spelling in ("cancelled", "Cancelled, failed", ["cancelled,held"]):
        listed = structured(await call(idle_runtime, "list_songs", {"status": spelling}))
        assert [j["id"] for j in listed["jobs"]] == [a["id"]], spelling
    everything = structured(await call(idle_runtime, "list_songs", {"limit": 10}))
    assert [j["title"] for j in everything["jobs"]] == ["B", "A"]
    assert everything["counts"] == {"cancelled": 1, "queued": 1}


async def test_cancel_then_retry_a_song(idle_runtime: Runtime) -> None:
    queued = structured(await call(idle_runtime, "generate_song", {"lyrics": LYRICS}))
    cancelled = await call(idle_runtime, "cancel_song", {"job_id": queued["id"]})
    assert structured(cancelled)["status"] == "cancelled"
    assert "never sent" in structured(cancelled)["note"]
    again = await call(idle_runtime, "cancel_song", {"job_id": queued["id"]})
    assert again.is_error and "already cancelled" in text_of(again)
    retried = structured(await call(idle_runtime, "retry_song", {"job_id": queued["id"]}))
    assert retried["status"] == "queued"
    assert (await idle_runtime.service.get(queued["id"])).status is JobStatus.QUEUED


async def test_get_credits_shows_the_ledger_and_the_plan_limits(idle_runtime: Runtime) -> None:
    credits = structured(await call(idle_runtime, "get_credits"))
    assert credits["plan"] == "pro"
    assert credits["today"]["left"] == 30
    assert credits["limits"] == {"daily_credits": 30, "monthly_credits": 200, "rollover_max": 60}


async def test_list_models_gives_hosted_prices(idle_runtime: Runtime) -> None:
    models = structured(await call(idle_runtime, "list_models"))
    prices = {m["name"]: m["credits"] for m in models["models"]}
    assert prices == {name: m.credits for name, m in catalog.HOSTED_MODELS.items()}
    assert [m["name"] for m in models["models"] if m["default"]] == ["bygheart-studio-pro"]


async def test_list_models_on_acestep_costs_nothing(make_config: MakeConfig) -> None:
    config = make_config(None, api={"backend": "acestep"}, defaults={"model": ""})
    async with Runtime(config, role=EngineRole.MCP, engine=False) as rt:
        models = structured(await call(rt, "list_models"))
        async with Client(build_server(rt.service)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
    assert models["backend"] == "acestep"
    assert "acestep-v15-turbo" in [m["name"] for m in models["models"]]
    assert all(m["credits"] == 0 for m in models["models"])
    bpm = tools["generate_song"].input_schema["properties"]["bpm"]["anyOf"][0]
    assert bpm["maximum"] == 300


async def test_the_song_resource_is_the_record_then_the_sidecar(runtime: Runtime) -> None:
    async with Client(build_server(runtime.service)) as client:
        queued = structured(await client.call_tool("generate_song", {"lyrics": LYRICS}))
        uri = f"bygheart://songs/{queued['id']}"
        before = await client.read_resource(uri)
        await runtime.service.wait(queued["id"], timeout=20)
        after = await client.read_resource(uri)
    first, last = before.contents[0], after.contents[0]
    assert isinstance(first, TextResourceContents) and isinstance(last, TextResourceContents)
    assert json.loads(first.text)["id"] == queued["id"]
    sidecar = json.loads(last.text)
    assert sidecar["job_id"] == queued["id"] and sidecar["status"] == "done"
    assert "history" in sidecar


async def test_the_guide_and_the_prompt_are_served(idle_runtime: Runtime) -> None:
    async with Client(build_server(idle_runtime.service)) as client:
        guide = (await client.read_resource("bygheart://guide")).contents[0]
        prompt = await client.get_prompt(
            "write_song", {"topic": "a lighthouse keeper", "genre": "folk", "mood": "hopeful"}
        )
    assert isinstance(guide, TextResourceContents)
    assert "[Chorus]" in guide.text and "time_signature" in guide.text
    text = "\n".join(m.content.text for m in prompt.messages if isinstance(m.content, TextContent))
    assert "a lighthouse keeper" in text and "generate_song" in text and "---" in text


async def test_a_client_that_leaves_mid_wait_does_not_stop_the_song(runtime: Runtime) -> None:
    started = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        started.set()

    async def generate() -> None:
        async with Client(build_server(runtime.service)) as client:
            await client.call_tool(
                "generate_song",
                {"lyrics": LYRICS, "wait_seconds": 40},
                progress_callback=on_progress,
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(generate)
        with anyio.fail_after(10):
            await started.wait()
        tg.cancel_scope.cancel()
    (job,) = await runtime.service.list()
    assert job.status is not JobStatus.CANCELLED
    done = await runtime.service.wait(job.id, timeout=20)
    assert done.status is JobStatus.DONE and done.files[0].path.is_file()


async def test_the_api_key_never_appears_in_a_reply(runtime: Runtime) -> None:
    replies: list[str] = []
    async with Client(build_server(runtime.service)) as client:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("generate_song", {"lyrics": LYRICS, "wait_seconds": 20}),
            ("generate_song", {"lyrics": LYRICS, "bpm": 999}),
            ("generate_song", {"lyrics_file": "/etc/passwd"}),
            ("list_songs", {}),
            ("get_credits", {}),
            ("list_models", {}),
            ("get_song", {"job_id": "nothere"}),
        ]
        for tool, args in calls:
            result = await client.call_tool(tool, args)
            replies.append(result.model_dump_json())
        job_id = (await runtime.service.list())[0].id
        for uri in (f"bygheart://songs/{job_id}", "bygheart://guide"):
            replies.append((await client.read_resource(uri)).model_dump_json())
    assert all(TEST_KEY not in reply for reply in replies)
    assert any('"status":"done"' in reply for reply in replies)


async def test_with_a_daemon_holding_the_engine_the_song_is_only_queued(
    make_config: MakeConfig,
) -> None:
    config = make_config(None)
    daemon_lock = EngineLock(config.state_dir)
    assert daemon_lock.try_acquire(EngineRole.DAEMON)
    try:
        async with Runtime(config, role=EngineRole.MCP, engine=True) as rt:
            assert not rt.engine_running
            result = await call(rt, "generate_song", {"lyrics": LYRICS})
            song = structured(result)
            assert song["status"] == "queued" and song["notes"] == []
            assert (await rt.service.get(song["id"])).status is JobStatus.QUEUED
    finally:
        daemon_lock.release()
