"""Simulated takes are real audio files, served by /v1/audio like the real server: content
types by extension, Range, ETag, 403/404, and all three `file` forms; and, on demand
(knobs and `[sim:...]` prompt markers), defective takes and takes at a given tempo and key."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any
from urllib.parse import quote, unquote

import httpx
import numpy as np
import pytest
import soundfile as sf
from test_simulator_support import first_file, simulator, submit, wait_final

from bygheartd.api.download import sniff_audio_ext
from bygheartd.simulator import SimulatorSettings, run_in_thread, settings_from_cli
from bygheartd.simulator.audio import take_music
from bygheartd.simulator.defects import AudioPlan, Markers, parse_markers


def _download(client: httpx.Client, file: str) -> httpx.Response:
    reply = client.get(file)
    assert reply.status_code == 200, reply.text
    return reply


@pytest.mark.parametrize(
    ("requested", "suffix", "content_type", "subtype"),
    [
        ("mp3", ".mp3", "audio/mpeg", "MPEG_LAYER_III"),
        ("wav", ".wav", "audio/wav", "PCM_16"),
        ("wav32", ".wav", "audio/wav", "FLOAT"),
        ("flac", ".flac", "audio/flac", "PCM_16"),
        ("ogg", ".flac", "audio/flac", "PCM_16"),
        ("opus", ".opus", "audio/mpeg", "OPUS"),
    ],
)
def test_requested_format_gives_a_decodable_file_with_the_servers_content_type(
    requested: str, suffix: str, content_type: str, subtype: str
) -> None:
    with simulator() as (_, client):
        file = first_file(client, audio_format=requested)
        reply = _download(client, file)
    assert unquote(file).endswith(suffix)
    assert reply.headers["content-type"] == content_type
    info = sf.info(io.BytesIO(reply.content))
    assert info.subtype == subtype and info.channels == 2


def test_aac_is_served_as_audio_mpeg_under_its_own_suffix() -> None:
    with simulator() as (_, client):
        file = first_file(client, audio_format="aac")
        reply = _download(client, file)
    assert unquote(file).endswith(".aac")
    assert reply.headers["content-type"] == "audio/mpeg"
    assert sf.info(io.BytesIO(reply.content)).format == "MP3"


def test_audio_length_follows_the_requested_duration_times_the_scale() -> None:
    with simulator(audio_scale=0.02) as (_, client):
        file = first_file(client, audio_format="wav", audio_duration=60)
        data, rate = sf.read(io.BytesIO(_download(client, file).content))
    assert rate == 48000
    assert data.shape == (int(60 * 0.02 * 48000), 2)


def test_auto_duration_means_thirty_seconds_before_scaling() -> None:
    with simulator(audio_scale=0.05) as (_, client):
        file = first_file(client, audio_format="flac")
        info = sf.info(io.BytesIO(_download(client, file).content))
    assert info.duration == pytest.approx(1.5, abs=0.01)


def test_mp3_length_is_close_to_the_request() -> None:
    with simulator(audio_scale=0.02) as (_, client):
        file = first_file(client, audio_format="mp3", audio_duration=50)
        data, rate = sf.read(io.BytesIO(_download(client, file).content))
    assert len(data) / rate == pytest.approx(1.0, abs=0.1)


def test_download_headers_match_the_real_server() -> None:
    with simulator() as (_, client):
        reply = _download(client, first_file(client))
    headers = reply.headers
    assert headers["accept-ranges"] == "bytes"
    assert int(headers["content-length"]) == len(reply.content)
    assert headers["etag"].startswith('"') and len(headers["etag"]) == 34
    assert headers["last-modified"].endswith(" GMT")
    assert reply.content[:2] == b"\xff\xfb"  # an MPEG audio frame, as the real server writes


def test_range_request_gets_206_with_content_range() -> None:
    with simulator() as (_, client):
        file = first_file(client)
        full = _download(client, file).content
        head = client.get(file, headers={"Range": "bytes=0-99"})
        tail = client.get(file, headers={"Range": "bytes=100-"})
    assert head.status_code == 206 and head.content == full[:100]
    assert head.headers["content-range"] == f"bytes 0-99/{len(full)}"
    assert tail.status_code == 206 and tail.content == full[100:]


def test_range_past_the_end_is_416() -> None:
    with simulator() as (_, client):
        file = first_file(client)
        reply = client.get(file, headers={"Range": "bytes=999999999-"})
    assert reply.status_code == 416


def test_path_outside_the_audio_dir_is_403() -> None:
    with simulator() as (_, client):
        reply = client.get("/v1/audio", params={"path": "/etc/passwd"})
        sneaky = client.get(
            "/v1/audio", params={"path": f"{client.get('/_sim/stats').json()['audio_dir']}/../x"}
        )
    assert reply.status_code == 403
    assert reply.json() == {"detail": "Access denied: path outside allowed directory"}
    assert sneaky.status_code == 403


def test_missing_file_inside_the_audio_dir_is_404() -> None:
    with simulator() as (_, client):
        audio_dir = client.get("/_sim/stats").json()["audio_dir"]
        reply = client.get("/v1/audio", params={"path": f"{audio_dir}/does-not-exist.mp3"})
    assert reply.status_code == 404 and reply.json() == {"detail": "Audio file not found"}


def test_download_needs_the_header_key() -> None:
    with simulator() as (_, client):
        file = first_file(client)
        anonymous = httpx.get(f"{client.base_url}{file}")
        raw_key = httpx.get(f"{client.base_url}{file}", headers={"Authorization": "bgh_raw_key"})
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "Missing Authorization header"}
    assert raw_key.status_code == 200


def test_relative_file_form_is_appended_to_the_base_url() -> None:
    with simulator(file_form="relative", path_prefix="/bygheartsong/api") as (handle, client):
        file = first_file(client)
        assert handle.base_url.endswith("/bygheartsong/api")
        assert file.startswith("/v1/audio?path=")
        assert httpx.get(handle.base_url + file, headers=client.headers).status_code == 200


def test_absolute_url_file_form_points_at_the_server() -> None:
    with simulator(file_form="absolute_url", path_prefix="/api") as (handle, client):
        file = first_file(client)
        assert file.startswith(handle.base_url + "/v1/audio?path=")
        assert httpx.get(file, headers=client.headers).status_code == 200


def test_raw_path_file_form_is_a_server_path() -> None:
    with simulator(file_form="raw_path") as (_, client):
        file = first_file(client)
        assert file.startswith("/") and "?" not in file
        assert _download(client, "/v1/audio?path=" + quote(file, safe="")).content


def test_mixed_file_form_uses_every_form() -> None:
    with simulator(file_form="mixed") as (_, client):
        entry = wait_final(client, submit(client, batch_size=3))
    files = [element["file"] for element in entry["result"]]
    assert sum(f.startswith("/v1/audio?path=") for f in files) == 1
    assert sum(f.startswith("http://") for f in files) == 1
    assert sum(f.startswith("/") and "?" not in f for f in files) == 1


def test_files_are_removed_when_the_simulator_stops() -> None:
    with simulator() as (handle, client):
        first_file(client)
        audio_dir = handle.sim.audio_dir
        assert any(audio_dir.iterdir())
    assert not audio_dir.exists()


# -- takes with a tempo, a key and defects on demand ----------------------------------------


def _files(client: httpx.Client, **body: Any) -> list[tuple[Any, int]]:
    """Every take of one task, decoded: (samples, rate) each."""
    entry = wait_final(client, submit(client, audio_format="wav", **body))
    assert entry["status"] == 1, entry
    out = []
    for element in entry["result"]:
        reply = _download(client, element["file"])
        data, rate = sf.read(io.BytesIO(reply.content), always_2d=True)
        out.append((data, rate))
    return out


def test_a_good_take_fades_in_and_out_and_never_clips() -> None:
    with simulator(audio_scale=0.1) as (_, client):
        [(data, rate)] = _files(client, audio_duration=30)
    assert len(data) == 3 * rate
    loudest = np.abs(data).max(axis=1)
    assert 0.3 < loudest.max() <= 0.501  # at most -6 dBFS, far from clipping
    assert loudest[: rate // 200].max() < 0.3  # a soft start
    assert loudest[-rate // 50 :].max() < 1e-3  # faded out by the end
    assert np.sqrt(np.mean(data[: rate // 2] ** 2)) > 0.05  # sound all the way through


@pytest.mark.parametrize(
    ("marker", "check"),
    [
        ("[sim:cut_short]", "short"),
        ("[sim:silent]", "silent"),
        ("[sim:cut_off]", "cut_off"),
        ("[sim:clipped]", "clipped"),
        ("[sim:dropout]", "dropout"),
    ],
)
def test_prompt_markers_make_defective_takes(marker: str, check: str) -> None:
    with simulator(audio_scale=0.2) as (_, client):
        [(data, rate)] = _files(client, prompt=f"lofi piano {marker}", audio_duration=30)
    loudest = np.abs(data).max(axis=1)
    seconds = len(data) / rate
    if check == "short":
        assert seconds == pytest.approx(6 * 0.4, abs=0.01)
    else:
        assert seconds == pytest.approx(6.0, abs=0.01)
    if check == "silent":
        assert loudest.max() == 0
    if check == "cut_off":  # still loud in its last 50 ms
        assert np.sqrt(np.mean(data[-rate // 20 :] ** 2)) > 0.05
    if check == "clipped":
        assert (loudest >= 0.999).sum() > rate // 10
    if check == "dropout":  # 40 % of 6 s is less than 4 s: 60 % of the middle is silent
        middle = loudest[round(1.3 * rate) : round(4.7 * rate)]
        assert middle.max() == 0 and loudest[:rate].max() > 0.1


def test_undecodable_takes_look_like_audio_but_decode_to_nothing() -> None:
    with simulator() as (_, client):
        for fmt in ("mp3", "wav", "flac", "opus", "aac"):
            entry = wait_final(
                client, submit(client, prompt="x [sim:undecodable]", audio_format=fmt)
            )
            content = _download(client, entry["result"][0]["file"]).content
            assert sniff_audio_ext(content[:64]) is not None, fmt  # a client keeps it
            with pytest.raises(sf.LibsndfileError):
                sf.read(io.BytesIO(content))


def test_markers_pick_a_take_and_a_number_of_tasks() -> None:
    with simulator() as (_, client):
        prompt = "rainy synthwave [sim:silent, take=2, times=1]"
        first = _files(client, prompt=prompt, batch_size=3)
        again = _files(client, prompt=prompt, batch_size=3)
        other = _files(client, prompt=prompt + " (another song)", batch_size=1)
    assert [np.abs(d).max() == 0 for d, _ in first] == [False, True, False]
    assert [np.abs(d).max() == 0 for d, _ in again] == [False, False, False]
    assert [np.abs(d).max() == 0 for d, _ in other] == [False]  # counted per prompt


def test_the_defect_knob_and_its_burst_at_run_time() -> None:
    with simulator() as (handle, client):
        reply = client.post("/_sim/faults", json={"defect": "silent", "defect_burst": 2})
        assert reply.status_code == 200, reply.text
        made = [_files(client)[0][0] for _ in range(3)]
        assert handle.sim.settings.defect == "" and handle.sim.settings.defect_burst == 0
        handle.set_faults(defect="silent")  # no burst: every task while set
        assert all(np.abs(_files(client)[0][0]).max() == 0 for _ in range(2))
        bad = client.post("/_sim/faults", json={"defect": "crackle"})
    assert [np.abs(d).max() == 0 for d in made] == [True, True, False]
    assert bad.status_code == 400 and "crackle" in bad.text


def test_marker_and_knob_parsing() -> None:
    marks = parse_markers("pop [SIM: cut_off , bpm=90] and [sim:key=F# minor, take=2, x=1]")
    assert marks.defects == ("cut_off",) and marks.bpm == 90 and marks.key == "F# minor"
    assert marks.take == 2 and marks.times is None
    assert parse_markers("no markers here") == Markers()
    assert parse_markers("[sim:bpm=-3, key=H, loud]") == Markers(text="bpm=-3, key=H, loud")
    with pytest.raises(ValueError, match="unknown defect 'loud'"):
        SimulatorSettings(defect="clipped, loud")
    with pytest.raises(ValueError, match="audio_key"):
        SimulatorSettings(audio_key="H minor")
    with pytest.raises(ValueError, match="audio_bpm"):
        SimulatorSettings(audio_bpm=0)


def test_tempo_and_key_come_from_the_plan_then_the_request_then_the_name() -> None:
    plan = AudioPlan(defects=("cut_off",), bpm=90, key="Eb minor", take=2, take_defects=("silent",))
    music = take_music(plan, 1, "a.mp3", 120, "C major")
    assert (music.bpm, music.key, music.defects) == (90, "Eb minor", ("cut_off",))
    assert take_music(plan, 2, "a.mp3", 120, "C major").defects == ("cut_off", "silent")
    asked = take_music(None, 1, "a.mp3", 120, "Am")
    assert (asked.bpm, asked.key) == (120, "A minor")
    named = take_music(None, 1, "a.mp3", None, None)
    assert named == take_music(None, 1, "a.mp3", None, None)  # the same name, the same music
    assert 80 <= named.bpm <= 140
    with simulator(audio_bpm=100, audio_key="G major") as (handle, _):
        assert (handle.sim.settings.audio_bpm, handle.sim.settings.audio_key) == (100, "G major")


def test_the_command_line_makes_takes_of_the_requested_length() -> None:
    assert settings_from_cli().audio_scale == 1.0
    assert SimulatorSettings().audio_scale == 0.02  # Python (tests): short takes
    with run_in_thread(settings_from_cli(latency=0.05, seed=1)) as handle:
        headers = {"Authorization": "Bearer bgh_test_pro_key"}
        with httpx.Client(base_url=handle.base_url, headers=headers, timeout=10) as client:
            file = first_file(client, audio_format="flac", audio_duration=12)
            info = sf.info(io.BytesIO(_download(client, file).content))
    assert info.duration == pytest.approx(12.0, abs=0.01)


def test_simulator_help_documents_the_defect_knobs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bygheartd", "simulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for flag in ("--defect ", "--defect-burst", "--audio-bpm", "--audio-key", "[sim:cut_short]"):
        assert flag in text, flag
    assert "cut_short, cut_off, silent, dropout, clipped, undecodable" in text
    assert "--audio-scale FLOAT Audio length = requested duration" in text
    assert "[default: 1.0]" in text
