"""Issue 25: findings that have a place in a take say where (`at`, `until`: seconds from its
start), so that the song page can draw them on the waveform; the takes are real decoded
audio with the defect, made by the simulator's own audio code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from plugin_fixtures.factories import first_party, make_job

from bygheartd.simulator.audio import audio_format_for, music_for, write_take

pytestmark = pytest.mark.anyio

RATE = 48000


def take(folder: Path, name: str, seconds: float, defects: tuple[str, ...]) -> Path:
    audio = audio_format_for("wav")
    music = music_for(name, bpm=120, key="A minor", defects=defects)
    return write_take(folder, name + audio.suffix, audio, seconds, RATE, music)


async def findings_of(path: Path, duration: float) -> list[dict[str, Any]]:
    job = make_job(request={**make_job().request, "duration": duration})
    outcome = await first_party(["quality"], quality={}).on_complete(job, [path])
    assert outcome.failures == []
    entry = outcome.sidecar["quality"][path.name]
    return list(entry["findings"])


async def test_a_dropout_says_where_it_starts_and_ends(tmp_path: Path) -> None:
    [finding] = await findings_of(take(tmp_path, "gap", 10.0, ("dropout",)), 10)
    assert finding["code"] == "silent"
    assert finding["at"] == pytest.approx(3.0, abs=0.1)
    assert finding["until"] == pytest.approx(7.0, abs=0.1)


async def test_a_cut_off_end_is_placed_at_the_end_of_the_sound(tmp_path: Path) -> None:
    """Behind trailing digital silence too: the place is where the sound stops."""
    cut = take(tmp_path, "cut", 3.0, ("cut_off",))
    data, rate = sf.read(str(cut), always_2d=True)
    padded = tmp_path / "padded.wav"
    sf.write(padded, np.concatenate([data, np.zeros((rate, data.shape[1]))]), rate)
    [finding] = await findings_of(padded, 4)
    assert finding["code"] == "cut_off"
    assert finding["until"] == pytest.approx(3.0, abs=0.02)
    assert finding["at"] == pytest.approx(3.0 - 0.05, abs=0.02)


async def test_clipping_is_placed_at_its_first_run_and_cut_short_at_the_end(
    tmp_path: Path,
) -> None:
    quiet = take(tmp_path, "music", 4.0, ())
    data, rate = sf.read(str(quiet), always_2d=True)
    data = data * 0.5
    data[int(2.5 * rate) : int(2.5 * rate) + 50] = 1.0  # a burst driven to full scale
    loud = tmp_path / "burst.wav"
    sf.write(loud, data, rate, subtype="PCM_16")
    found = {f["code"]: f for f in await findings_of(loud, 20)}
    assert found["clipped"]["at"] == pytest.approx(2.5, abs=0.01)
    assert found["cut_short"]["at"] == pytest.approx(4.0, abs=0.01)  # where the take ends
    assert "until" not in found["clipped"]


async def test_a_take_that_is_mostly_silence_has_no_one_place(tmp_path: Path) -> None:
    [finding] = await findings_of(take(tmp_path, "silent", 3.0, ("silent",)), 3)
    assert finding["code"] == "silent" and "at" not in finding
