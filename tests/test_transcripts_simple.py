"""The captures of the real ACE-Step 1.5 server (API-TRANSCRIPTS.md) as test vectors for
Simple mode and for what the model wrote: a scripted server answers with the exact
captured bytes and the client, and the engine end to end, must read them right; the bodies
we send must match the captured requests field by field (names and JSON types); and the
simulator must answer in the captured shapes in both backend modes.

The language-model helpers (`/v1/create_sample`, `/create_random_sample`, `/format_input`)
were never captured: their replies here are the shapes the server's own route code builds
(ACE-Step 1.5, May 2026 snapshot), marked as such.
"""

from __future__ import annotations

import json
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
from _servers import (
    PREFIX,
    TASK_A,
    TASK_B,
    TASK_C,
    TASK_UNKNOWN,
    TRANSCRIPT,
    Reply,
    ScriptedApi,
    ServerThread,
)
from conftest import MakeConfig
from test_daemon_e2e import sidecars
from test_simulator_support import simulator, submit, wait_final, wait_until

from bygheartd.api.client import BygheartClient, LmUnavailable, RetryPolicy, TaskState
from bygheartd.api.errors import RejectedError
from bygheartd.jobs import JobStatus, generated_song
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.songs.request import RequestRules, SongRequest

pytestmark = pytest.mark.anyio

KEY = "bgh_transcript_key_4d2e"
FAST = RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.005)

# Step 19: the request body exactly as captured (the hosted service's documented shape).
STEP19_REQUEST = json.loads(
    '{"prompt":"jazz trio","lyrics":"[inst]","model":"bygheart-studio-pro","lm_model_path":"",'
    '"thinking":true,"use_format":false,"vocal_language":"en","audio_duration":20,'
    '"audio_format":"ogg","batch_size":2,"seed":"1,2","use_random_seed":false,'
    '"guidance_scale":1.0,"task_type":"text2music"}'
)
STEP19_REPLY = '{"data":{"task_id":"110de930-911d-455a-a80e-0d0709375a5c","status":"queued","queue_position":1},"code":200,"error":null,"timestamp":1795476770518,"extra":null}'  # noqa: E501
# Step 2: the request body as captured.
STEP2_REQUEST = json.loads(
    '{"prompt":"upbeat synthwave, female vocals","lyrics":"[verse]\\nneon lights tonight",'
    '"batch_size":1,"audio_format":"mp3","audio_duration":30}'
)
# Step 24: /v1/models, no envelope.
STEP24_MODELS = '{"object":"list","data":[{"id":"acestep/acestep-v15-turbo","name":"ACE-Step acestep-v15-turbo","created":1792884774,"input_modalities":["text","audio"],"output_modalities":["audio","text"],"context_length":4096,"max_output_length":300,"pricing":{"prompt":"0","completion":"0","request":"0","image":"0"},"description":"AI music generation model","architecture":null}]}'  # noqa: E501
# The first bytes of the captured mp3 (step 7), so that the download sniffs as MPEG audio.
MP3_HEAD = bytes.fromhex("fffb94640000030c18c18571e0020000")
FILE_A = "4136e2ad-020f-0170-6577-265d7b9b85ef.mp3"
FILE_A_REF = "/v1/audio?path=%2Fsrv%2Facestep%2Fapi_audio%2F" + FILE_A


def entries(raw: str) -> list[dict[str, Any]]:
    """The `data` entries of a captured query_result, with `result` decoded."""
    data: list[dict[str, Any]] = json.loads(raw)["data"]
    return [{**entry, "result": json.loads(entry["result"])} for entry in data]


def shape(value: Any) -> Any:
    """Keys, nesting and JSON types of a value, without the values themselves."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


@pytest.fixture
def client(origin: str) -> BygheartClient:
    return scripted_client(origin + PREFIX, KEY, retry=FAST, timeout=5.0)


# -- what we send: the captured requests, field by field -----------------------------------


def assert_same_types(sent: dict[str, Any], captured: dict[str, Any]) -> None:
    for name, value in captured.items():
        if name in sent:
            assert shape(sent[name]) == shape(value), (name, sent[name], value)


async def test_a_custom_song_body_matches_the_captured_hosted_request(
    api: ScriptedApi, client: BygheartClient
) -> None:
    request = SongRequest.build(
        {
            "style": "jazz trio",
            "lyrics": "[inst]",
            "model": "bygheart-studio-pro",
            "language": "en",
            "duration": 20,
            "takes": 2,
            "seed": [1, 2],
            "thinking": True,
            "guidance_scale": 1.0,
        }
    )
    api.expect("POST", "/release_task", ok(STEP19_REPLY))
    async with client:
        submitted = await client.submit(request.to_api_body())
    assert (submitted.task_id, submitted.queue_position) == (
        "110de930-911d-455a-a80e-0d0709375a5c",
        1,
    )
    [call] = api.calls("/release_task")
    assert call.headers["content-type"] == "application/json"
    sent = call.json()
    assert_same_types(sent, STEP19_REQUEST)
    # Every captured field is sent, under the same name; `lm_model_path: ""` is the default.
    assert set(STEP19_REQUEST) - set(sent) == {"lm_model_path"}
    differ = {k for k in STEP19_REQUEST if k in sent and sent[k] != STEP19_REQUEST[k]}
    # `[Instrumental]` is the marker the server documents ("[inst]" means the same); ogg is
    # not a format we send (the server silently makes flac of it).
    assert differ == {"lyrics", "audio_format"}
    assert sent["lyrics"] == "[Instrumental]" and sent["seed"] == "1,2"


async def test_a_simple_mode_body_has_the_servers_names_and_types(
    api: ScriptedApi, client: BygheartClient
) -> None:
    request = SongRequest.build(
        {
            "description": "upbeat synthwave about neon lights, female vocals",
            "bpm": 120,
            "key": "A minor",
            "time_signature": "4/4",
            "duration": 30,
            "language": "en",
        }
    )
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"]))
    async with client:
        submitted = await client.submit(request.to_api_body())
    assert (submitted.task_id, submitted.queue_position) == (TASK_A, 1)
    sent = api.calls("/release_task")[0].json()
    assert_same_types(sent, STEP2_REQUEST)
    # A random seed is the int -1 (API.md); the captured string form is for seed lists.
    assert_same_types(sent, {k: v for k, v in STEP19_REQUEST.items() if k != "seed"})
    assert sent["sample_mode"] is True and sent["thinking"] is True
    assert sent["sample_query"] == "upbeat synthwave about neon lights, female vocals"
    assert (sent["prompt"], sent["lyrics"]) == ("", "")  # the model writes both
    # bpm an int, the time signature the numerator as a string, the key as the server spells it.
    assert (sent["bpm"], sent["time_signature"], sent["key_scale"]) == (120, "4", "A minor")
    assert sent["audio_duration"] == 30 and sent["vocal_language"] == "en"
    assert sent["batch_size"] == 1 and sent["use_random_seed"] is True


async def test_a_simple_mode_instrumental_says_so_in_the_description(
    api: ScriptedApi, client: BygheartClient
) -> None:
    request = SongRequest.build({"description": "calm piano at dawn", "instrumental": True})
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"]))
    async with client:
        await client.submit(request.to_api_body())
    sent = api.calls("/release_task")[0].json()
    # /release_task has no instrumental field in Simple mode: the server reads the text.
    assert sent["sample_query"] == "calm piano at dawn, instrumental"
    assert sent["lyrics"] == "" and "instrumental" not in sent


# -- what we read: captured query_result replies -------------------------------------------


async def test_captured_success_entries_carry_what_the_model_used(
    api: ScriptedApi, client: BygheartClient
) -> None:
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_done"]))
    async with client:
        results = await client.query([TASK_A, TASK_B, TASK_C, TASK_UNKNOWN])
    a, b, c, unknown = (results[t] for t in (TASK_A, TASK_B, TASK_C, TASK_UNKNOWN))
    assert (a.state, b.state, c.state) == (
        TaskState.SUCCEEDED,
        TaskState.SUCCEEDED,
        TaskState.FAILED,
    )
    assert unknown.state is TaskState.UNKNOWN and not c.outputs
    [take] = a.outputs
    assert take.file == FILE_A_REF
    assert (take.prompt, take.lyrics) == (
        "upbeat synthwave, female vocals",
        "[verse]\nneon lights tonight",
    )
    assert take.metas == {
        "bpm": "N/A",
        "duration": 30.0,
        "genres": "N/A",
        "keyscale": "N/A",
        "timesignature": "N/A",
        "prompt": "upbeat synthwave, female vocals",
        "lyrics": "[verse]\nneon lights tonight",
    }
    assert (take.seed, take.dit_model, take.lm_model) == (
        "1852436498",
        "acestep-v15-turbo",
        "acestep-5Hz-lm-0.6B",
    )
    # One seed per take out of the shared comma-joined `seed_value`.
    assert [t.seed for t in b.outputs] == ["1998814755", "2172961275"]
    assert a.progress == 1.0 and a.stage == "succeeded"
    assert a.progress_text == "23:32:49 | INFO | [stub generate_music] diffusion step 4/4"


async def test_generated_is_empty_when_the_server_sang_what_was_asked(
    api: ScriptedApi, client: BygheartClient
) -> None:
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_done"]), ok(TRANSCRIPT["query_form"]))
    async with client:
        done = await client.query([TASK_A, TASK_B])
        form = await client.query(["110de930-911d-455a-a80e-0d0709375a5c"])
    asked_a = SongRequest.build(
        {
            "style": "upbeat synthwave, female vocals",
            "lyrics": "[verse]\nneon lights tonight",
            "duration": 30,
        }
    ).model_dump(mode="json", exclude_none=True)
    assert generated_song(asked_a, tuple(done[TASK_A].outputs)) is None
    # "N/A" metas are no values, so an echo of the request is nothing new either.
    asked_b = {"style": "lofi hip hop piano", "lyrics": "[inst]"}
    assert generated_song(asked_b, tuple(done[TASK_B].outputs)) is None
    asked_19 = {"style": "jazz trio", "lyrics": "[inst]", "duration": 20.0}
    assert (
        generated_song(asked_19, tuple(form["110de930-911d-455a-a80e-0d0709375a5c"].outputs))
        is None
    )


async def test_generated_holds_what_the_model_wrote_for_a_description(
    api: ScriptedApi, client: BygheartClient
) -> None:
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_done"]))
    async with client:
        done = await client.query([TASK_A])
    asked = SongRequest.build({"description": "neon synthwave night drive"}).model_dump(
        mode="json", exclude_none=True
    )
    assert generated_song(asked, tuple(done[TASK_A].outputs)) == {
        "style": "upbeat synthwave, female vocals",
        "lyrics": "[verse]\nneon lights tonight",
        "duration": 30.0,
    }


async def test_queued_running_and_restarted_entries_require_nothing(
    api: ScriptedApi, client: BygheartClient
) -> None:
    api.expect(
        "POST",
        "/query_result",
        ok(TRANSCRIPT["query_running"]),
        ok(TRANSCRIPT["query_after_restart"]),
    )
    async with client:
        running = await client.query([TASK_A, TASK_B, TASK_C, TASK_UNKNOWN])
        restarted = await client.query(
            [
                "c1921a7b-ed3b-4c27-9638-619567fc1733",
                "e1a653e7-724e-4df6-9a68-58c856f8a8d1",
                "f85d76bd-c5e4-4535-9b5d-94ee8c745a19",
            ]
        )
    assert running[TASK_A].state is TaskState.QUEUED_OR_RUNNING
    assert (running[TASK_A].progress, running[TASK_A].stage) == (0.2, "stub diffusion step 1/4")
    assert running[TASK_B].stage == "queued" and not running[TASK_B].outputs
    assert running[TASK_UNKNOWN].state is TaskState.UNKNOWN
    states = [r.state for r in restarted.values()]
    assert states == [TaskState.SUCCEEDED, TaskState.QUEUED_OR_RUNNING, TaskState.UNKNOWN]
    [kept] = restarted["c1921a7b-ed3b-4c27-9638-619567fc1733"].outputs
    assert (kept.prompt, kept.lyrics) == ("finished before restart", "")


async def test_the_three_file_forms_of_a_captured_path_download_the_same_file(
    api: ScriptedApi, client: BygheartClient, tmp_path: Path
) -> None:
    server_path = api.add_audio(FILE_A, MP3_HEAD + bytes(4096))
    assert server_path == "/srv/acestep/api_audio/" + FILE_A  # the captured server path
    absolute = client.base_url.rstrip("/") + FILE_A_REF
    async with client:
        got = [
            await client.download(ref, tmp_path / f"take{n}")
            for n, ref in enumerate((FILE_A_REF, absolute, server_path))
        ]
    assert [g.path.name for g in got] == ["take0.mp3", "take1.mp3", "take2.mp3"]
    assert {g.path.read_bytes() for g in got} == {MP3_HEAD + bytes(4096)}
    queries = {r.query for r in api.calls("/v1/audio")}
    assert queries == {"path=%2Fsrv%2Facestep%2Fapi_audio%2F" + FILE_A}


async def test_captured_stats_and_models_replies_parse(
    api: ScriptedApi, client: BygheartClient
) -> None:
    api.expect("GET", "/v1/stats", ok(TRANSCRIPT["stats"]), ok(TRANSCRIPT["stats"]))
    api.expect("GET", "/v1/models", ok(STEP24_MODELS))
    async with client:
        stats = await client.stats()
        probed = await client.probe()
        models = await client.models()
    assert stats == probed
    assert stats is not None and stats["jobs"] == {
        "total": 6,
        "queued": 0,
        "running": 0,
        "succeeded": 4,
        "failed": 2,
    }
    assert (stats["queue_size"], stats["queue_maxsize"]) == (0, 200)
    assert models == ["acestep/acestep-v15-turbo"]


# -- the whole way: a description becomes a song with what the model wrote -----------------


async def test_a_description_ends_as_a_song_whose_sidecar_holds_the_captured_writing(
    api: ScriptedApi, server: tuple[ScriptedApi, ServerThread], make_config: MakeConfig,
    tmp_path: Path,
) -> None:  # fmt: skip
    api.add_audio(FILE_A, MP3_HEAD + bytes(4096))
    api.expect("POST", "/release_task", ok(TRANSCRIPT["submit_a"]))
    # The captured replies in their order: A running, then A done (kept for re-polls).
    api.expect("POST", "/query_result", ok(TRANSCRIPT["query_running"]))
    api.expect("POST", "/query_result", *(ok(TRANSCRIPT["query_done"]) for _ in range(20)))
    song = tmp_path / "night-drive.yaml"
    song.write_text("description: a neon synthwave night drive\nmodel: bygheart-melody-fast\n")
    config = make_config(api={"base_url": server[1].origin + PREFIX})
    async with Runtime(config, role=EngineRole.SUBMIT) as runtime:
        job = await runtime.service.submit_file(song)  # it wakes the engine
        job = await runtime.service.wait(job.id, timeout=30)
    assert job.status is JobStatus.DONE, job.reason
    sent = api.calls("/release_task")[0].json()
    assert sent["sample_mode"] is True
    assert sent["sample_query"] == "a neon synthwave night drive"
    written = {
        "style": "upbeat synthwave, female vocals",
        "lyrics": "[verse]\nneon lights tonight",
        "duration": 30.0,
    }
    assert job.generated() == written
    [sidecar] = sidecars(config.folders.output).values()
    assert sidecar["generated"] == written
    assert job.title == "night-drive"  # the file names it; never song-<id>


# -- the language-model helpers: reply shapes of the server's own route code ---------------
# (never captured; see the module docstring)

CREATE_SAMPLE_DATA = {
    "caption": "city pop, rainy night, female vocal",
    "lyrics": "[Verse]\nRain on the window\n\n[Chorus]\nTokyo tonight",
    "bpm": 104,
    "keyscale": "F# minor",
    "duration": 150.0,
    "timesignature": "4",
    "vocal_language": "ja",
}
FORMAT_INPUT_DATA = {
    "caption": "indie folk, male vocal",
    "lyrics": "[Verse]\nPaper moon",
    "bpm": 96,
    "key_scale": "D major",
    "time_signature": "4",
    "duration": 150.0,
    "vocal_language": "unknown",
}


def enveloped(data: Any, code: int = 200, error: str | None = None) -> Reply:
    body = {"data": data, "code": code, "error": error, "timestamp": 1795476774102, "extra": None}
    return ok(json.dumps(body, separators=(",", ":")))


async def test_helper_replies_in_the_servers_shapes_become_drafts(
    api: ScriptedApi, client: BygheartClient
) -> None:
    api.expect("POST", "/v1/create_sample", enveloped(CREATE_SAMPLE_DATA))
    api.expect("POST", "/format_input", enveloped(FORMAT_INPUT_DATA))
    # A bundled example: the server returns the example file as it is (any key may be absent).
    api.expect("POST", "/create_random_sample", enveloped({"caption": "lofi", "lyrics": ""}))
    async with client:
        sample = await client.create_sample("rainy night in Tokyo", language="ja")
        polished = await client.format_input(
            "indie folk, Male Vocal", "[verse]\npaper moon",
            params={"bpm": 96, "duration": 150, "key_scale": "D major", "time_signature": "4",
                    "language": None},
        )  # fmt: skip
        example = await client.create_random_sample()
    assert sample.as_dict() == {
        "style": "city pop, rainy night, female vocal",
        "lyrics": "[Verse]\nRain on the window\n\n[Chorus]\nTokyo tonight",
        "bpm": 104,
        "key": "F# minor",
        "duration": 150.0,
        "time_signature": "4",
        "language": "ja",
    }
    # format_input names them key_scale / time_signature; "unknown" is no language.
    assert (polished.key, polished.time_signature, polished.language) == ("D major", "4", None)
    assert (example.style, example.lyrics, example.bpm) == ("lofi", None, None)
    body = api.calls("/format_input")[0].json()
    # The server reads param_obj as a JSON *string* with these names (and `key` or `key_scale`).
    assert isinstance(body["param_obj"], str)
    assert json.loads(body["param_obj"]) == {
        "bpm": 96,
        "duration": 150,
        "key_scale": "D major",
        "time_signature": "4",
    }
    assert shape(body) == {"prompt": "str", "lyrics": "str", "temperature": "number",
                           "param_obj": "str"}  # fmt: skip
    assert shape(api.calls("/v1/create_sample")[0].json()) == {
        "query": "str",
        "instrumental": "bool",
        "vocal_language": "str",
        "temperature": "number",
    }


@pytest.mark.parametrize(
    "reply",
    [
        # create_sample with LM lazy loading disabled (the CPU-only default).
        Reply(
            503,
            '{"detail":"LLM not initialized. Set ACESTEP_INIT_LLM=true in .env to enable."}',
            media_type="application/json",
        ),
        # The LM failed to load on first use.
        Reply(
            500,
            '{"detail":"LLM init failed: checkpoint acestep-5Hz-lm-0.6B could not be loaded"}',
            media_type="application/json",
        ),
    ],
    ids=["503-not-initialized", "500-init-failed"],
)
async def test_a_server_whose_lm_cannot_load_is_named_and_not_retried(
    api: ScriptedApi, client: BygheartClient, reply: Reply
) -> None:
    api.expect("POST", "/v1/create_sample", reply)
    async with client:
        with pytest.raises(LmUnavailable) as caught:
            await client.create_sample("anything")
    message = str(caught.value)
    assert "does not offer inspiration and polish" in message
    assert "language model is not loaded" in message and "submit --describe" in message
    assert len(api.calls("/v1/create_sample")) == 1


async def test_envelope_errors_of_the_helpers_keep_the_servers_message(
    api: ScriptedApi, client: BygheartClient
) -> None:
    api.expect(
        "POST", "/format_input", enveloped(None, 500, "format_sample failed: lyrics too long")
    )
    api.expect("POST", "/create_random_sample", enveloped(None, 500, "No example data available"))
    async with client:
        with pytest.raises(RejectedError, match="format_sample failed: lyrics too long"):
            await client.format_input("pop", "[Verse]\nla")
        with pytest.raises(RejectedError, match="No example data available"):
            await client.create_random_sample()


# -- the simulator answers in the captured shapes, in both backend modes --------------------

CAPTURED = {
    "submit": json.loads(TRANSCRIPT["submit_a"]),
    "running": entries(TRANSCRIPT["query_running"])[0],
    "queued": entries(TRANSCRIPT["query_running"])[1],
    "unknown": entries(TRANSCRIPT["query_running"])[3],
    "done": entries(TRANSCRIPT["query_done"])[0],
    "failed": entries(TRANSCRIPT["query_done"])[2],
    "stats": json.loads(TRANSCRIPT["stats"]),
    "health": json.loads(TRANSCRIPT["health"]),
    "models": json.loads(STEP24_MODELS),
}


@pytest.mark.parametrize("backend", ["bygheart", "acestep"])
def test_the_simulator_answers_in_the_captured_shapes(backend: str) -> None:
    auth: dict[str, Any] = {"key": None} if backend == "acestep" else {}
    with simulator(backend=backend, workers=1, latency=1.0, **auth) as (handle, client):
        first = client.post("/release_task", json={"prompt": "x", "batch_size": 1})
        simple = client.post(
            "/release_task",
            json={"sample_mode": True, "sample_query": "rainy tokyo city pop", "batch_size": 1,
                  "thinking": True},
        )  # fmt: skip
        ids = [first.json()["data"]["task_id"], simple.json()["data"]["task_id"]]
        wait_until(lambda: handle.sim.tasks[ids[0]].state == "running")
        early = client.post("/query_result", json={"task_id_list": [*ids, TASK_UNKNOWN]})
        done = [wait_final(client, task_id, timeout=30) for task_id in ids]
        failed = wait_final(client, submit(client, prompt="please FAIL this one"), timeout=30)
        stats = client.get("/v1/stats").json()
        health = client.get("/health").json()
        models = client.get("/v1/models").json()
    # The envelope, and the submit reply inside it.
    assert shape(first.json()) == shape(CAPTURED["submit"])
    assert shape(simple.json()) == shape(CAPTURED["submit"])
    got = [{**e, "result": json.loads(e["result"])} for e in early.json()["data"]]
    raw = early.json()["data"]
    assert all(isinstance(e["result"], str) for e in raw)  # a JSON string, as captured
    states = {e["result"][0]["stage"] if e["result"] else "unknown": e for e in got}
    running = next(e for s, e in states.items() if s not in ("queued", "unknown"))
    assert shape(running) == shape(CAPTURED["running"])
    assert shape(states["queued"]) == shape(CAPTURED["queued"])
    assert shape(states["unknown"]) == shape(CAPTURED["unknown"])
    for entry in done:
        assert entry["status"] == 1, entry
        [element] = entry["result"]
        captured = CAPTURED["done"]["result"][0]
        assert list(element) == list(captured)
        assert list(element["metas"]) == list(captured["metas"])
        for name in ("file", "wave", "status", "create_time", "env", "prompt", "lyrics",
                     "generation_info", "seed_value", "lm_model", "dit_model", "progress",
                     "stage"):  # fmt: skip
            assert shape(element[name]) == shape(captured[name]), name
    # Simple mode: the model's writing is in the entry, its metas are numbers and texts.
    written = done[1]["result"][0]
    assert written["prompt"] and written["lyrics"].startswith("[Verse")
    assert isinstance(written["metas"]["bpm"], int)
    assert isinstance(written["metas"]["duration"], float)
    assert isinstance(written["metas"]["timesignature"], str)
    assert shape(failed) == shape(CAPTURED["failed"])
    assert shape(stats) == shape(CAPTURED["stats"])
    assert shape(health) == shape(CAPTURED["health"])
    assert shape(models) == shape(CAPTURED["models"])


# -- expert controls: the names the server's /release_task reads -----------------------------

# The request fields ACE-Step 1.5's `/release_task` reads (May 2026 snapshot,
# acestep/api/http/release_task_request_builder.py; `timesteps` from the Feb snapshot's
# GenerateMusicRequest). The server silently ignores any other name.
SERVER_FIELDS = frozenset(
    [
        "prompt",
        "global_caption",
        "lyrics",
        "thinking",
        "analysis_only",
        "full_analysis_only",
        "extract_codes_only",
        "sample_mode",
        "sample_query",
        "use_format",
        "model",
        "bpm",
        "key_scale",
        "time_signature",
        "audio_duration",
        "vocal_language",
        "inference_steps",
        "guidance_scale",
        "use_random_seed",
        "seed",
        "batch_size",
        "repainting_start",
        "repainting_end",
        "instruction",
        "audio_cover_strength",
        "cover_noise_strength",
        "audio_code_string",
        "reference_audio_path",
        "src_audio_path",
        "task_type",
        "chunk_mask_mode",
        "repaint_latent_crossfade_frames",
        "repaint_wav_crossfade_sec",
        "repaint_mode",
        "repaint_strength",
        "use_adg",
        "cfg_interval_start",
        "cfg_interval_end",
        "infer_method",
        "shift",
        "audio_format",
        "use_tiled_decode",
        "lm_model_path",
        "lm_backend",
        "lm_temperature",
        "lm_cfg_scale",
        "lm_top_k",
        "lm_top_p",
        "lm_repetition_penalty",
        "lm_negative_prompt",
        "constrained_decoding",
        "constrained_decoding_debug",
        "use_cot_caption",
        "use_cot_language",
        "is_format_caption",
        "allow_lm_batch",
        "track_name",
        "track_classes",
        "timesteps",
    ]
)
EXPERT_SONGS: list[dict[str, Any]] = [
    {"task_type": "cover", "source_audio": "a.wav", "cover_strength": 0.5, "cover_noise": 0.2},
    {
        "task_type": "repaint",
        "source_audio": "a.wav",
        "repaint_mode": "balanced",
        "repaint_strength": 0.4,
        "repaint_crossfade_frames": 8,
        "repaint_crossfade_seconds": 0.5,
        "repainting_start": 1,
        "repainting_end": 5,
    },
    {"task_type": "lego", "source_audio": "a.wav", "track_name": "drums"},
    {"task_type": "complete", "source_audio": "a.wav", "track_classes": ["bass", "drums"]},
    {
        "lm_repetition_penalty": 1.1,
        "use_cot_caption": False,
        "use_cot_language": True,
        "infer_method": "sde",
        "shift": 2.0,
        "timesteps": "0.9,0.5,0",
        "use_adg": True,
        "cfg_interval_start": 0.1,
        "cfg_interval_end": 0.9,
        "negative": "screaming",
        "lm_temperature": 0.9,
        "lm_cfg_scale": 2.0,
        "lm_top_k": 40,
        "lm_top_p": 0.9,
        "inference_steps": 32,
        "bpm": 100,
        "key": "C major",
        "time_signature": "3",
    },
]


@pytest.mark.parametrize("extra", EXPERT_SONGS, ids=lambda e: e.get("task_type", "expert"))
def test_every_field_sent_is_one_the_server_reads(extra: dict[str, Any]) -> None:
    data = {"style": "pop", "lyrics": "[Verse]\nla", "model": "acestep-v15-base", **extra}
    request = SongRequest.build(data, RequestRules(backend="acestep"))
    body = request.to_api_body()
    assert set(body) <= SERVER_FIELDS, set(body) - SERVER_FIELDS
    assert request.warnings() == []


def test_use_cot_metas_is_sent_but_the_user_hears_the_stock_server_ignores_it() -> None:
    request = SongRequest.build({"style": "pop", "lyrics": "[Verse]\nla", "use_cot_metas": False})
    assert request.to_api_body()["use_cot_metas"] is False  # for servers that read it
    [warning] = request.warnings()
    assert warning.startswith("use_cot_metas: a stock ACE-Step server ignores this switch")
    assert "set bpm, key, time_signature and duration" in warning
