"""First-party `loudnorm`: real audio re-measured after normalisation, tags kept, format kept."""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from plugin_fixtures.factories import first_party, make_job, write_audio

from bygheartd.hooks.host import PluginHost, PluginSettings
from bygheartd_plugins.loudnorm import integrated_loudness, true_peak_dbtp

pytestmark = pytest.mark.anyio


def host_for(enabled: list[str], **table: Any) -> PluginHost:
    host = PluginHost.load(
        PluginSettings(enabled=enabled, tables={"loudnorm": table}, load_env=None)
    )
    assert host.active == enabled
    return host


def measure(path: Path) -> tuple[float, float]:
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return integrated_loudness(data, rate), true_peak_dbtp(data)


@pytest.mark.parametrize("suffix", [".mp3", ".flac", ".wav"])
async def test_quiet_audio_reaches_the_target_within_half_a_unit(
    tmp_path: Path, suffix: str
) -> None:
    song = write_audio(tmp_path / f"song{suffix}", amplitude=0.02)
    info_before = sf.info(str(song))
    outcome = await host_for(["loudnorm"]).on_complete(make_job(), [song])
    assert outcome.failures == []
    entry = outcome.sidecar["loudnorm"][song.name]
    lufs, peak = measure(song)
    assert abs(lufs - -14.0) <= 0.5
    assert peak <= -1.0 + 0.1
    assert entry["input_lufs"] < -25 and entry["target"] == -14.0
    assert abs(entry["output_lufs"] - lufs) < 0.1 and not entry["limited_by_ceiling"]
    info_after = sf.info(str(song))
    assert (info_after.format, info_after.subtype) == (info_before.format, info_before.subtype)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left over


async def test_the_peak_ceiling_wins_over_the_loudness_target(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "clicks.wav", amplitude=0.05, signal="clicks")
    outcome = await host_for(["loudnorm"], target_lufs=-8.0).on_complete(make_job(), [song])
    entry = outcome.sidecar["loudnorm"][song.name]
    lufs, peak = measure(song)
    assert entry["limited_by_ceiling"] is True
    assert peak <= -1.0 + 0.1
    assert lufs < -8.0 - 0.5
    assert entry["true_peak_dbtp"] == pytest.approx(peak, abs=0.05)


async def test_custom_target_and_ceiling(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.flac", amplitude=0.3)
    host = host_for(["loudnorm"], target_lufs=-23.0, ceiling_dbtp=-2.0)
    await host.on_complete(make_job(), [song])
    lufs, peak = measure(song)
    assert abs(lufs - -23.0) <= 0.5 and peak <= -2.0 + 0.1


@pytest.mark.parametrize("order", [["tags", "loudnorm"], ["loudnorm", "tags"]])
async def test_tags_survive_normalisation_in_either_order(tmp_path: Path, order: list[str]) -> None:
    mp3 = write_audio(tmp_path / "song.mp3", amplitude=0.02)
    flac = write_audio(tmp_path / "song.flac", amplitude=0.02)
    outcome = await host_for(order).on_complete(make_job(), [mp3, flac])
    assert outcome.failures == []
    assert str(ID3(mp3)["TIT2"]) == "Midnight God Mode"
    assert ID3(mp3).version == (2, 3, 0)
    assert FLAC(flac)["BYGHEART_SEED"] == ["43"]
    assert abs(measure(mp3)[0] - -14.0) <= 0.5


async def test_audio_shorter_than_the_gating_block_is_skipped_with_a_warning(
    tmp_path: Path,
) -> None:
    song = write_audio(tmp_path / "blip.wav", seconds=0.2)
    before = song.read_bytes()
    outcome = await host_for(["loudnorm"]).on_complete(make_job(), [song])
    assert outcome.failures == []
    assert "shorter than 0.4 s" in outcome.sidecar["loudnorm"][song.name]["warning"]
    assert song.read_bytes() == before


async def test_full_scale_audio_is_measured_without_a_clipping_warning(tmp_path: Path) -> None:
    song = tmp_path / "loud.wav"
    t = np.arange(44100 * 2) / 44100
    sf.write(song, np.sign(np.sin(2 * np.pi * 110 * t)), 44100, subtype="FLOAT")
    outcome = await host_for(["loudnorm"]).on_complete(make_job(), [song])
    assert outcome.failures == []
    assert measure(song)[1] <= -1.0 + 0.1


@pytest.mark.parametrize("suffix", [".mp3", ".flac"])
async def test_loudnorm_keeps_the_files_permissions(tmp_path: Path, suffix: str) -> None:
    song = write_audio(tmp_path / f"song{suffix}", amplitude=0.02)
    song.chmod(0o644)  # readable by the music server that runs as another user
    outcome = await first_party(["loudnorm"]).on_complete(make_job(), [song])
    assert outcome.failures == []
    assert "input_lufs" in outcome.sidecar["loudnorm"][song.name]  # it was rewritten
    assert stat.S_IMODE(song.stat().st_mode) == 0o644


def test_without_the_extra_the_plugin_is_disabled_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyloudnorm", None)  # makes `import pyloudnorm` fail
    monkeypatch.delitem(sys.modules, "bygheartd_plugins.loudnorm")
    host = PluginHost.load(PluginSettings(enabled=["loudnorm"], load_env=None))
    [entry] = [i for i in host.describe() if i.name == "loudnorm"]
    assert not entry.enabled
    assert "pip install 'bygheartd[loudnorm]'" in (entry.error or "")
