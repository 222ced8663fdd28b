"""The issue's promise end to end: a song made by the engine with tags, loudnorm and upload
arrives in the library tagged with its lyrics at -14 LUFS, and a broken third-party plugin
cannot stop that.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import MakeConfig

from bygheartd.jobs import Job, JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator, SimulatorSettings

pytestmark = pytest.mark.anyio

SONG = """---
title: Library Song
style: bright synth pop, female vocal
model: bygheart-melody-fast
duration: 60
---
[Verse]
lanterns over water
[Chorus]
we sing until the morning
"""

BROKEN_IMPORT = "import does_not_exist_anywhere\n"
RAISING = """
from bygheartd import hookimpl

@hookimpl
def on_complete(job, files):
    raise RuntimeError("this plugin is broken on purpose")
"""


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.2, audio_scale=0.05, seed=5)  # 3 s of audio


def integrated_lufs(path: Path) -> float:
    import pyloudnorm

    data, rate = soundfile.read(str(path), always_2d=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pyloudnorm.Meter(rate).integrated_loudness(np.asarray(data)))


async def test_song_arrives_in_the_library_tagged_and_normalised_despite_broken_plugins(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    third_party = tmp_path / "third-party"
    third_party.mkdir()
    (third_party / "broken_import.py").write_text(BROKEN_IMPORT)
    (third_party / "raising.py").write_text(RAISING)
    library = tmp_path / "library"
    config = make_config(
        simulator,
        plugins={"enabled": ["tags", "loudnorm", "upload"], "paths": [str(third_party)]},
    )
    raw = config.as_record()
    raw["plugins"]["upload"] = {"library": str(library), "template": "{album}/{title}{ext}"}
    from bygheartd.config import parse_config

    config = parse_config(raw)
    song = tmp_path / "library-song.txt"
    song.write_text(SONG)
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        infos = {i.name: i for i in runtime.plugins.describe()} if runtime.plugins else {}
        job = await runtime.service.submit_file(song)
        job = await runtime.service.wait(job.id, timeout=60)
    assert infos["broken_import"].error and not infos["broken_import"].enabled
    assert job.status is JobStatus.DONE, job.reason
    assert any("raising" in w for w in job.warnings)
    [copied] = list(library.rglob("*.mp3"))
    assert copied.parent.name == "bygheartd" and copied.stem == "Library Song"

    from mutagen.id3 import ID3

    tags = ID3(str(copied))
    assert str(tags["TIT2"]) == "Library Song"
    assert "we sing until the morning" in tags.getall("USLT")[0].text
    assert abs(integrated_lufs(copied) - (-14.0)) <= 0.5
    sidecar = json.loads((config.folders.output / "library-song.json").read_text())
    assert "loudnorm" in sidecar["plugins"]
    assert any("raising" in w for w in sidecar["warnings"])


APPENDING = """
from bygheartd import hookimpl

@hookimpl
def before_submit(request):
    return {"style": request["style"] + ", stadium reverb"}
"""


async def test_before_submit_changes_apply_once_across_holds_and_retries(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BYGHEARTD_LOAD_PLUGINS", "appending")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "appending.py").write_text(APPENDING)
    # first submit: 429 (held, then resumed); second: 500 (failed); after `retry`: done
    simulator.set_faults(rate_limit_burst=1, retry_after=1.0)
    config = make_config(simulator, plugins={"enabled": [], "paths": [str(folder)]})
    song = tmp_path / "song.txt"
    song.write_text(SONG)
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song)
        held = await _until_status(runtime, job.id, JobStatus.HELD)
        simulator.set_faults(server_error_on_submit=1)
        failed = await runtime.service.wait(job.id, timeout=30)
        await runtime.service.retry(job.id)
        done = await runtime.service.wait(job.id, timeout=30)
    assert held.hold_kind == "rate"
    assert failed.status is JobStatus.FAILED and "Internal Server Error" in (failed.reason or "")
    assert done.status is JobStatus.DONE, done.reason
    assert done.request["style"] == "bright synth pop, female vocal, stadium reverb"


async def _until_status(runtime: Runtime, job_id: str, status: JobStatus) -> Job:
    import anyio

    with anyio.fail_after(15):
        while (job := await runtime.store.get(job_id)).status is not status:
            await anyio.sleep(0.02)
    return job
