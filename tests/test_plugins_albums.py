"""The `on_album_complete` hook and `loudnorm`'s album mode (issue 26): one gain for the whole
album, so the loudness steps between tracks stay; a track of an album is left alone when it
is done."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from plugin_fixtures.factories import make_job, plugin_folder, write_audio

from bygheartd.hooks.host import PluginHost, PluginSettings
from bygheartd_plugins.loudnorm import ALBUM_PENDING, integrated_loudness

pytestmark = pytest.mark.anyio

ALBUM = {"id": "0album0000001", "title": "Night Drive", "artist": "The Night Shift", "tracks": 3}


def lufs(path: Path) -> float:
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return integrated_loudness(data, rate)


def loudnorm(**table: Any) -> PluginHost:
    return PluginHost.load(
        PluginSettings(enabled=["loudnorm"], tables={"loudnorm": table}, load_env=None)
    )


async def test_hook_on_album_complete_loudnorm_gives_the_album_one_gain(tmp_path: Path) -> None:
    quiet = write_audio(tmp_path / "01-quiet.wav", amplitude=0.01)
    middle = write_audio(tmp_path / "02-middle.flac", amplitude=0.03)
    loud = write_audio(tmp_path / "03-loud.mp3", amplitude=0.05)
    before = [lufs(p) for p in (quiet, middle, loud)]
    outcome = await loudnorm(target_lufs=-16.0, ceiling_dbtp=-0.5).on_album_complete(
        ALBUM, [], [quiet, middle, loud]
    )
    assert outcome.failures == []
    entry = outcome.sidecar["loudnorm"]
    after = [lufs(p) for p in (quiet, middle, loud)]
    # Every track moved by the same gain: the steps between them are kept ...
    steps_before = [b - a for a, b in itertools.pairwise(before)]
    steps_after = [b - a for a, b in itertools.pairwise(after)]
    assert steps_after == pytest.approx(steps_before, abs=0.15)
    assert [a - b for a, b in zip(after, before, strict=True)] == pytest.approx(
        [entry["gain_db"]] * 3, abs=0.15
    )
    # ... and the quiet track is not pushed to the target alone.
    assert after[0] < -16.0 - 5
    assert entry["album_input_lufs"] < -16.0 and not entry["limited_by_ceiling"]
    assert set(entry["tracks"]) == {quiet.name, middle.name, loud.name}


async def test_hook_on_album_complete_gain_is_lowered_for_the_loudest_peak(tmp_path: Path) -> None:
    soft = write_audio(tmp_path / "01.wav", amplitude=0.01)
    peaky = write_audio(tmp_path / "02.wav", amplitude=0.3, signal="clicks")
    outcome = await loudnorm(target_lufs=-8.0, ceiling_dbtp=-1.0).on_album_complete(
        ALBUM, [], [soft, peaky]
    )
    entry = outcome.sidecar["loudnorm"]
    assert entry["limited_by_ceiling"] is True
    data, _ = sf.read(str(peaky), dtype="float64", always_2d=True)
    assert abs(data).max() < 1.0


async def test_hook_on_album_complete_failures_are_recorded_not_raised(tmp_path: Path) -> None:
    folder = plugin_folder(
        tmp_path / "plugins",
        broken="from bygheartd import hookimpl\n\n@hookimpl\n"
        "def on_album_complete(album, files):\n    raise RuntimeError('no ' + album['title'])\n",
    )
    host = PluginHost.load(PluginSettings(enabled=[], paths=[folder], load_env=None))
    outcome = await host.on_album_complete(ALBUM, [], [])
    assert [f.error for f in outcome.failures] == ["RuntimeError: no Night Drive"]


async def test_loudnorm_leaves_a_track_of_an_album_for_the_album_gain(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "01-track.wav", amplitude=0.01)
    before = song.read_bytes()
    job = replace(make_job(), album="0album0000001", track=1, album_tracks=3)
    outcome = await loudnorm().on_complete(job, [song])
    assert song.read_bytes() == before
    assert outcome.sidecar["loudnorm"][song.name]["album"] == ALBUM_PENDING
