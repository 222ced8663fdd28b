"""Edit tasks end to end (issue 27): extend, stems, describe and model-aware routing, through
the CLI as a subprocess against simulated ACE-Step servers where only one has a base model
loaded; the simulator's own edit-task behaviour checked against the captured replies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _daemon import cli
from _jobs import song
from conftest import MakeConfig

from bygheartd.api.inventory import parse_inventory, ran_elsewhere
from bygheartd.api.results import TaskState, parse_task_entry
from bygheartd.jobs import Take
from bygheartd.simulator import RunningSimulator, SimulatorSettings
from bygheartd.simulator.server import run_in_thread
from bygheartd.songs.request import RequestRules
from bygheartd.songs.songfile import parse_song_file, parse_song_text

TURBO = "acestep-v15-turbo"
BASE = "acestep-v15-base"
TRANSCRIPTS = Path("/work/shared/API-TRANSCRIPTS-TASKS.md")


@pytest.fixture
def pool() -> Iterator[tuple[RunningSimulator, RunningSimulator]]:
    """Two ACE-Step servers: the first has only turbo loaded, the second turbo and base."""
    common: dict[str, Any] = {"backend": "acestep", "latency": 0.2, "audio_scale": 0.1, "seed": 5}
    with (
        run_in_thread(SimulatorSettings(**common)) as turbo,
        run_in_thread(SimulatorSettings(dit_models=f"{TURBO},{BASE}", **common)) as both,
    ):
        yield turbo, both


def _config(make_config: MakeConfig, *sims: RunningSimulator, tmp_path: Path) -> Path:
    servers = [{"url": s.base_url, "max_in_flight": 2} for s in sims]
    make_config(api={"backend": "acestep", "servers": servers})
    return tmp_path / "config.toml"


def _json(done: Any) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _seconds(path: Path) -> float:
    """Measured as bygheartd measures a source (a header's frame count, not a decode)."""
    from bygheartd.songs.audiolength import audio_seconds

    return audio_seconds(path)


def test_extend_stems_describe_and_models_on_a_pool_with_one_base_server(
    pool: tuple[RunningSimulator, RunningSimulator], make_config: MakeConfig, tmp_path: Path
) -> None:
    turbo, both = pool
    path = _config(make_config, turbo, both, tmp_path=tmp_path)
    [made] = _json(
        cli(path, "submit", str(song(tmp_path, "s.txt", title="Night Drive", model=TURBO)),
            "--wait", "--json")
    )  # fmt: skip
    assert made["status"] == "done", made
    take = Path(made["files"][0]["path"])
    source_seconds = _seconds(take)

    # Stems: one extract per track, only on the server with a base model, one folder.
    stems = cli(path, "stems", made["id"], "--tracks", "vocals,drums,bass", "--wait", "--json")
    records = _json(stems)
    assert [r["status"] for r in records] == ["done"] * 3, records
    assert [r["title"] for r in records] == [
        f"Night Drive ({t})" for t in ("vocals", "drums", "bass")
    ]
    extracts = [t.params for t in both.sim.tasks.values() if t.params.task_type == "extract"]
    assert sorted(p.track_name or "" for p in extracts) == ["bass", "drums", "vocals"]
    assert {p.model for p in extracts} == {BASE}
    assert all(p.inference_steps == 32 and p.guidance_scale == 7.0 for p in extracts)
    assert not [t for t in turbo.sim.tasks.values() if t.params.task_type == "extract"]
    folder = tmp_path / "bgh" / "output" / "night-drive-stems"
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".mp3")
    assert names == ["night-drive.bass.mp3", "night-drive.drums.mp3", "night-drive.vocals.mp3"]
    assert all(not r["warnings"] for r in records), [r["warnings"] for r in records]

    # Extend: a new job, the whole song 6 s longer (the server pads past the end).
    extended = _json(cli(path, "extend", made["id"], "--seconds", "6", "--wait", "--json"))
    [record] = extended
    assert record["status"] == "done" and record["title"] == "Night Drive (extended)"
    [repaint] = [
        t.params for s in pool for t in s.sim.tasks.values() if t.params.task_type == "repaint"
    ]
    assert repaint.repainting_end == pytest.approx(source_seconds + 6, abs=0.01)
    assert 0 < (repaint.repainting_start or 0) < source_seconds  # re-blends the seam
    longer = Path(record["files"][0]["path"])
    assert _seconds(longer) == pytest.approx(source_seconds + 6, abs=0.2)

    # Describe: a draft song file from any audio, no audio made.
    draft = tmp_path / "like-this.md"
    described = cli(path, "describe", str(longer), "-o", str(draft))
    assert described.returncode == 0, described.stderr
    request = parse_song_file(draft, RequestRules(backend="acestep"))
    assert request.style and request.bpm and request.key and request.time_signature == "4"
    assert request.lyrics.startswith("[Verse]")

    # Models: what each server has loaded.
    shown = _json(cli(path, "models", "--json"))
    loaded = {
        s["url"]: [m["name"] for m in s["inventory"]["models"] if m["loaded"]]
        for s in shown["servers"]
    }
    assert loaded == {turbo.base_url: [TURBO], both.base_url: [BASE, TURBO]}
    text = cli(path, "models")
    assert text.returncode == 0 and "extract, lego, complete" in text.stdout


def test_stems_of_an_audio_file_with_no_base_server_fail_saying_so(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    with run_in_thread(SimulatorSettings(backend="acestep", latency=0.1, seed=2)) as sim:
        make_config(api={"backend": "acestep", "base_url": sim.base_url})
        path = tmp_path / "config.toml"
        audio = tmp_path / "mine.wav"
        _write_wav(audio, 2.0)
        done = cli(path, "stems", str(audio), "--tracks", "vocals", "--wait", "--json")
        [record] = json.loads(done.stdout)
        assert record["status"] == "failed"
        assert "no server has acestep-v15-base loaded" in record["reason"]
        assert not sim.sim.tasks  # nothing was sent to a server that would run it on turbo
        assert record["warnings"] == []
        said = cli(path, "stems", str(audio), "--tracks", "vocals,drums")
        assert "2 stems (vocals, drums): 2 generations, one per stem" in said.stderr
        bad = cli(path, "stems", str(audio), "--tracks", "flute")
        assert bad.returncode == 1 and "unknown track 'flute'" in bad.stderr


def test_a_model_that_is_not_loaded_runs_on_slot_one_and_the_job_says_so(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    with run_in_thread(SimulatorSettings(backend="acestep", latency=0.1, seed=2)) as sim:
        make_config(api={"backend": "acestep", "base_url": sim.base_url})
        path = tmp_path / "config.toml"
        file = song(tmp_path, "sft.txt", title="Asked SFT", model="acestep-v15-sft")
        [record] = _json(cli(path, "submit", str(file), "--wait", "--json"))
    assert record["status"] == "done"
    assert any("ran on acestep-v15-turbo instead" in w for w in record["warnings"])
    [task] = sim.sim.tasks.values()
    assert task.params.inference_steps == 50  # the sft family's default, sent explicitly


def _write_wav(path: Path, seconds: float) -> None:
    import numpy as np
    import soundfile as sf

    sf.write(str(path), np.zeros((int(48000 * seconds), 2)), 48000)


# -- song-file keys -----------------------------------------------------------------------


def test_the_edit_keys_become_the_servers_fields(tmp_path: Path) -> None:
    _write_wav(tmp_path / "song.wav", 10.0)
    rules = RequestRules(backend="acestep")

    def parsed(front: str) -> dict[str, Any]:
        (tmp_path / "x.md").write_text(f"---\n{front}\nsource_audio: song.wav\n---\n")
        return parse_song_file(tmp_path / "x.md", rules).to_api_body()

    after = parsed("style: pop\nextend: 30")
    assert after["task_type"] == "repaint"
    assert (after["repainting_start"], after["repainting_end"]) == (8.0, 40.0)
    before = parsed("style: pop\nextend_before: 5")
    assert (before["repainting_start"], before["repainting_end"]) == (-5.0, 2.0)
    layer = parsed("style: tight funk drums\nadd_layer: drums")
    assert (layer["task_type"], layer["track_name"], layer["model"]) == ("lego", "drums", BASE)
    backing = parsed("accompany: [drums, bass]")
    assert backing["task_type"] == "complete" and backing["track_classes"] == ["drums", "bass"]
    assert backing["inference_steps"] == 32 and backing["shift"] == 3.0


@pytest.mark.parametrize(
    ("front", "message"),
    [
        ("extend: 30", "extend needs source_audio"),
        ("extend: 30\nextend_before: 3\nsource_audio: a.wav", "extend and extend_before are"),
        ("stems: [vocals, kazoo]\nsource_audio: a.wav", "unknown track 'kazoo'"),
        ("add_layer: drums\ntask_type: cover\nsource_audio: a.wav", "remove task_type"),
        ("task_type: repaint\nrepaint_mode: wild\nsource_audio: a.wav", "unknown repaint_mode"),
        ("task_type: repaint\nrepaint_strength: 2\nsource_audio: a.wav", "repaint_strength"),
    ],
)
def test_edit_keys_the_server_would_answer_with_a_500_are_refused_here(
    front: str, message: str
) -> None:
    with pytest.raises(Exception, match=message):
        parse_song_text(
            f"---\nstyle: x\n{front}\n---\n", RequestRules(backend="acestep"), name="s.md"
        )


# -- the captured replies as test vectors ---------------------------------------------------


def _captured(step: str) -> dict[str, Any]:
    """The JSON body of a capture step in API-TRANSCRIPTS-TASKS.md."""
    text = TRANSCRIPTS.read_text(encoding="utf-8")
    part = text.split(f"### {step}.", 1)[1]
    line = next(x for x in part.splitlines() if x.startswith("{"))
    found: dict[str, Any] = json.loads(line)
    return found


needs_transcripts = pytest.mark.skipif(not TRANSCRIPTS.is_file(), reason="no captures here")


@needs_transcripts
def test_the_captured_inventory_reads_as_loaded_models_with_slot_one_first() -> None:
    inventory = parse_inventory(_captured("R1-8")["data"])
    assert inventory.loaded() == [TURBO, BASE]
    assert inventory.default_model == TURBO


@needs_transcripts
def test_the_captured_analysis_is_a_success_without_a_file() -> None:
    [entry] = _captured("R1-40")["data"]
    result = parse_task_entry(entry)
    assert result.state is TaskState.SUCCEEDED and not result.outputs
    assert result.analysis is not None and result.analysis["keyscale"] == "C major"


@needs_transcripts
def test_the_captured_silent_fallback_is_a_warning() -> None:
    [entry] = _captured("R1-48")["data"]
    takes = parse_task_entry(entry).outputs
    warning = ran_elsewhere("acestep-v15-xl-base", takes)
    assert warning is not None and warning.startswith("ran on acestep-v15-turbo instead")
    assert ran_elsewhere(TURBO, [Take(file="f", dit_model=TURBO)]) is None


def test_the_simulators_inventory_and_analysis_have_the_captured_shapes(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    import httpx

    with run_in_thread(
        SimulatorSettings(backend="acestep", dit_models=f"{TURBO},{BASE}", latency=0.05)
    ) as sim:
        inventory = httpx.get(sim.base_url + "/v1/model_inventory").json()["data"]
        audio = tmp_path / "a.wav"
        _write_wav(audio, 3.0)
        with audio.open("rb") as fh:
            task = httpx.post(
                sim.base_url + "/release_task",
                data={"full_analysis_only": "true"},
                files={"src_audio": ("a.wav", fh, "audio/wav")},
            ).json()["data"]["task_id"]
        import time

        for _ in range(100):
            [entry] = httpx.post(
                sim.base_url + "/query_result", json={"task_id_list": [task]}
            ).json()["data"]
            if entry["status"] != 0:
                break
            time.sleep(0.05)
    assert list(inventory) == [
        "models",
        "default_model",
        "lm_models",
        "loaded_lm_model",
        "llm_initialized",
    ]
    turbo = next(m for m in inventory["models"] if m["name"] == TURBO)
    assert "extract" not in turbo["supported_task_types"]
    [element] = json.loads(entry["result"])
    assert entry["status"] == 1 and "file" not in element and "status" not in element
    assert element["status_message"] == "Full Hardware Analysis Success"
    assert element["duration"] == 3 and element["metas"]["timesignature"] == "4"


# -- MCP ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_mcp_extend_song_make_stems_and_describe_audio(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    from mcp import Client

    from bygheartd.mcp.server import build_server
    from bygheartd.runtime import EngineRole, Runtime

    settings = SimulatorSettings(
        backend="acestep", dit_models=f"{TURBO},{BASE}", latency=0.1, audio_scale=0.1, seed=4
    )
    with run_in_thread(settings) as sim:
        config = make_config(api={"backend": "acestep", "base_url": sim.base_url})
        async with Runtime(config, role=EngineRole.MCP, engine=True) as runtime:
            service = runtime.service
            made = await service.submit_file(song(tmp_path, "m.txt", title="Harbour", model=TURBO))
            made = await service.wait(made.id, timeout=30, interval=0.05)
            async with Client(build_server(service)) as client:
                stems = await client.call_tool(
                    "make_stems", {"job_id": made.id, "tracks": ["vocals", "drums"]}
                )
                extended = await client.call_tool("extend_song", {"job_id": made.id, "seconds": 4})
                described = await client.call_tool("describe_audio", {"job_id": made.id})
                outside = await client.call_tool("describe_audio", {"audio_file": "/etc/passwd"})
                neither = await client.call_tool("make_stems", {})
                tools = {t.name for t in (await client.list_tools()).tools}
            result: dict[str, Any] = stems.structured_content or {}
            done = [await service.wait(s["id"], timeout=30, interval=0.05) for s in result["stems"]]
            longer = await service.wait(
                (extended.structured_content or {})["id"], timeout=30, interval=0.05
            )
    assert {"extend_song", "make_stems", "describe_audio"} <= tools
    assert not stems.is_error, stems.content
    assert result["generations"] == 2 and result["folder"].endswith("harbour-stems")
    assert [j.status.value for j in done] == ["done", "done"]
    assert sorted(p.name for j in done for p in (f.path for f in j.files)) == [
        "harbour.drums.mp3",
        "harbour.vocals.mp3",
    ]
    assert longer.title == "Harbour (extended)" and longer.status.value == "done"
    draft: dict[str, Any] = described.structured_content or {}
    assert not described.is_error, described.content
    assert draft["song"]["bpm"] and draft["song"]["lyrics"].startswith("[Verse]")
    assert outside.is_error and "outside the drafts" in str(outside.content)
    assert neither.is_error and "one of them" in str(neither.content)


@pytest.mark.parametrize("name", ["extend-night-drive.md", "stems-night-drive.yaml"])
def test_the_edit_examples_parse_beside_their_audio(name: str, tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    example = Path(__file__).resolve().parent.parent / "examples" / "edits" / name
    (tmp_path / name).write_bytes(example.read_bytes())
    sf.write(str(tmp_path / "night-drive.mp3"), np.zeros((48000 * 4, 2)), 48000, format="MP3")
    request = parse_song_file(tmp_path / name, RequestRules(backend="acestep"))
    if name.startswith("extend"):
        assert request.task_type == "repaint" and request.repainting_end == pytest.approx(34, 0.05)
    else:
        assert request.stems == ["vocals", "drums", "bass"] and request.model == BASE


@pytest.mark.anyio
async def test_a_dropped_stems_file_queues_every_stem_once(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    from bygheartd.runtime import open_service
    from bygheartd.watch.intake import Intake

    config = make_config(api={"backend": "acestep", "base_url": "http://127.0.0.1:9"})
    service = open_service(config)
    try:
        _write_wav(config.folders.inbox / "tune.wav", 2.0)
        path = config.folders.inbox / "tune.yaml"
        path.write_text("title: Tune\nstems: [vocals, bass]\nsource_audio: tune.wav\n")
        intake = Intake(config, service)
        outcome = await intake.process(path)
        again = await intake.process(path)  # a second event for the same file: nothing new
        jobs = sorted(await service.list(), key=lambda j: j.title)
    finally:
        await service.close()
    assert outcome.kind == "accepted", outcome
    assert again.kind != "accepted"
    assert [j.title for j in jobs] == ["Tune (bass)", "Tune (vocals)"]
    assert {j.request["stem_group"] for j in jobs} == {"tune"}
    assert [j.request["track_name"] for j in jobs] == ["bass", "vocals"]
    assert sum(1 for j in jobs if j.archived_as) == 1  # the drop is recorded on the first


def test_describe_and_extend_refusals_say_what_to_do(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    audio = tmp_path / "tune.wav"
    _write_wav(audio, 2.0)
    settings = SimulatorSettings(backend="acestep", latency=0.05, lm_available=False)
    with run_in_thread(settings) as sim:
        make_config(api={"backend": "acestep", "base_url": sim.base_url})
        path = tmp_path / "config.toml"
        no_lm = cli(path, "describe", str(audio), "-o", "-")
        queued = _json(cli(path, "submit", str(song(tmp_path, "q.txt", model=TURBO)), "--json"))
        not_done = cli(path, "extend", queued[0]["id"], "--seconds", "5")
    assert no_lm.returncode == 1 and "needs the server's language model" in no_lm.stderr
    assert not_done.returncode == 1 and "is queued, not done" in not_done.stderr
    make_config(api={"backend": "bygheart", "base_url": "http://127.0.0.1:9"})
    hosted = cli(tmp_path / "config.toml", "describe", str(audio))
    assert hosted.returncode == 1 and "needs a self-hosted ACE-Step server" in hosted.stderr


def test_stems_on_the_hosted_api_are_the_same_tasks_with_their_cost_said_first(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    make_config(simulator)
    path = tmp_path / "config.toml"
    audio = tmp_path / "tune.wav"
    _write_wav(audio, 1.0)
    done = cli(path, "stems", str(audio), "--tracks", "vocals", "--wait")
    assert done.returncode == 0, done.stderr
    assert "1 stem (vocals): 1 generation, one per stem, 2 credits" in done.stderr
    [task] = simulator.sim.tasks.values()
    assert (task.params.task_type, task.params.track_name) == ("extract", "vocals")
    assert (tmp_path / "bgh" / "output" / "tune-stems" / "tune.vocals.mp3").is_file()


def test_per_model_defaults_fill_only_what_a_song_leaves_unset() -> None:
    from bygheartd.songs.request import SongRequest

    def body(**data: Any) -> dict[str, Any]:
        request = SongRequest.build(
            {"style": "pop", "instrumental": True, **data}, RequestRules(backend="acestep")
        )
        return request.to_api_body()

    turbo = body(model="acestep-v15-xl-turbo")
    assert turbo["inference_steps"] == 8 and "guidance_scale" not in turbo
    mine = body(model=BASE, inference_steps=60, shift=1)
    assert (mine["inference_steps"], mine["shift"], mine["guidance_scale"]) == (60, 1.0, 7.0)
    unset = body()
    assert "inference_steps" not in unset and "shift" not in unset


@pytest.mark.parametrize(
    ("task", "start", "end", "seconds"),
    [
        ("repaint", 2.0, 9.0, 9.0),  # R1-33: a 4 s source, 2..9
        ("repaint", -3.0, 1.0, 7.0),  # R1-35: 3 s before it
        ("repaint", 1.0, 0.0, 4.0),  # 0 is "to the end": nothing added
        ("extract", None, None, 4.0),
    ],
)
def test_the_simulators_output_follows_the_captured_padding(
    task: str, start: float | None, end: float | None, seconds: float
) -> None:
    import dataclasses

    from bygheartd.simulator.params import parse_params
    from bygheartd.simulator.tasks import output_seconds

    body: dict[str, Any] = {"task_type": task, "_src_audio_seconds": 4.0}
    body |= {
        k: v for k, v in (("repainting_start", start), ("repainting_end", end)) if v is not None
    }
    params = parse_params(body, has_upload=True)
    assert output_seconds(params) == pytest.approx(seconds)
    assert output_seconds(dataclasses.replace(params, source_seconds=None)) is None


def test_the_simulator_answers_a_bad_repaint_strength_with_an_opaque_500() -> None:
    import httpx

    with run_in_thread(SimulatorSettings(backend="acestep", latency=0.05)) as sim:
        bad = httpx.post(
            sim.base_url + "/release_task",
            json={"task_type": "repaint", "repaint_strength": 2, "src_audio_path": "x.wav"},
        )
    assert bad.status_code == 500 and bad.text == "Internal Server Error"
