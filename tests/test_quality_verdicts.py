"""The quality gate's verdicts: every finding from a real decoded take that has the defect
(made by the simulator's own audio code), a good take passing, each threshold a setting,
tempo and key with the `analysis` extra (librosa), and the same end to end through the
engine against a simulator told to serve defective takes (knobs and prompt markers)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import MakeConfig
from plugin_fixtures.factories import first_party, make_job

from bygheartd.hooks.host import CompleteOutcome
from bygheartd.jobs import JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator, SimulatorSettings
from bygheartd.simulator.audio import audio_format_for, music_for, write_take
from bygheartd_plugins import quality

pytestmark = pytest.mark.anyio

RATE = 48000
ANALYSED = 8.0  # seconds: long enough for tempo and key (min_analysis_seconds is 5)


def take(
    folder: Path,
    name: str,
    *,
    seconds: float = 3.0,
    fmt: str = "mp3",
    defects: tuple[str, ...] = (),
    bpm: float | None = 120,
    key: str | None = "A minor",
) -> Path:
    """A take as the simulator writes it: chords in `key` over a beat at `bpm`."""
    audio = audio_format_for(fmt)
    music = music_for(name, bpm=bpm, key=key, defects=defects)
    return write_take(folder, name + audio.suffix, audio, seconds, RATE, music)


async def judge(files: list[Path], request: dict[str, Any], **table: Any) -> CompleteOutcome:
    job = make_job(request={**make_job().request, **request})
    outcome = await first_party(["quality"], quality=table).on_complete(job, files)
    assert outcome.failures == []
    return outcome


def codes(outcome: CompleteOutcome, path: Path) -> list[str]:
    entry = outcome.sidecar["quality"][path.name]
    found = [f["code"] for f in entry["findings"]]
    assert entry["verdict"] == ("fail" if found else "pass")
    assert entry["warnings"] == [f"quality: {f['message']}" for f in entry["findings"]]
    return found


# -- each finding, and a good take ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp3", "flac", "wav", "opus"])
async def test_a_good_take_passes_with_no_findings(tmp_path: Path, fmt: str) -> None:
    good = take(tmp_path, "good", fmt=fmt)
    outcome = await judge([good], {"duration": 3})
    assert codes(outcome, good) == [] and outcome.warnings == []
    entry = outcome.sidecar["quality"][good.name]
    assert entry["end_level_db"] < -40 and entry["longest_silence"] < 1 and entry["clipped"] == 0


async def test_cut_short_a_take_much_shorter_than_requested(tmp_path: Path) -> None:
    short = take(tmp_path, "short", seconds=5.0, defects=("cut_short",))
    outcome = await judge([short], {"duration": 5})
    assert codes(outcome, short) == ["cut_short"]
    [warning] = outcome.warnings  # the wording people (and tests) already know
    assert warning.startswith("quality: short.mp3 is 2.0 s long, 40% of the requested 5 s")
    assert codes(await judge([short], {"duration": 5}, min_duration_ratio=0.3), short) == []
    assert codes(await judge([short], {"duration": None}), short) == []  # auto: no length


@pytest.mark.parametrize("fmt", ["mp3", "flac"])
async def test_cut_off_a_take_that_stops_mid_sound(tmp_path: Path, fmt: str) -> None:
    cut = take(tmp_path, "cut", fmt=fmt, defects=("cut_off",))
    outcome = await judge([cut], {"duration": 3})
    assert codes(outcome, cut) == ["cut_off"]
    entry = outcome.sidecar["quality"][cut.name]
    assert entry["end_level_db"] > -3  # its last 50 ms are as loud as the rest
    assert "ends abruptly" in outcome.warnings[0]
    assert codes(await judge([cut], {"duration": 3}, cut_off_seconds=0), cut) == []  # off
    # The threshold is a setting: -20 dB by default; a stricter end would need to be louder.
    assert codes(await judge([cut], {"duration": 3}, cut_off_db=-0.01), cut) == []


async def test_cut_off_is_found_behind_trailing_digital_silence(tmp_path: Path) -> None:
    """An abrupt stop padded with zeros to the requested length is still an abrupt stop."""
    cut = take(tmp_path, "cut", fmt="wav", defects=("cut_off",))
    data, rate = sf.read(str(cut), always_2d=True)
    padded = tmp_path / "padded.wav"
    sf.write(padded, np.concatenate([data, np.zeros((rate, 2))]), rate, subtype="PCM_16")
    outcome = await judge([padded], {"duration": 4})
    assert codes(outcome, padded) == ["cut_off"]


async def test_a_natural_decay_is_not_cut_off(tmp_path: Path) -> None:
    """A last chord that rings out (an exponential decay, a reverb tail) ends the song."""
    t = np.arange(3 * RATE) / RATE
    ring = np.sin(2 * np.pi * 330 * t) * 0.4 * np.exp(-np.clip(t - 2.0, 0, None) / 0.12)
    path = tmp_path / "ring.flac"
    sf.write(path, np.stack([ring, ring], axis=1), RATE, subtype="PCM_16")
    outcome = await judge([path], {"duration": 3})
    assert codes(outcome, path) == []


async def test_silent_a_take_of_nothing(tmp_path: Path) -> None:
    silent = take(tmp_path, "silent", defects=("silent",))
    outcome = await judge([silent], {"duration": 3})
    assert codes(outcome, silent) == ["silent"]
    assert outcome.warnings[0].startswith("quality: silent.mp3 is 100% silence")
    entry = outcome.sidecar["quality"][silent.name]
    assert entry["end_level_db"] is None and entry["lufs"] is None  # no end, no loudness


async def test_silent_a_long_dropout_inside_a_take(tmp_path: Path) -> None:
    gap = take(tmp_path, "gap", seconds=10.0, defects=("dropout",))
    outcome = await judge([gap], {"duration": 10})
    assert codes(outcome, gap) == ["silent"]
    entry = outcome.sidecar["quality"][gap.name]
    assert entry["silence_ratio"] < 0.5  # not mostly silent: the dropout is the finding
    assert entry["longest_silence"] == pytest.approx(4.0, abs=0.1)
    assert entry["longest_silence_at"] == pytest.approx(3.0, abs=0.1)
    [warning] = outcome.warnings
    assert "drops out: 4.0 s of silence from 0:03.0" in warning
    assert codes(await judge([gap], {"duration": 10}, max_dropout_seconds=0), gap) == []
    assert codes(await judge([gap], {"duration": 10}, max_dropout_seconds=5), gap) == []


async def test_silence_at_the_start_or_the_end_is_no_dropout(tmp_path: Path) -> None:
    """A quiet intro or a silent tail (the song ended before the requested length) counts
    towards the share of silence only."""
    music = take(tmp_path, "music", seconds=6.0, fmt="wav")
    data, rate = sf.read(str(music), always_2d=True)
    quiet = np.zeros((4 * rate, 2))
    for name, samples in (("intro", [quiet, data]), ("tail", [data, quiet])):
        path = tmp_path / f"{name}.wav"
        sf.write(path, np.concatenate(samples), rate, subtype="PCM_16")
        outcome = await judge([path], {"duration": 10})
        assert codes(outcome, path) == [], name
        entry = outcome.sidecar["quality"][path.name]
        assert entry["longest_silence"] < 1 and entry["silence_ratio"] > 0.4


async def test_clipped_a_take_driven_past_full_scale(tmp_path: Path) -> None:
    loud = take(tmp_path, "loud", fmt="wav", defects=("clipped",))
    outcome = await judge([loud], {"duration": 3})
    assert codes(outcome, loud) == ["clipped"]
    assert outcome.sidecar["quality"][loud.name]["clipped"] > 1000
    assert codes(await judge([loud], {"duration": 3}, max_clipped=0), loud) == []


@pytest.mark.parametrize("fmt", ["mp3", "flac", "wav", "opus"])
async def test_undecodable_a_take_that_is_not_audio_inside(tmp_path: Path, fmt: str) -> None:
    broken = take(tmp_path, "broken", fmt=fmt, defects=("undecodable",))
    outcome = await judge([broken], {"duration": 3})
    assert codes(outcome, broken) == ["undecodable"]
    entry = outcome.sidecar["quality"][broken.name]
    assert entry["error"].startswith("cannot decode")
    assert outcome.warnings[0].startswith(f"quality: cannot decode {broken.name}: ")


async def test_a_take_with_several_defects_has_each_finding_once(tmp_path: Path) -> None:
    bad = take(tmp_path, "bad", seconds=5.0, fmt="wav", defects=("cut_short", "clipped"))
    good = take(tmp_path, "good", seconds=5.0, fmt="wav")
    outcome = await judge([good, bad], {"duration": 5})
    assert codes(outcome, bad) == ["cut_short", "clipped"]
    assert codes(outcome, good) == []
    assert [e["take"] for e in outcome.sidecar["quality"].values()] == [1, 2]
    assert len(outcome.warnings) == 2


# -- tempo and key (the `analysis` extra) ---------------------------------------------------


@pytest.fixture
def librosa() -> Any:
    return pytest.importorskip("librosa")  # the `analysis` extra (in `dev` too)


async def test_tempo_and_key_are_measured_and_recorded_even_when_not_requested(
    tmp_path: Path, librosa: Any
) -> None:
    path = take(tmp_path, "song", seconds=ANALYSED, bpm=100, key="F# minor")
    outcome = await judge([path], {"duration": ANALYSED})
    entry = outcome.sidecar["quality"][path.name]
    assert entry["bpm"] == pytest.approx(100, rel=0.03)
    assert entry["key"] == "F# minor"  # the song-file spelling
    assert entry["key_confidence"] > 0.6
    assert entry["analysis"] == f"librosa {librosa.__version__}"
    assert entry["requested_bpm"] is None and entry["requested_key"] is None
    assert codes(outcome, path) == []


async def test_a_take_at_the_requested_tempo_and_key_passes(tmp_path: Path, librosa: Any) -> None:
    path = take(tmp_path, "song", seconds=ANALYSED, bpm=128, key="Bb major")
    # "A#" is Bb major, spelled another way: the same key.
    outcome = await judge([path], {"duration": ANALYSED, "bpm": 128, "key": "A# major"})
    entry = outcome.sidecar["quality"][path.name]
    assert (entry["requested_bpm"], entry["requested_key"]) == (128, "Bb major")
    assert codes(outcome, path) == []


async def test_off_tempo_a_take_at_another_tempo(tmp_path: Path, librosa: Any) -> None:
    path = take(tmp_path, "song", seconds=ANALYSED, bpm=95, key="A minor")
    outcome = await judge([path], {"duration": ANALYSED, "bpm": 128, "key": "A minor"})
    assert codes(outcome, path) == ["off_tempo"]
    assert (
        "not the requested 128 (within 6%; double or half time would do)" in (outcome.warnings[0])
    )
    # tempo_tolerance is a share: 0.3 lets 95 pass for 128.
    loose = await judge([path], {"duration": ANALYSED, "bpm": 128}, tempo_tolerance=0.3)
    assert codes(loose, path) == []


async def test_double_time_matches_unless_strict_tempo(tmp_path: Path, librosa: Any) -> None:
    path = take(tmp_path, "song", seconds=ANALYSED, bpm=128, key="A minor")
    request = {"duration": ANALYSED, "bpm": 64}
    assert codes(await judge([path], request), path) == []
    assert codes(await judge([path], request, strict_tempo=True), path) == ["off_tempo"]


async def test_off_key_a_take_in_another_key(tmp_path: Path, librosa: Any) -> None:
    path = take(tmp_path, "song", seconds=ANALYSED, bpm=110, key="D major")
    outcome = await judge([path], {"duration": ANALYSED, "bpm": 110, "key": "Am"})
    assert codes(outcome, path) == ["off_key"]
    assert (
        "is in D major, not the requested A minor or its relative C major" in (outcome.warnings[0])
    )
    unsure = await judge([path], {"key": "Am"}, min_key_confidence=0.99)
    assert codes(unsure, path) == []  # an estimate this weak is recorded, not judged


async def test_the_relative_key_matches_unless_strict_key(tmp_path: Path, librosa: Any) -> None:
    path = take(tmp_path, "song", seconds=ANALYSED, bpm=110, key="C major")
    request = {"duration": ANALYSED, "key": "A minor"}
    assert codes(await judge([path], request), path) == []
    assert codes(await judge([path], request, strict_key=True), path) == ["off_key"]


async def test_tempo_and_key_are_not_measured_when_off_short_silent_or_not_installed(
    tmp_path: Path, librosa: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = {"duration": ANALYSED, "bpm": 60, "key": "C# major"}  # both wrong
    path = take(tmp_path, "song", seconds=ANALYSED, bpm=120, key="A minor")
    off = await judge([path], request, analysis=False)
    assert off.sidecar["quality"][path.name]["analysis"] == "off"
    assert off.sidecar["quality"][path.name]["bpm"] is None and codes(off, path) == []
    short = take(tmp_path, "short", seconds=4.0)
    entry = (await judge([short], request)).sidecar["quality"][short.name]
    assert entry["analysis"] == "too short (under 5 s)" and entry["key"] is None
    silent = take(tmp_path, "silent", seconds=ANALYSED, defects=("silent",))
    entry = (await judge([silent], request)).sidecar["quality"][silent.name]
    assert entry["analysis"] == "silent" and entry["bpm"] is None
    monkeypatch.setattr(quality, "ANALYSIS_INSTALLED", False)
    missing = await judge([path], request)
    entry = missing.sidecar["quality"][path.name]
    assert entry["analysis"] == "not installed (pip install 'bygheartd[analysis]')"
    assert entry["bpm"] is None and codes(missing, path) == []
    assert "tempo and key are not measured (pip install 'bygheartd[analysis]')" in quality.note()


async def test_a_failed_analysis_leaves_the_other_findings_standing(
    tmp_path: Path, librosa: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(channels: Any, rate: int) -> dict[str, Any]:
        raise RuntimeError("cannot cache function '__o_fold': no locator available")

    monkeypatch.setattr(quality, "analyse", broken)
    path = take(tmp_path, "cut", seconds=ANALYSED, defects=("cut_off",))
    outcome = await judge([path], {"duration": ANALYSED, "bpm": 60})
    entry = outcome.sidecar["quality"][path.name]
    assert entry["analysis"].startswith("failed: cannot cache function")
    assert entry["bpm"] is None and codes(outcome, path) == ["cut_off"]


def test_a_read_only_install_gets_a_writable_numba_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librosa's import fails when numba can cache nowhere (a hardened service: read-only
    system, no home): then NUMBA_CACHE_DIR points at the service's state folder, the user
    cache, or the temporary folder, whichever is writable first."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", f"{state}:{tmp_path / 'other'}")
    writable: dict[str, bool] = {}

    def fake(folder: Path) -> bool:
        return writable.get(folder.name, False)

    monkeypatch.setattr(quality, "_writable", fake)
    writable["__pycache__"] = True  # a virtual environment: numba's own place will do
    quality._numba_cache()
    assert "NUMBA_CACHE_DIR" not in os.environ
    writable.update({"__pycache__": False, "numba-cache": True})
    quality._numba_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(state / "numba-cache")
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    writable["numba-cache"] = False
    writable["numba"] = True  # the user cache
    quality._numba_cache()
    assert os.environ["NUMBA_CACHE_DIR"].endswith("bygheartd/numba")


def test_key_spelling_and_relatives() -> None:
    assert quality.parse_key("F♯m") == quality.parse_key("Gb minor") == (6, True)
    assert quality.parse_key("auto") is None and quality.parse_key(None) is None
    assert quality.key_name(*quality.relative_key(9, True)) == "C major"
    assert quality.key_name(*quality.relative_key(0, False)) == "A minor"
    assert [quality.key_name(p, False) for p in (1, 3, 6, 8, 10)] == [
        "Db major",
        "Eb major",
        "F# major",
        "Ab major",
        "Bb major",
    ]
    assert quality.key_name(1, True) == "C# minor" and quality.key_name(8, True) == "G# minor"


def test_tempo_matching_rules() -> None:
    assert quality.tempo_matches(123, 120, 0.06, strict=False)
    assert not quality.tempo_matches(130, 120, 0.06, strict=False)
    assert quality.tempo_matches(61, 120, 0.06, strict=False)  # half time
    assert quality.tempo_matches(236, 120, 0.06, strict=False)  # double time
    assert not quality.tempo_matches(61, 120, 0.06, strict=True)


# -- end to end: the simulator serves defective takes ---------------------------------------


SONG = """---
title: {title}
style: bright synth pop{marker}
model: bygheart-melody-fast
duration: 30
takes: 2
---
[Verse]
judged before anyone listens
"""


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.1, audio_scale=0.1, seed=3)  # 3 s takes of 30 s


async def make_songs(
    config: Any, folder: Path, songs: dict[str, str], **table: Any
) -> dict[str, dict[str, Any]]:
    """Submit each song (one after the other), wait, and return each sidecar's `quality`."""
    out = {}
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        for title, text in songs.items():
            path = folder / f"{title}.txt"
            path.write_text(text)
            job = await runtime.service.submit_file(path)
            job = await runtime.service.wait(job.id, timeout=60)
            assert job.status is JobStatus.DONE, job.reason
            sidecar = json.loads((config.folders.output / f"{title}.json").read_text())
            out[title] = sidecar["quality"]
    return out


def verdicts(figures: dict[str, Any]) -> list[list[str]]:
    ordered = sorted(figures.values(), key=lambda e: e["take"])
    return [[f["code"] for f in e["findings"]] for e in ordered]


async def test_prompt_markers_make_every_finding_end_to_end(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    config = make_config(
        simulator,
        plugins={"enabled": ["quality"]},
        **{"plugins.quality": {"min_duration_ratio": 0.05}},  # 3 s of 30 is not short here
    )
    songs = {
        "clean": SONG.format(title="clean", marker=""),
        "short": SONG.format(title="short", marker=" [sim:cut_short]"),
        "cut": SONG.format(title="cut", marker=" [sim:cut_off]"),
        "quiet": SONG.format(title="quiet", marker=" [sim:silent, take=2]"),
        "loud": SONG.format(title="loud", marker=" [SIM:clipped]"),
        "broken": SONG.format(title="broken", marker=" [sim:undecodable, take=1]"),
    }
    found = await make_songs(config, tmp_path, songs)
    assert verdicts(found["clean"]) == [[], []]
    assert verdicts(found["cut"]) == [["cut_off"], ["cut_off"]]
    assert verdicts(found["quiet"]) == [[], ["silent"]]
    assert verdicts(found["loud"]) == [["clipped"], ["clipped"]]
    assert verdicts(found["broken"]) == [["undecodable"], []]
    # cut short to 40 %: 1.2 s of 30 s, under the 5 % this config allows.
    assert verdicts(found["short"]) == [["cut_short"], ["cut_short"]]
    assert all(e["verdict"] == "pass" for e in found["clean"].values())


async def test_the_defect_knob_with_a_burst_and_a_marker_with_times(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, monkeypatch: Any
) -> None:
    """What a retake needs: the first task comes back bad, the next one good."""
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    config = make_config(
        simulator,
        plugins={"enabled": ["quality"]},
        **{"plugins.quality": {"min_duration_ratio": 0.05}},
    )
    simulator.set_faults(defect="cut_off", defect_burst=1)
    once = SONG.format(title="once", marker=" [sim:dropout, times=1]")
    found = await make_songs(
        config,
        tmp_path,
        {
            "first": SONG.format(title="first", marker=""),
            "second": SONG.format(title="second", marker=""),
            "once": once,
            "again": once.replace("title: once", "title: again"),
        },
    )
    assert verdicts(found["first"]) == [["cut_off"]] * 2
    assert verdicts(found["second"]) == [[], []]  # the burst was spent
    assert simulator.sim.settings.defect == "" and simulator.sim.settings.defect_burst == 0
    assert verdicts(found["once"]) == [["silent"]] * 2
    assert verdicts(found["again"]) == [[], []]  # the same prompt, made again


ANALYSED_SONG = """---
title: {title}
style: warm piano pop{marker}
model: bygheart-melody-fast
duration: 30
bpm: 100
key: E minor
---
[Verse]
in time and in tune
"""


async def test_tempo_and_key_end_to_end(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: Any,
    librosa: Any,
) -> None:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    simulator.sim.settings.audio_scale = 0.2  # 6 s takes: long enough to analyse
    config = make_config(
        simulator,
        plugins={"enabled": ["quality"]},
        **{"plugins.quality": {"min_duration_ratio": 0.1}},
    )
    found = await make_songs(
        config,
        tmp_path,
        {
            "asked": ANALYSED_SONG.format(title="asked", marker=""),
            "other": ANALYSED_SONG.format(title="other", marker=" [sim:bpm=140, key=F major]"),
        },
    )
    [asked] = found["asked"].values()
    assert asked["bpm"] == pytest.approx(100, rel=0.03) and asked["key"] == "E minor"
    assert asked["verdict"] == "pass", asked["findings"]
    [other] = found["other"].values()
    assert other["key"] == "F major"
    assert [f["code"] for f in other["findings"]] == ["off_tempo", "off_key"]
