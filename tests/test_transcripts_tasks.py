"""The genuine ACE-Step 1.5 server's replies for the edit tasks, models, analysis and LoRA
(API-TRANSCRIPTS-TASKS.md, kept byte for byte in `transcripts_tasks.json`) as test vectors:
a scripted server on 127.0.0.1 answers with the exact captured bytes, and our client, its
parsers, the pool's model and LoRA rules and `describe` must make of each what the protocol
document (ACESTEP-TASKS.md) says it means. The traps are here on purpose: an inventory with
nothing loaded before the lazy load, `/v1/models` that is not the inventory, a model that
is not loaded silently running another, analysis results without a file, failures without a
reason, a LoRA route that answers 500 until the model loads. The requests we send for
stems, layers, accompaniment and extend are compared with the captured requests too.
"""

from __future__ import annotations

import itertools
import json
import shlex
import wave
from pathlib import Path
from typing import Any

import pytest
from _scripted import (  # noqa: F401 - the server, api and origin fixtures
    ok,
    scripted_api_fixture,
    scripted_client,
    scripted_origin_fixture,
    scripted_server_fixture,
)
from _servers import PREFIX, Reply, ScriptedApi
from conftest import MakeConfig

from bygheartd import catalog
from bygheartd.api.client import BygheartClient, RetryPolicy, TaskState
from bygheartd.api.errors import AuthError, RejectedError
from bygheartd.api.inventory import parse_inventory, ran_elsewhere
from bygheartd.api.lora import not_initialized, parse_lora_status
from bygheartd.api.results import reported_seconds
from bygheartd.engine.lora import PENDING, ensure_lora
from bygheartd.engine.pool import ServerState, has_model, model_needed, no_server_has
from bygheartd.service.edits import describe_audio
from bygheartd.service.errors import ServiceError
from bygheartd.songs import edits
from bygheartd.songs.request import RequestRules
from bygheartd.songs.songfile import parse_song_file, parse_song_text

pytestmark = pytest.mark.anyio

CAPTURES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "transcripts_tasks.json").read_text(encoding="utf-8")
)["steps"]
KEY = "test-key-123"
TURBO, BASE, SFT = "acestep-v15-turbo", "acestep-v15-base", "acestep-v15-sft"
FAST = RetryPolicy(attempts=1)


def replay(step: str) -> Reply:
    """The captured reply of a step: its status, content type and body, byte for byte."""
    capture = CAPTURES[step]
    return Reply(capture["status"], capture["body"], media_type=capture["content_type"])


def body_of(step: str) -> Any:
    return json.loads(CAPTURES[step]["body"])


def task_id(step: str) -> str:
    """The task id a captured submit reply (or a final poll) names."""
    data = body_of(step)["data"]
    found: str = data["task_id"] if isinstance(data, dict) else data[0]["task_id"]
    return found


def form_fields(step: str) -> dict[str, list[str]]:
    """The `-F` fields of a captured multipart request (file parts as their part name)."""
    words = shlex.split(CAPTURES[step]["request"])
    fields: dict[str, list[str]] = {}
    for flag, value in itertools.pairwise(words):
        if flag == "-F":
            name, _, text = value.partition("=")
            fields.setdefault(name, []).append(text)
    return fields


def wav(path: Path, seconds: float = 4.0, rate: int = 22050) -> Path:
    """A silent mono WAV like the capture's 4.0 s 22.05 kHz source."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return path


@pytest.fixture
def client(origin: str) -> BygheartClient:
    return scripted_client(origin + PREFIX, KEY, backend="acestep", retry=FAST, timeout=5.0)


def test_every_capture_is_here_with_its_reply() -> None:
    assert len(CAPTURES) == 68
    assert {s.split("-")[0] for s in CAPTURES} == {"R1", "R2", "R3"}
    assert all(c["request"].startswith("curl ") for c in CAPTURES.values())


# -- models: the inventory, and /v1/models that is not one -------------------------------


async def test_the_inventory_before_the_lazy_load_has_nothing_loaded(
    api: ScriptedApi, client: BygheartClient
) -> None:
    """R1-3 then R1-8: a server that loads lazily lists its models on disk, none loaded,
    until its first job; then slot 1 (turbo, the default) and slot 2 (base). Before, its
    slots are unknown ("pending"), not empty: a stem may go there (the pool sends one at a
    time until its fresh inventory says; tests/test_lazy_server.py runs it end to end)."""
    api.expect("GET", "/v1/model_inventory", replay("R1-3"), replay("R1-8"))
    async with client:
        cold = parse_inventory(await client.model_inventory() or {})
        warm = parse_inventory(await client.model_inventory() or {})
    assert cold.loaded() == [] and cold.llm_initialized is False and cold.pending()
    assert not warm.pending() and cold.as_record()["initialized"] is False
    assert cold.default_model == TURBO and len(cold.models) == 5
    assert cold.lm_models == ("acestep-5Hz-lm-1.7B",)
    assert warm.loaded() == [TURBO, BASE] and warm.llm_initialized is True

    def state(inventory: Any) -> ServerState:
        """As the pool keeps a server after reading its inventory."""
        return ServerState(
            "http://gpu1:8001",
            2,
            loaded_models=tuple(inventory.loaded()),
            inventory_checked=True,
            models_pending=inventory.pending(),
        )

    stems = model_needed({"task_type": "extract", "model": BASE})
    assert stems == BASE
    assert has_model(state(cold), stems)  # before its first job: unknown, not "none"
    assert no_server_has(stems, [state(cold)]) is None
    assert has_model(state(warm), stems) and no_server_has(stems, [state(warm)]) is None
    turbo_only = ServerState("http://gpu2:8001", 2, loaded_models=(TURBO,), inventory_checked=True)
    said = no_server_has(stems, [turbo_only]) or ""
    assert said.startswith("no server has acestep-v15-base loaded (loaded: http://gpu2:8001:")
    assert no_server_has(stems, [turbo_only, state(cold)]) is None
    assert model_needed({"task_type": "text2music", "model": TURBO}) is None  # anywhere
    # The inventory lists extract/lego/complete for SFT too (it derives them from
    # is_turbo); the docs and the UI say base only, and so do we.
    sft = next(m for m in warm.models if m.name == SFT)
    assert "extract" in sft.tasks
    assert edits.family(SFT) == "sft" and SFT not in catalog.acestep_base_models()
    assert edits.needs_base_model("extract") and not edits.needs_base_model("repaint")


async def test_v1_models_is_not_the_inventory(api: ScriptedApi, client: BygheartClient) -> None:
    """R1-1 and R1-7: the OpenRouter list, loaded slots only, empty before the first job."""
    api.expect("GET", "/v1/models", replay("R1-1"), replay("R1-7"))
    async with client:
        before = await client.models()
        after = await client.models()
    assert before == []
    assert after == ["acestep/acestep-v15-turbo", "acestep/acestep-v15-base"]


async def test_health_and_stats_after_the_load(api: ScriptedApi, client: BygheartClient) -> None:
    api.expect("GET", "/health", replay("R1-9"))
    api.expect("GET", "/v1/stats", replay("R1-56"))
    async with client:
        health = await client.health()
        probe = await client.probe()
    assert health is not None and health["loaded_model"] == TURBO
    assert health["models_initialized"] is True
    assert probe["queue_size"] == 0 and probe["jobs"]["failed"] == 2


# -- submits: every task's reply ---------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    ["R1-5", "R1-23", "R1-25", "R1-27", "R1-29", "R1-31", "R1-33", "R1-35", "R1-37", "R1-39",
     "R1-41", "R1-43", "R1-45", "R1-47", "R1-50", "R2-1", "R2-3", "R2-6", "R3-1", "R3-3",
     "R3-5"],
)  # fmt: skip
async def test_every_captured_submit_reply_is_a_queued_task(
    step: str, api: ScriptedApi, client: BygheartClient, tmp_path: Path
) -> None:
    api.expect("POST", "/release_task", replay(step))
    upload = wav(tmp_path / "src4s.wav") if "-F" in CAPTURES[step]["request"] else None
    async with client:
        submitted = await client.submit({"task_type": "text2music"}, src_audio=upload)
    assert submitted.task_id == task_id(step)
    assert submitted.queue_position == 1


async def test_a_rejected_source_path_is_the_servers_400(
    api: ScriptedApi, client: BygheartClient
) -> None:
    """R2-5: a `..` in src_audio_path (we upload instead; the words are the server's)."""
    api.expect("POST", "/release_task", replay("R2-5"))
    async with client:
        with pytest.raises(RejectedError, match="path traversal") as caught:
            await client.submit({"task_type": "repaint", "src_audio_path": "../outside.wav"})
    assert caught.value.status == 400


# -- results: what we make of each final poll ---------------------------------------------


# step -> (state, takes, the model that ran, what else must hold)
RESULTS: dict[str, tuple[TaskState, int, str | None]] = {
    "R1-6": (TaskState.SUCCEEDED, 1, TURBO),  # text2music warm-up
    "R1-24": (TaskState.SUCCEEDED, 1, BASE),  # extract vocals on base
    "R1-26": (TaskState.SUCCEEDED, 1, BASE),  # lego drums on base
    "R1-28": (TaskState.SUCCEEDED, 2, BASE),  # complete, batch 2
    "R1-30": (TaskState.SUCCEEDED, 1, TURBO),  # extract on turbo: not refused
    "R1-32": (TaskState.FAILED, 0, None),  # extract without source: status 2, no reason
    "R1-34": (TaskState.SUCCEEDED, 1, TURBO),  # repaint 2..9 s on 4 s: extend
    "R1-36": (TaskState.SUCCEEDED, 1, TURBO),  # repaint -3..1 s: prepend
    "R1-38": (TaskState.SUCCEEDED, 1, TURBO),  # cover with a reference
    "R1-40": (TaskState.SUCCEEDED, 0, None),  # full analysis: no file, a success
    "R1-42": (TaskState.SUCCEEDED, 0, None),  # codes only: no file, a success
    "R1-44": (TaskState.FAILED, 0, None),  # analysis_only: `file: ""` (we never send it)
    "R1-46": (TaskState.FAILED, 0, None),  # full analysis without source
    "R1-48": (TaskState.SUCCEEDED, 1, TURBO),  # asked xl-base (not loaded): ran turbo
    "R1-51": (TaskState.SUCCEEDED, 1, SFT),  # sft after /v1/init into slot 2
    "R2-2": (TaskState.SUCCEEDED, 1, TURBO),
    "R2-4": (TaskState.SUCCEEDED, 1, TURBO),  # repaint of an earlier output by its path
    "R3-2": (TaskState.FAILED, 0, None),  # full analysis, no LM on the server
    "R3-4": (TaskState.FAILED, 0, None),  # analysis_only, no LM
    "R3-6": (TaskState.SUCCEEDED, 0, None),  # codes only need no LM
}


@pytest.mark.parametrize("step", sorted(RESULTS))
async def test_every_captured_final_poll_reads_as_the_protocol_says(
    step: str, api: ScriptedApi, client: BygheartClient
) -> None:
    state, takes, ran = RESULTS[step]
    api.expect("POST", "/query_result", replay(step))
    async with client:
        result = (await client.query([task_id(step)]))[task_id(step)]
    assert result.state is state
    assert len(result.outputs) == takes
    assert {t.dit_model for t in result.outputs} == ({ran} if ran else set())
    assert all(t.file.startswith("/v1/audio?path=") for t in result.outputs)
    analysis = step in ("R1-40", "R1-42", "R3-6")
    assert (result.analysis is not None) is analysis
    if state is TaskState.FAILED:
        assert result.analysis is None and result.outputs == []


async def test_a_batch_of_two_gives_two_takes_with_their_own_seeds(
    api: ScriptedApi, client: BygheartClient
) -> None:
    api.expect("POST", "/query_result", replay("R1-28"))
    async with client:
        result = (await client.query([task_id("R1-28")]))[task_id("R1-28")]
    assert [t.seed for t in result.outputs] == ["698420692", "2035766545"]
    assert len({t.file for t in result.outputs}) == 2
    assert all(t.file.endswith(".flac") for t in result.outputs)


async def test_metas_duration_is_not_the_length_of_an_edit(
    api: ScriptedApi, client: BygheartClient
) -> None:
    """`metas.duration` echoes the request's audio_duration: "N/A" for the extend (R1-34),
    and 10.0 for a text2music warm-up that asked for 10 (R1-6)."""
    api.expect("POST", "/query_result", replay("R1-34"), replay("R1-6"))
    async with client:
        extended = (await client.query([task_id("R1-34")]))[task_id("R1-34")]
        made = (await client.query([task_id("R1-6")]))[task_id("R1-6")]
    assert reported_seconds(extended.outputs[0].metas) is None
    assert reported_seconds(made.outputs[0].metas) == 10.0


async def test_a_model_that_is_not_loaded_silently_runs_another_and_we_say_so(
    api: ScriptedApi, client: BygheartClient
) -> None:
    """R1-48: xl-base was asked, turbo ran; R1-30: a stem on turbo; R1-24: base as asked."""
    api.expect("POST", "/query_result", replay("R1-48"), replay("R1-30"), replay("R1-24"))
    async with client:
        xl = (await client.query([task_id("R1-48")]))[task_id("R1-48")]
        turbo_stem = (await client.query([task_id("R1-30")]))[task_id("R1-30")]
        base_stem = (await client.query([task_id("R1-24")]))[task_id("R1-24")]
    said = ran_elsewhere("acestep-v15-xl-base", xl.outputs)
    assert said is not None
    assert said.startswith("ran on acestep-v15-turbo instead of acestep-v15-xl-base")
    assert "bygheartd models" in said
    assert (ran_elsewhere(BASE, turbo_stem.outputs) or "").startswith(
        "ran on acestep-v15-turbo instead of acestep-v15-base"
    )
    assert ran_elsewhere(BASE, base_stem.outputs) is None


# -- describe: the analysis reply becomes a song-file draft ------------------------------


async def test_describe_turns_the_captured_analysis_into_a_draft(
    api: ScriptedApi, origin: str, make_config: MakeConfig, tmp_path: Path
) -> None:
    api.expect("POST", "/release_task", replay("R1-39"))
    api.expect("POST", "/query_result", replay("R1-40"))
    config = make_config(api={"backend": "acestep", "base_url": origin + PREFIX})
    draft = await describe_audio(config, wav(tmp_path / "liked-song.wav"), timeout=10)
    [sent] = api.calls("/release_task")
    assert sent.form["full_analysis_only"] == "true" and "src_audio" in sent.files
    fields = draft.fields()
    assert fields["title"] == "Liked Song (like this)"
    assert fields["style"] == "stub caption: a calm instrumental piece"
    assert fields["bpm"] == 120 and fields["key"] == "C major"
    assert fields["time_signature"] == "4" and fields["language"] == "en"
    assert draft.instrumental  # "[Instrumental]": a song without vocals


async def test_describe_on_a_server_without_its_language_model_says_so(
    api: ScriptedApi, origin: str, make_config: MakeConfig, tmp_path: Path
) -> None:
    """R3-1/R3-2: status 2 and no reason; the message names the likely cause."""
    api.expect("POST", "/release_task", replay("R3-1"))
    api.expect("POST", "/query_result", replay("R3-2"))
    config = make_config(api={"backend": "acestep", "base_url": origin + PREFIX})
    with pytest.raises(ServiceError, match="needs the server's language model loaded"):
        await describe_audio(config, wav(tmp_path / "a.wav"), timeout=10)


# -- LoRA: the routes' replies, and what the pool concludes -------------------------------


async def test_the_lora_replies_read_as_the_server_means_them(
    api: ScriptedApi, client: BygheartClient
) -> None:
    api.expect("GET", "/v1/lora/status", replay("R1-4"), replay("R1-12"))
    api.expect(
        "POST", "/v1/lora/load", replay("R1-15"), replay("R1-16"), replay("R1-17"), replay("R1-18")
    )
    async with client:
        with pytest.raises(RejectedError) as cold:
            await client.lora_status()
        status = parse_lora_status(await client.lora_status() or {})
        with pytest.raises(RejectedError) as missing:
            await client.load_lora("/nonexistent/adapter")
        with pytest.raises(RejectedError) as invalid:
            await client.load_lora("$SCRATCH/cap/not_an_adapter")
        with pytest.raises(RejectedError) as unnamed:
            await client.load_lora("")
        with pytest.raises(AuthError):
            await client.load_lora("/nonexistent/adapter")
    assert cold.value.status == 500 and not_initialized(500, cold.value.message)
    assert status.loaded is False and status.adapters == () and status.scale == 1.0
    assert not status.has("/srv/loras/my-style")
    assert missing.value.status == 400
    assert missing.value.message.endswith("❌ LoRA path not found: /nonexistent/adapter")
    assert not not_initialized(400, missing.value.message)
    assert invalid.value.status == 400 and "❌ Invalid adapter" in invalid.value.message
    assert unnamed.value.status == 422 and "lora_path" in unnamed.value.message


async def test_the_pool_waits_for_the_model_then_names_the_servers_refusal(
    api: ScriptedApi, client: BygheartClient
) -> None:
    """Before the lazy load (R1-4) the LoRA waits and the server still takes its first job;
    a path the server does not have (R1-12, then R1-15) is the server's reason to get none."""
    # ... and one without LoRA routes at all (FastAPI's 404, as R1-13 answers) gets none.
    api.expect("GET", "/v1/lora/status", replay("R1-4"), replay("R1-12"), replay("R1-13"))
    api.expect("POST", "/v1/lora/load", replay("R1-15"))
    url = "http://gpu1:8001"
    async with client:
        waiting = await ensure_lora(client, url, "/nonexistent/adapter", was_loaded=None)
        refused = await ensure_lora(client, url, "/nonexistent/adapter", was_loaded=None)
        hidden = await ensure_lora(client, url, "/srv/loras/x", was_loaded=None)
    assert waiting.loaded is None and waiting.note == PENDING and waiting.problem is None
    assert refused.loaded is False and refused.problem is not None
    assert "❌ LoRA path not found: /nonexistent/adapter" in refused.problem
    assert "fix lora_path in the [[api.servers]] entry of http://gpu1:8001" in refused.problem
    assert [c.json() for c in api.calls("/v1/lora/load")] == [{"lora_path": "/nonexistent/adapter"}]
    assert hidden.loaded is False and "has no /v1/lora routes" in (hidden.problem or "")
    assert "remove lora_path" in (hidden.problem or "")


# -- what we send: the captured requests, field by field ----------------------------------


def _sent_for(front: str, tmp_path: Path) -> dict[str, Any]:
    """The API body of a song file beside a 4.0 s source; a stems song's first stem, made
    as the service splits it (one extract request per track)."""
    wav(tmp_path / "src4s.wav")
    (tmp_path / "song.md").write_text(f"---\n{front}\nsource_audio: src4s.wav\n---\n")
    rules = RequestRules(backend="acestep")
    request = parse_song_file(tmp_path / "song.md", rules)
    if request.stems:
        track = request.stems[0]
        changes = {"stems": None, "track_name": track, "stem_group": "song"}
        request = request.with_changes(changes, rules, source="stems of song")
    body: dict[str, Any] = request.to_api_body()
    return body


@pytest.mark.parametrize(
    ("front", "step"),
    [
        ("stems: [vocals]", "R1-23"),
        ("style: tight funk drums\nadd_layer: drums", "R1-25"),
        ("style: indie rock backing\naccompany: [drums, bass]", "R1-27"),
        ("style: continue the groove\nextend: 5", "R1-33"),
    ],
)
async def test_our_edit_requests_carry_the_captured_fields(
    front: str, step: str, api: ScriptedApi, client: BygheartClient, tmp_path: Path
) -> None:
    """The multipart fields we send for stems, a layer, an accompaniment and an extend
    carry what the captured request did (names and values); lists travel as a JSON array
    in `param_obj` (the server's RequestParser reads it like the form), never as the
    comma-joined text the server would read as one track (R2-6: "DRUMS,BASS")."""
    body = _sent_for(front, tmp_path)
    api.expect("POST", "/release_task", replay(step))
    async with client:
        await client.submit(body, src_audio=tmp_path / "src4s.wav")
    [sent] = api.calls("/release_task")
    captured = form_fields(step)
    assert "src_audio" in sent.files and "src_audio" in captured
    for name in ("task_type", "track_name", "model"):
        if name in captured:
            assert sent.form[name] == captured[name][0], name
    for name in ("repainting_start", "repainting_end"):
        if name in captured:
            assert float(sent.form[name]) == float(captured[name][0]), name
    if "track_classes" in captured:
        assert "track_classes" not in sent.form
        assert json.loads(sent.form["param_obj"])["track_classes"] == captured["track_classes"]
    assert float(sent.form.get("repainting_end", "1")) != 0  # 0 would mean "to the end"


def test_a_comma_joined_track_list_is_split_here_as_the_server_would_not() -> None:
    """R2-6: the server reads `"drums,bass"` as one track (`Complete the input track with
    DRUMS,BASS:`); a song file may write it so, and it is sent as two."""
    captured = json.loads(CAPTURES["R2-6"]["request"].split(" -d ", 1)[1].strip("'"))
    assert captured["track_classes"] == "drums,bass"
    rules = RequestRules(backend="acestep")
    for front in (
        f'task_type: complete\ntrack_classes: "{captured["track_classes"]}"\nmodel: {BASE}',
        'accompany: "drums, bass"',
    ):
        text = f"---\nstyle: x\n{front}\nsource_audio: a.wav\n---\n"
        body = parse_song_text(text, rules, name="s.md").to_api_body()
        assert body["track_classes"] == ["drums", "bass"], front


async def test_a_lora_load_that_breaks_on_the_server_is_not_called_a_bad_path(
    api: ScriptedApi, client: BygheartClient
) -> None:
    """An exception while loading is the route's HTTP 500 `Failed to load LoRA: ...` (its
    source; not captured): the server is out until the next probe, but the path is not
    blamed."""
    api.expect("GET", "/v1/lora/status", replay("R1-12"))
    api.expect("POST", "/v1/lora/load", Reply(500, {"detail": "Failed to load LoRA: CUDA OOM"}))
    async with client:
        found = await ensure_lora(client, "http://gpu1:8001", "/srv/loras/x", was_loaded=None)
    assert found.loaded is False
    assert found.problem == "its LoRA '/srv/loras/x' did not load: Failed to load LoRA: CUDA OOM"
