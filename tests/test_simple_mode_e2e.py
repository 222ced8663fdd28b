"""Simple mode from every face against the real simulator: a dropped description-only file
(the daemon as a child process), `bygheartd submit --describe --wait`, and MCP
`generate_song` with a description through the official client. Each song ends with the
lyrics the model wrote in its sidecar, its `show`/`get_song` record and its audio tags.
Also: the simulator's stand-in language model itself, and a style reference uploaded as
the multipart `ref_audio` part.
"""

# mutagen has no annotations on its constructors and tag methods.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _daemon import cli, wait_for
from conftest import MakeConfig
from mcp import Client
from mcp.types import TextContent
from mutagen.id3 import ID3
from test_daemon_e2e import Setup, install, installs, sidecars  # noqa: F401 (a fixture)
from test_intake import Drop, drop  # noqa: F401 (a fixture)
from test_simulator_support import simulator as sim_client
from test_simulator_support import submit, wait_final

from bygheartd.jobs import JobStatus
from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator, SimulatorSettings

DESCRIPTION = "a dreamy lo-fi song about rainy Tokyo nights, soft female vocals"
SUCCESS_KEYS = [
    "file",
    "wave",
    "status",
    "create_time",
    "env",
    "prompt",
    "lyrics",
    "metas",
    "generation_info",
    "seed_value",
    "lm_model",
    "dit_model",
    "progress",
    "stage",
]


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.2, audio_scale=0.02, seed=3)


def sung_lyrics(audio: Path) -> str:
    [frame] = ID3(str(audio)).getall("USLT")
    return str(frame.text)


# -- the simulator's language model ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["bygheart", "acestep"])
def test_the_simulator_writes_a_song_from_a_description_the_same_way_every_time(
    backend: str,
) -> None:
    auth: dict[str, Any] = {"key": None} if backend == "acestep" else {}
    with sim_client(backend=backend, **auth) as (_, client):
        body = {"sample_mode": True, "sample_query": DESCRIPTION, "lyrics": "", "thinking": True}
        first = wait_final(client, submit(client, prompt="", **body))
        again = wait_final(client, submit(client, prompt="", **body))
        other = wait_final(client, submit(client, prompt="", sample_query="a polka about cheese"))
    assert first["status"] == 1, first
    [element] = first["result"]
    assert list(element) == SUCCESS_KEYS  # the real server's success entry, key for key
    assert element["lyrics"].startswith("[Verse 1]\n") and "[Chorus]" in element["lyrics"]
    assert DESCRIPTION in element["prompt"]
    metas = element["metas"]
    assert list(metas) == ["bpm", "duration", "genres", "keyscale", "timesignature", "prompt",
                           "lyrics"]  # fmt: skip
    assert isinstance(metas["bpm"], int) and metas["keyscale"].endswith(("major", "minor"))
    assert metas["timesignature"] in ("3", "4") and isinstance(metas["duration"], float)
    assert metas["lyrics"] == element["lyrics"] and metas["prompt"] == element["prompt"]
    written = {k: element[k] for k in ("prompt", "lyrics", "metas")}
    assert {k: again["result"][0][k] for k in written} == written
    assert other["result"][0]["lyrics"] != element["lyrics"]


def test_an_instrumental_description_gets_no_lyrics_and_no_lm_means_a_failed_task() -> None:
    with sim_client() as (handle, client):
        calm = wait_final(client, submit(client, sample_query="calm piano ballad, instrumental"))
        handle.sim.settings.lm_available = False
        failed = wait_final(client, submit(client, sample_mode=True, sample_query="a waltz"))
    assert calm["result"][0]["lyrics"] == "[Instrumental]"
    assert "vocal" not in calm["result"][0]["prompt"]
    assert failed["status"] == 2  # as the real server without its LM: no reason given


def test_thinking_in_custom_mode_fills_the_metas_but_keeps_the_words() -> None:
    lyrics = "[Verse]\nneon lights tonight"
    with sim_client() as (_, client):
        entry = wait_final(client, submit(client, lyrics=lyrics, thinking=True, bpm=99))
    [element] = entry["result"]
    assert element["lyrics"] == lyrics and element["prompt"] == "lofi hip hop piano"
    assert element["metas"]["bpm"] == 99  # what was sent always wins
    assert element["metas"]["keyscale"] != "N/A" and element["metas"]["duration"] != "N/A"


# -- a style reference ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reference_audio_is_uploaded_as_the_ref_audio_part(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    folder = tmp_path / "songs"
    folder.mkdir()
    (folder / "voice.wav").write_bytes(b"RIFF" + b"\x00" * 64)
    song = folder / "with-reference.md"
    song.write_text(
        "---\ntitle: Referenced\nstyle: warm soul\nreference_audio: voice.wav\n"
        "model: bygheart-melody-fast\nduration: 10\n---\n[Verse]\nhold the line\n"
    )
    async with Runtime(make_config(simulator), role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song)
        job = await runtime.service.wait(job.id, timeout=30)
    assert job.status is JobStatus.DONE, job.reason
    stats = simulator.sim.stats.as_json()
    assert stats["reference_uploads"] == 1 and stats["uploads"] == 0  # no source audio
    [task] = simulator.sim.tasks.values()
    assert task.params.has_reference_audio and task.params.lyrics == "[Verse]\nhold the line"
    assert job.request["reference_audio"] == "voice.wav"


@pytest.mark.anyio
async def test_track_classes_reach_the_server_as_a_list_in_a_multipart_upload(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    folder = tmp_path / "songs"
    folder.mkdir()
    (folder / "sketch.wav").write_bytes(b"RIFF" + b"\x00" * 64)
    song = folder / "complete-me.yaml"
    song.write_text(
        "title: Complete Me\nstyle: indie rock\ntask_type: complete\nsource_audio: sketch.wav\n"
        "model: acestep-v15-base\ntrack_classes: [Guitar, drums]\ninstrumental: true\n"
    )
    config = make_config(simulator, api={"backend": "acestep"})
    # Routed only to a server that has the base model loaded (its inventory says so).
    simulator.sim.settings.dit_models = "acestep-v15-turbo,acestep-v15-base"
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song)
        job = await runtime.service.wait(job.id, timeout=30)
    assert job.status is JobStatus.DONE, job.reason
    [task] = simulator.sim.tasks.values()
    assert task.params.track_classes == ("guitar", "drums")
    assert task.params.has_source_audio and simulator.sim.stats.uploads == 1


@pytest.mark.anyio
async def test_a_dropped_reference_audio_is_copied_beside_the_archived_song(
    drop: Drop,  # noqa: F811
) -> None:
    (drop.inbox / "voice.wav").write_bytes(b"RIFF....WAVE")
    text = b"---\nstyle: soul\nreference_audio: voice.wav\n---\n[Verse]\nla\n"
    await drop.intake.process(drop.put("ref.txt", text))
    (job,) = await drop.jobs()
    assert job.request["reference_audio"] == "voice.wav"
    assert (drop.archive / "voice.wav").read_bytes() == b"RIFF....WAVE"
    assert (drop.inbox / "voice.wav").exists()  # audio is never consumed


@pytest.mark.anyio
async def test_a_dropped_reference_outside_the_inbox_is_rejected(
    drop: Drop,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "private.wav").write_bytes(b"RIFF")
    (drop.inbox / "voice.wav").symlink_to(tmp_path / "private.wav")
    text = b"---\nstyle: soul\nreference_audio: voice.wav\n---\n[Verse]\nla\n"
    await drop.intake.process(drop.put("ref.txt", text))
    assert "reference_audio 'voice.wav' points outside the inbox" in drop.note("ref.txt")
    assert await drop.jobs() == []


@pytest.mark.anyio
async def test_a_dropped_description_with_lyrics_is_refused_with_pick_one(
    drop: Drop,  # noqa: F811
) -> None:
    text = f"---\ndescription: {DESCRIPTION}\n---\n[Verse]\nmy own words\n".encode()
    await drop.intake.process(drop.put("both.md", text))
    note = drop.note("both.md")
    assert "description and lyrics are both given: pick one" in note
    assert "line 2, key 'description'" in note and "remove description" in note
    assert await drop.jobs() == []


# -- the three faces ---------------------------------------------------------------------------


def test_a_dropped_description_only_file_becomes_a_tagged_song_with_the_written_lyrics(
    simulator: RunningSimulator,
    installs: list[Setup],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    setup = install(installs, tmp_path, simulator, plugins={"enabled": ["tags"]})
    folders = setup.config.folders
    setup.daemon.start()
    text = f"---\ndescription: {DESCRIPTION}\nmodel: bygheart-melody-fast\n---\n"
    (folders.inbox / "rainy-tokyo.md").write_text(text, encoding="utf-8")
    store = setup.store()
    wait_for(
        lambda: any(j.status.value == "done" for j in store.store.list_jobs()),
        what="the dropped song to be done",
        proc=setup.daemon,
        timeout=30,
    )
    [job] = store.store.list_jobs()
    [note] = sidecars(folders.output).values()
    generated = note["generated"]
    assert note["request"]["description"] == DESCRIPTION and note["request"]["lyrics"] == ""
    assert generated["lyrics"].startswith("[Verse 1]") and DESCRIPTION in generated["style"]
    assert {"bpm", "key", "time_signature", "duration"} <= set(generated)
    assert job.title == "rainy-tokyo"  # a drop without a title: the file name
    [audio] = [folders.output / f["path"] for f in note["files"]]
    assert sung_lyrics(audio) == generated["lyrics"]  # the words really sung
    assert (folders.archive / "rainy-tokyo.md").read_text(encoding="utf-8") == text

    shown = cli(setup.config_path, "show", job.id)
    assert shown.returncode == 0, shown.stderr
    assert "lyrics the model wrote" in shown.stdout and "[Verse 1]" in shown.stdout
    as_json = json.loads(cli(setup.config_path, "show", job.id, "--json").stdout)
    assert as_json["generated"] == generated


def test_submit_describe_wait_makes_the_song_in_process_and_names_it(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    config = make_config(simulator, plugins={"enabled": ["tags"]})
    path = tmp_path / "config.toml"
    done = cli(
        path, "submit", "--describe", "a calm harbour waltz at dawn", "--instrumental",
        "--model", "bygheart-melody-fast", "--wait", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [record] = json.loads(done.stdout)
    assert record["status"] == "done" and record["title"] == "Calm Harbour Waltz at Dawn"
    [task] = simulator.sim.tasks.values()
    assert task.params.sample_mode
    assert task.params.sample_query == "a calm harbour waltz at dawn, instrumental"
    [note] = sidecars(config.folders.output).values()
    assert note["generated"]["lyrics"] == "[Instrumental]"
    [audio] = [Path(f["path"]) for f in record["files"]]
    assert audio.name == "calm-harbour-waltz-at-dawn.mp3"
    assert ID3(str(audio)).getall("USLT") == []  # nothing was sung: no lyrics tag

    both = cli(path, "submit", "--describe", "x", str(tmp_path / "song.txt"))
    stray = cli(path, "submit", "--title", "T", str(tmp_path / "song.txt"))
    assert both.returncode == 2 and "not both" in both.stderr
    assert stray.returncode == 2 and "--title only go with --describe" in stray.stderr


@pytest.fixture
async def runtime(simulator: RunningSimulator, make_config: MakeConfig) -> AsyncIterator[Runtime]:
    config = make_config(simulator)
    async with Runtime(config, role=EngineRole.MCP, engine=True, release_when_idle=30.0) as rt:
        yield rt


@pytest.mark.anyio
async def test_mcp_generate_song_with_a_description_returns_the_written_lyrics(
    runtime: Runtime,
) -> None:
    async with Client(build_server(runtime.service)) as client:
        result = await client.call_tool(
            "generate_song",
            {"description": DESCRIPTION, "model": "bygheart-melody-fast", "wait_seconds": 30},
        )
        assert not result.is_error, result.content
        song: dict[str, Any] = result.structured_content or {}
        fetched = await client.call_tool("get_song", {"job_id": song["id"]})
        both = await client.call_tool(
            "generate_song", {"description": DESCRIPTION, "lyrics": "[Verse]\nmine"}
        )
        neither = await client.call_tool("generate_song", {"style": "pop"})
    assert song["status"] == "done", song
    assert song["title"] == "Dreamy Lo-Fi Song about Rainy Tokyo"
    assert song["generated"]["lyrics"].startswith("[Verse 1]")
    assert song["lyrics_lines"] == 0  # nothing was sent: the model wrote them
    record = fetched.structured_content or {}
    assert record["generated"] == song["generated"]
    text = "\n".join(c.text for c in fetched.content if isinstance(c, TextContent))
    assert "the model wrote the lyrics" in text
    assert both.is_error and "pick one" in str(both.content)
    assert neither.is_error and "description" in str(neither.content)
