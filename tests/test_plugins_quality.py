"""First-party `quality`: figures of real takes checked against independently computed
values (pyloudnorm, the samples on disk), warnings for short, silent and clipped takes, and
the figures of a simulated song in its sidecar, which still matches the tagged files."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from _daemon import cli
from conftest import MakeConfig
from plugin_fixtures.factories import first_party, make_job, plugin_folder, write_audio

from bygheartd.config import parse_config
from bygheartd.hooks.host import CompleteOutcome, PluginHost, PluginSettings
from bygheartd.jobs import JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator, SimulatorSettings

pytestmark = pytest.mark.anyio

RATE = 44100


def write(path: Path, data: np.ndarray[Any, Any], rate: int = RATE) -> Path:
    formats = {
        ".wav": ("WAV", "PCM_16"),
        ".flac": ("FLAC", "PCM_16"),
        ".mp3": ("MP3", "MPEG_LAYER_III"),
        ".ogg": ("OGG", "VORBIS"),
        ".opus": ("OGG", "OPUS"),
        ".aac": ("MP3", "MPEG_LAYER_III"),  # the simulator's .aac is MP3 data
    }
    fmt, subtype = formats[path.suffix]
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    return path


def tone(seconds: float, amplitude: float = 0.3, rate: int = RATE) -> np.ndarray[Any, Any]:
    """Two sines that end as music does: faded out (over 0.3 s, by 80 dB), not cut off."""
    t = np.arange(round(seconds * rate)) / rate
    left = amplitude * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    right = amplitude * 0.7 * np.sin(2 * np.pi * 330 * t)
    fade = 10 ** (-4 * np.clip((t - (seconds - 0.3)) / 0.3, 0, 1))
    return np.stack([left, right], axis=1) * fade[:, None]


def reference_lufs(path: Path) -> float:
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns about full-scale samples
        return float(pyloudnorm.Meter(rate).integrated_loudness(data))


async def measure(
    files: list[Path], *, duration: float | None = None, **table: Any
) -> CompleteOutcome:
    request = {**make_job().request, "duration": duration}
    outcome = await first_party(["quality"], quality=table).on_complete(
        make_job(request=request), files
    )
    assert outcome.failures == []
    return outcome


async def test_a_clean_take_is_measured_like_pyloudnorm_and_the_samples_say(
    tmp_path: Path,
) -> None:
    take = write(tmp_path / "song.wav", tone(4.0))
    outcome = await measure([take], duration=4)
    entry = outcome.sidecar["quality"]["song.wav"]
    data, rate = sf.read(str(take), dtype="float64", always_2d=True)
    assert entry["take"] == 1
    assert entry["duration"] == pytest.approx(len(data) / rate, abs=1e-3) == pytest.approx(4.0)
    assert entry["requested_duration"] == 4.0
    assert (entry["sample_rate"], entry["channels"]) == (RATE, 2)
    assert entry["peak_dbfs"] == pytest.approx(20 * math.log10(np.abs(data).max()), abs=0.01)
    assert entry["lufs"] == pytest.approx(reference_lufs(take), abs=0.01)
    assert entry["silence_ratio"] < 0.05  # the end of the fade
    assert entry["clipped"] == 0
    peaks = entry["peaks"]
    assert len(peaks) == 200 and all(0 <= p <= 1 for p in peaks)
    assert max(peaks) == pytest.approx(np.abs(data).max(), abs=1e-3)
    # The envelope follows the left channel's slow swell: loud stretches and quiet ones.
    assert min(peaks) < 0.75 * max(peaks)
    assert outcome.warnings == [] and entry["warnings"] == []
    assert entry["verdict"] == "pass" and entry["findings"] == []
    assert entry["longest_silence"] < 0.5 and entry["end_level_db"] < -40


@pytest.mark.parametrize("rate", [22050, 48000])
@pytest.mark.parametrize("channels", [1, 2])
async def test_loudness_agrees_with_pyloudnorm_at_other_rates_and_in_mono(
    tmp_path: Path, rate: int, channels: int
) -> None:
    rng = np.random.default_rng(rate + channels)
    data = tone(3.0, rate=rate)[:, :channels] + 0.02 * rng.standard_normal((3 * rate, channels))
    data[: rate // 2] *= 0.001  # a quiet start, which the gates leave out
    take = write(tmp_path / "song.flac", data, rate)
    outcome = await measure([take])
    entry = outcome.sidecar["quality"]["song.flac"]
    assert entry["lufs"] == pytest.approx(reference_lufs(take), abs=0.01)
    assert entry["requested_duration"] is None
    assert entry["channels"] == channels


@pytest.mark.parametrize("suffix", [".mp3", ".flac", ".ogg", ".opus", ".aac"])
async def test_every_format_the_servers_write_is_decoded(tmp_path: Path, suffix: str) -> None:
    rate = 48000 if suffix == ".opus" else RATE  # Opus has no 44.1 kHz
    take = write(tmp_path / f"song{suffix}", tone(3.0, rate=rate), rate)
    outcome = await measure([take], duration=3)
    entry = outcome.sidecar["quality"][take.name]
    assert entry["duration"] == pytest.approx(3.0, abs=0.06)
    assert entry["lufs"] == pytest.approx(reference_lufs(take), abs=0.01)
    assert outcome.warnings == []


async def test_a_silent_take_is_reported_and_has_no_loudness(tmp_path: Path) -> None:
    take = write(tmp_path / "song.wav", np.zeros((3 * RATE, 2)))
    outcome = await measure([take], duration=3)
    entry = outcome.sidecar["quality"]["song.wav"]
    assert entry["silence_ratio"] == 1.0
    assert entry["lufs"] is None and entry["peak_dbfs"] is None
    assert set(entry["peaks"]) == {0.0}
    [warning] = outcome.warnings
    assert warning.startswith("quality: song.wav is 100% silence") and "retry" in warning


async def test_a_take_mostly_silent_is_reported_with_its_share(tmp_path: Path) -> None:
    data = np.concatenate([tone(1.0), np.zeros((3 * RATE, 2))])
    take = write(tmp_path / "song.flac", data)
    outcome = await measure([take], duration=4)
    entry = outcome.sidecar["quality"]["song.flac"]
    assert entry["silence_ratio"] == pytest.approx(0.78, abs=0.02)  # 3 s and the fade's end
    assert entry["lufs"] == pytest.approx(reference_lufs(take), abs=0.01)
    [warning] = outcome.warnings
    assert f"{entry['silence_ratio']:.0%} silence" in warning
    quieter = await measure([take], duration=4, max_silence_ratio=0.8, max_dropout_seconds=0)
    assert quieter.warnings == []


async def test_a_clipped_take_is_counted_and_reported(tmp_path: Path) -> None:
    t = np.arange(2 * RATE) / RATE
    # A sine driven to twice full scale: |2 sin| >= 1 for two thirds of the time (until
    # its fade-out, over the last 0.3 s, takes it below full scale).
    fade = 10 ** (-4 * np.clip((t - 1.7) / 0.3, 0, 1))
    mono = np.clip(2.0 * np.sin(2 * np.pi * 100 * t) * fade, -1.0, 1.0)
    take = write(tmp_path / "song.wav", np.stack([mono, mono], axis=1))
    outcome = await measure([take], duration=2)
    entry = outcome.sidecar["quality"]["song.wav"]
    full = int((np.abs(mono) >= 0.999).sum()) * 2
    assert full > 0.5 * mono.size * 2
    assert entry["clipped"] == pytest.approx(full, rel=0.01)
    assert entry["peak_dbfs"] == pytest.approx(0.0, abs=0.01)
    [warning] = outcome.warnings
    assert warning.startswith(f"quality: song.wav is clipped ({entry['clipped']} samples")
    assert entry["warnings"] == [warning]  # each take's own, for the page to show beside it
    assert entry["verdict"] == "fail"
    [finding] = entry["findings"]
    assert (finding["code"], finding["message"]) == ("clipped", warning.removeprefix("quality: "))
    assert isinstance(finding["at"], float)  # where the first clipped run starts


async def test_a_single_full_scale_sample_is_not_clipping(tmp_path: Path) -> None:
    data = tone(2.0)
    data[RATE, 0] = 1.0  # a take normalised to 0 dBFS touches full scale once
    take = write(tmp_path / "song.wav", data)
    outcome = await measure([take], duration=2)
    assert outcome.sidecar["quality"]["song.wav"]["clipped"] == 0
    assert outcome.warnings == []


async def test_a_take_much_shorter_than_requested_is_reported(tmp_path: Path) -> None:
    take1 = write(tmp_path / "song.mp3", tone(10.0))
    take2 = write(tmp_path / "song.take2.mp3", tone(2.0))
    outcome = await measure([take1, take2], duration=10)
    figures = outcome.sidecar["quality"]
    assert [figures[t.name]["take"] for t in (take1, take2)] == [1, 2]
    [warning] = outcome.warnings
    assert warning.startswith("quality: song.take2.mp3 is 2.0 s long, 20% of the requested 10 s")
    assert "retry" in warning
    off = await measure([take1, take2], duration=10, min_duration_ratio=0)
    assert off.warnings == []


async def test_files_that_are_not_audio_are_left_alone_and_undecodable_takes_warned(
    tmp_path: Path,
) -> None:
    notes = tmp_path / "song.notes.txt"
    notes.write_text("not audio")
    m4a = tmp_path / "song.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    outcome = await measure([notes, m4a], duration=10)
    assert set(outcome.sidecar["quality"]) == {"song.m4a"}
    entry = outcome.sidecar["quality"]["song.m4a"]
    assert entry["error"].startswith("cannot decode")
    [warning] = outcome.warnings
    assert warning.startswith("quality: cannot decode song.m4a: ")
    assert entry["verdict"] == "fail" and [f["code"] for f in entry["findings"]] == ["undecodable"]


async def test_a_real_aac_take_is_decoded_with_pyav(tmp_path: Path) -> None:
    av = pytest.importorskip("av")  # the `aac` extra (in `dev` too)
    rate = 44100
    data = tone(3.0).astype(np.float32)
    take = tmp_path / "song.m4a"
    with av.open(str(take), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo")
        for start in range(0, len(data), 1024):
            chunk = np.ascontiguousarray(data[start : start + 1024].T)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    outcome = await measure([take], duration=3)
    entry = outcome.sidecar["quality"]["song.m4a"]
    assert entry["duration"] == pytest.approx(3.0, abs=0.06)  # plus the encoder's priming
    assert (entry["sample_rate"], entry["channels"]) == (rate, 2)
    original = write(tmp_path / "original.wav", tone(3.0))
    assert entry["lufs"] == pytest.approx(reference_lufs(original), abs=0.2)  # lossy
    assert outcome.warnings == []


async def test_unknown_or_impossible_options_fail_the_hook_naming_the_known_ones(
    tmp_path: Path,
) -> None:
    take = write_audio(tmp_path / "song.wav")
    host = first_party(["quality"], quality={"min_ratio": 0.5})
    outcome = await host.on_complete(make_job(), [take])
    [failure] = outcome.failures
    assert "min_ratio" in failure.error and "min_duration_ratio" in failure.error
    host = first_party(["quality"], quality={"max_silence_ratio": 2})
    [failure] = (await host.on_complete(make_job(), [take])).failures
    assert "between 0 and 1" in failure.error
    for table, says in (
        ({"strict_key": "yes"}, "true or false"),
        ({"tempo_tolerance": 0.5}, "below 0.5"),
        ({"cut_off_db": 3}, "below 0"),
        ({"max_dropout_seconds": -1}, "0 or more"),
        ({"peaks": 2.5}, "whole number"),
        ({"min_key_confidence": "high"}, "a number"),
    ):
        host = first_party(["quality"], quality=table)
        [failure] = (await host.on_complete(make_job(), [take])).failures
        assert says in failure.error, (table, failure.error)


async def test_plugin_warnings_must_be_a_list_of_strings(tmp_path: Path) -> None:
    folder = plugin_folder(
        tmp_path / "plugins",
        good="""
            from bygheartd import hookimpl

            @hookimpl
            def on_complete(files):
                return {"warnings": ["good: something to look at"]}
        """,
        bad="""
            from bygheartd import hookimpl

            @hookimpl
            def on_complete(files):
                return {"warnings": "not a list"}
        """,
    )
    host = PluginHost.load(PluginSettings(paths=[folder], load_env=None))
    outcome = await host.on_complete(make_job(), [write_audio(tmp_path / "song.wav")])
    assert outcome.warnings == ["good: something to look at"]
    [failure] = outcome.failures
    assert failure.plugin == "bad" and "list of strings" in failure.error


def test_quality_is_on_by_default_and_runs_before_tags() -> None:
    config = parse_config({})
    assert config.plugins.enabled == ["quality", "tags"]
    host = PluginHost.load(PluginSettings(enabled=config.plugins.enabled, load_env=None))
    assert host.active == ["quality", "tags"]


SONG = """---
title: Quality Song
style: bright synth pop
duration: 60
takes: 2
---
[Verse]
measured and tagged
"""


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.1, audio_scale=0.05, seed=3)  # 3 s takes of 60 s


async def test_a_simulated_song_gets_figures_and_warnings_and_a_sidecar_true_to_its_files(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    config = make_config(simulator, plugins={"enabled": ["quality", "tags"]})
    song = tmp_path / "quality-song.txt"
    song.write_text(SONG)
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song)
        job = await runtime.service.wait(job.id, timeout=60)
    assert job.status is JobStatus.DONE, job.reason
    sidecar = json.loads((config.folders.output / "quality-song.json").read_text())
    figures = sidecar["quality"]  # pinned at the top level, beside `files`
    assert "quality" not in sidecar["plugins"]
    assert len(sidecar["files"]) == 2
    for record in sidecar["files"]:
        path = config.folders.output / record["path"]
        content = path.read_bytes()  # tagged after quality measured it: described again
        assert record["size"] == len(content)
        assert record["sha256"] == hashlib.sha256(content).hexdigest()
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
        entry = figures[path.name]
        assert entry["duration"] == pytest.approx(len(data) / rate, abs=1e-3)
        assert entry["duration"] == pytest.approx(3.0, abs=0.1)
        assert entry["requested_duration"] == 60
        assert entry["lufs"] == pytest.approx(reference_lufs(path), abs=0.01)
        assert entry["silence_ratio"] < 0.1 and entry["clipped"] == 0
        # Only short: the simulator's takes fade out, never drop out and never clip.
        assert [f["code"] for f in entry["findings"]] == ["cut_short"]
        assert entry["verdict"] == "fail"
    assert "tags" in sidecar["plugins"]
    short = [w for w in sidecar["warnings"] if "of the requested 60 s" in w]
    # Every take failed and retakes are off in tests: the job says so (tests/test_retakes.py).
    gate = "no take passed the quality gate (retakes are off ([retakes] max = 0))"
    assert len(short) == 2 and list(job.warnings) == sidecar["warnings"] == [*short, gate]
    assert {e["event"] for e in sidecar["history"]} >= {"plugin warnings"}
    # `show` and MCP's records carry the same warnings.
    shown = cli(config.source_path, "show", job.id)
    assert shown.returncode == 0, shown.stderr
    assert all(w.split(":", 1)[1].strip()[:40] in " ".join(shown.stdout.split()) for w in short)
    from bygheartd.mcp.records import JobRecord

    assert JobRecord.of(job).warnings == sidecar["warnings"]  # what get_song answers


def test_every_setting_is_documented_with_its_default() -> None:
    from bygheartd_plugins import quality

    docs = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    section = docs[docs.index("### `quality`") : docs.index("### `tags`")]
    for key, default in quality.DEFAULTS.items():
        shown = str(default).lower() if isinstance(default, bool) else repr(default)
        assert f"| `{key}` | `{shown}` |" in section, key
    for code in quality.CODES:
        assert f"| `{code}` |" in section, code
